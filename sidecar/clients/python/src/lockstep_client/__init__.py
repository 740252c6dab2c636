"""Client for the Lockstep sidecar's socket API.

>>> from lockstep_client import Client, KeySet
>>> client = Client()                       # $LOCKSTEP_SOCKET, else /run/lockstep/sidecar.sock
>>> token = client.jwt_sign("jwt", {"sub": "alice"}, ttl=300)["token"]
>>> client.jwt_verify("jwt", token)["claims"]["sub"]
'alice'
"""

from .client import DEFAULT_SOCKET, Client
from .errors import (
    CODES,
    Forbidden,
    InternalError,
    InvalidRequest,
    LockstepError,
    NotFound,
    SidecarUnreachable,
    Unavailable,
    VerificationFailed,
    error_from,
)
from .keyset import KeySet
from .wsgi import JWTMiddleware

__version__ = "0.1.0"

__all__ = [
    "CODES",
    "DEFAULT_SOCKET",
    "Client",
    "Forbidden",
    "InternalError",
    "InvalidRequest",
    "JWTMiddleware",
    "KeySet",
    "LockstepError",
    "NotFound",
    "SidecarUnreachable",
    "Unavailable",
    "VerificationFailed",
    "__version__",
    "error_from",
]
