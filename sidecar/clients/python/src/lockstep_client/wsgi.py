"""WSGI middleware that lets only requests with a valid bearer JWT through.

The sidecar verifies each token (signature, ``exp``/``nbf``, the keyring's
verification set, ``issuer`` when given, and the audience: a token that
names audiences needs ``audience`` among them, or ``ignore_audience``);
the claims land
in ``environ["lockstep.claims"]``. A missing or invalid token gets a 401
with ``WWW-Authenticate``; a sidecar that cannot answer, a 503.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable, Optional

from .client import Client
from .errors import LockstepError, SidecarUnreachable, Unavailable, VerificationFailed

# The longest token the sidecar verifies; a longer one is refused here, not
# sent (past the sidecar's body limit it would be an error of the request).
MAX_TOKEN_BYTES = 16 * 1024


class JWTMiddleware:
    """Wraps a WSGI ``app``; see the module's description."""

    def __init__(
        self,
        app: Callable[..., Iterable[bytes]],
        keyring: str,
        client: Optional[Client] = None,
        audience: Optional[str] = None,
        issuer: Optional[str] = None,
        environ_key: str = "lockstep.claims",
        ignore_audience: bool = False,
    ):
        self.app = app
        self.keyring = keyring
        self.client = client or Client()
        self.audience = audience
        self.issuer = issuer
        self.ignore_audience = ignore_audience
        self.environ_key = environ_key

    def __call__(self, environ: dict, start_response: Callable[..., Any]) -> Iterable[bytes]:
        header = environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return self._deny(start_response, 401, "token_missing", "a bearer token is required")
        if len(token.strip()) > MAX_TOKEN_BYTES:
            return self._deny(start_response, 401, "token_malformed", "the token is longer than 16 KiB")
        try:
            answer = self.client.jwt_verify(
                self.keyring,
                token.strip(),
                audience=self.audience,
                issuer=self.issuer,
                ignore_audience=self.ignore_audience,
            )
        except VerificationFailed as error:
            return self._deny(start_response, 401, error.code, error.message)
        except (Unavailable, SidecarUnreachable) as error:
            return self._deny(start_response, 503, error.code, "token verification is unavailable")
        except LockstepError as error:
            return self._deny(start_response, 500, error.code, "token verification failed")
        environ[self.environ_key] = answer["claims"]
        return self.app(environ, start_response)

    @staticmethod
    def _deny(start_response: Callable[..., Any], status: int, code: str, message: str) -> Iterable[bytes]:
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        reason = {401: "Unauthorized", 503: "Service Unavailable", 500: "Internal Server Error"}[status]
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        if status == 401:
            headers.append(("WWW-Authenticate", f'Bearer error="invalid_token", error_description="{code}"'))
        start_response(f"{status} {reason}", headers)
        return [body]
