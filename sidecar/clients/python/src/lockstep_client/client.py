"""The socket API, one method per call.

Bytes go in and come out as ``bytes`` (the wire carries base64); tokens,
ciphertexts and MACs are ``str``. Answers are the sidecar's JSON objects
as ``dict``, with byte fields decoded. Each thread keeps its own
keep-alive connection, so a client may be shared between threads.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import threading
import weakref
from typing import Any, Dict, Iterable, List, Mapping, Optional
from urllib.parse import quote, urlencode

from .errors import SidecarUnreachable, error_from

DEFAULT_SOCKET = "/run/lockstep/sidecar.sock"
GUARD_HEADER = "X-Lockstep-Request"


def _b64(data: bytes) -> str:
    if isinstance(data, str):
        raise TypeError("bytes expected, not str (encode it first)")
    return base64.b64encode(bytes(data)).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def _segment(name: str) -> str:
    return quote(str(name), safe="")


def _keys_query(format: Optional[str], private: bool) -> str:
    query = {}
    if format is not None:
        query["format"] = format
    if private:
        query["private"] = "true"
    return "?" + urlencode(query) if query else ""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("sidecar", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Client:
    """A client of one sidecar's socket.

    ``socket_path`` defaults to ``$LOCKSTEP_SOCKET``, else
    ``/run/lockstep/sidecar.sock``. ``timeout`` bounds each call in seconds
    (a watch adds its own wait to it).
    """

    def __init__(self, socket_path: Optional[str] = None, timeout: float = 10.0):
        self.socket_path = socket_path or os.environ.get("LOCKSTEP_SOCKET") or DEFAULT_SOCKET
        self.timeout = timeout
        self._local = threading.local()
        self._open: "weakref.WeakSet[_UnixConnection]" = weakref.WeakSet()

    # -- transport -------------------------------------------------------

    def _connection(self, timeout: float) -> _UnixConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = _UnixConnection(self.socket_path, timeout)
            self._local.conn = conn
            self._open.add(conn)
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def close(self) -> None:
        """Closes this thread's connection (others close with their threads)."""
        self._drop_connection()

    def abort(self) -> None:
        """Shuts every connection of every thread, ending calls in flight
        (they fail with :class:`SidecarUnreachable`)."""
        for conn in list(self._open):
            if conn.sock is not None:
                try:
                    conn.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def request(self, method: str, path: str, body: Any = None, timeout: Optional[float] = None) -> Any:
        """One call: the answer's JSON (or text for ``/metrics``); raises on an error answer."""
        status, answer = self.raw(method, path, body, timeout)
        if status >= 400:
            raise error_from(status, answer)
        return answer

    def raw(self, method: str, path: str, body: Any = None, timeout: Optional[float] = None):
        """One call: ``(status, answer)`` whatever the status."""
        payload = None if body is None else json.dumps(body).encode()
        headers = {GUARD_HEADER: "1"}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        timeout = self.timeout if timeout is None else timeout
        # A kept-alive connection the sidecar has closed meanwhile fails on
        # first use, before anything was answered: one retry on a fresh one.
        for attempt in (0, 1):
            reused = getattr(self._local, "conn", None) is not None and self._local.conn.sock is not None
            conn = self._connection(timeout)
            try:
                conn.request(method, path, body=payload, headers=headers)
                response = conn.getresponse()
                data = response.read()
                status = response.status
                kind = response.getheader("Content-Type", "")
                if response.will_close:
                    self._drop_connection()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self._drop_connection()
                if attempt == 0 and reused:
                    continue
                raise SidecarUnreachable("socket_closed", f"{self.socket_path}: {exc}") from None
            except (OSError, http.client.HTTPException) as exc:
                self._drop_connection()
                raise SidecarUnreachable("socket_unreachable", f"{self.socket_path}: {exc}") from None
        if "json" in kind:
            try:
                return status, json.loads(data)
            except ValueError:
                raise SidecarUnreachable("answer_invalid", f"HTTP {status}: the answer is not JSON") from None
        return status, data.decode("utf-8", "replace")

    # -- health ----------------------------------------------------------

    def health(self) -> Dict[str, Any]:
        """``GET /healthz``."""
        return self.request("GET", "/healthz")

    def ready(self) -> Dict[str, Any]:
        """``GET /readyz``: ``{"ready": bool, "reason", ...}`` (not ready is an answer, not an error)."""
        status, answer = self.raw("GET", "/readyz")
        if status not in (200, 503) or not isinstance(answer, dict):
            raise error_from(status, answer)
        return answer

    def metrics(self) -> str:
        """``GET /metrics``, Prometheus text."""
        return self.request("GET", "/metrics")

    # -- keys ------------------------------------------------------------

    def keyrings(self) -> Dict[str, Any]:
        """The pool's keyrings: ``{"pool", "revision", "keyrings": [...]}``."""
        return self.request("GET", "/v1/keyrings")

    def keys(self, keyring: str, format: Optional[str] = None, private: bool = False) -> Dict[str, Any]:
        """The signing version and the verification set of ``keyring``."""
        return self.request("GET", f"/v1/keys/{_segment(keyring)}{_keys_query(format, private)}")

    def version(self, keyring: str, number: int, format: Optional[str] = None, private: bool = False) -> Dict[str, Any]:
        """One version by number."""
        path = f"/v1/keys/{_segment(keyring)}/versions/{int(number)}"
        return self.request("GET", path + _keys_query(format, private))

    def kid(self, keyring: str, kid: str, format: Optional[str] = None, private: bool = False) -> Dict[str, Any]:
        """One version by key id."""
        path = f"/v1/keys/{_segment(keyring)}/kids/{_segment(kid)}"
        return self.request("GET", path + _keys_query(format, private))

    def watch(self, keyring: str, after: Optional[str] = None, timeout: Optional[int] = None) -> Dict[str, Any]:
        """The keys answer once its ``state`` differs from ``after`` (``changed``), or after ``timeout`` seconds."""
        query = {}
        if after is not None:
            query["after"] = after
        if timeout is not None:
            # Whole seconds, at least one: `timeout=0` would answer at once.
            timeout = max(int(timeout), 1)
            query["timeout"] = timeout
        suffix = "?" + urlencode(query) if query else ""
        wait = 30 if timeout is None else timeout
        return self.request("GET", f"/v1/keys/{_segment(keyring)}/watch{suffix}", timeout=self.timeout + wait)

    def jwks(self, keyring: str) -> Dict[str, Any]:
        """The verification set as a JWK Set."""
        return self.request("GET", f"/v1/jwks/{_segment(keyring)}")

    # -- JWT -------------------------------------------------------------

    def jwt_sign(self, keyring: str, claims: Mapping[str, Any], ttl: Optional[int] = None) -> Dict[str, Any]:
        """Signs ``claims``: ``{"token", "kid", "version", "alg"}``."""
        body: Dict[str, Any] = {"claims": dict(claims)}
        if ttl is not None:
            body["ttl"] = int(ttl)
        return self.request("POST", f"/v1/jwt/{_segment(keyring)}/sign", body)

    def jwt_verify(
        self,
        keyring: str,
        token: str,
        audience: Optional[str] = None,
        issuer: Optional[str] = None,
        leeway: Optional[int] = None,
        ignore_audience: bool = False,
    ) -> Dict[str, Any]:
        """Verifies ``token``: ``{"valid": True, "claims", "kid", "version"}``, else :class:`VerificationFailed`.

        A token that names an audience is refused unless ``audience`` is one of
        them, or ``ignore_audience`` accepts any (RFC 7519, section 4.1.3)."""
        body: Dict[str, Any] = {"token": token}
        for name, value in (("audience", audience), ("issuer", issuer), ("leeway", leeway)):
            if value is not None:
                body[name] = value
        if ignore_audience:
            body["ignore_audience"] = True
        return self.request("POST", f"/v1/jwt/{_segment(keyring)}/verify", body)

    # -- encryption ------------------------------------------------------

    @staticmethod
    def _item(field: str, value: Any, associated_data: Optional[bytes]) -> Dict[str, Any]:
        item = {field: _b64(value) if field == "plaintext" else value}
        if associated_data is not None:
            item["associated_data"] = _b64(associated_data)
        return item

    @staticmethod
    def _opened(answer: Dict[str, Any]) -> Dict[str, Any]:
        if "plaintext" in answer:
            answer = dict(answer, plaintext=_unb64(answer["plaintext"]))
        return answer

    def encrypt(self, keyring: str, plaintext: bytes, associated_data: Optional[bytes] = None) -> Dict[str, Any]:
        """AES-256-GCM with the signing version: ``{"ciphertext": "lockstep:v<n>:...", "version", "kid"}``."""
        return self.request("POST", f"/v1/encrypt/{_segment(keyring)}", self._item("plaintext", plaintext, associated_data))

    def decrypt(self, keyring: str, ciphertext: str, associated_data: Optional[bytes] = None) -> Dict[str, Any]:
        """Opens a ciphertext with the version it names: ``{"plaintext": bytes, "version", "kid"}``."""
        answer = self.request(
            "POST", f"/v1/decrypt/{_segment(keyring)}", self._item("ciphertext", ciphertext, associated_data)
        )
        return self._opened(answer)

    def rewrap(self, keyring: str, ciphertext: str, associated_data: Optional[bytes] = None) -> Dict[str, Any]:
        """Encrypts again with the signing version, without the plaintext leaving the sidecar."""
        return self.request("POST", f"/v1/rewrap/{_segment(keyring)}", self._item("ciphertext", ciphertext, associated_data))

    def _batch(self, op: str, field: str, keyring: str, items: Iterable[Mapping[str, Any]]) -> List[Dict[str, Any]]:
        batch = [self._item(field, item[field], item.get("associated_data")) for item in items]
        answer = self.request("POST", f"/v1/{op}/{_segment(keyring)}", {"batch": batch})
        return [self._opened(result) for result in answer["batch"]]

    def encrypt_batch(self, keyring: str, items: Iterable[Mapping[str, Any]]) -> List[Dict[str, Any]]:
        """Many ``{"plaintext", "associated_data"?}`` at once; results in order, each a result or ``{"error"}``."""
        return self._batch("encrypt", "plaintext", keyring, items)

    def decrypt_batch(self, keyring: str, items: Iterable[Mapping[str, Any]]) -> List[Dict[str, Any]]:
        """Many ``{"ciphertext", "associated_data"?}`` at once; results in order, each a result or ``{"error"}``."""
        return self._batch("decrypt", "ciphertext", keyring, items)

    def rewrap_batch(self, keyring: str, items: Iterable[Mapping[str, Any]]) -> List[Dict[str, Any]]:
        """Many rewraps at once."""
        return self._batch("rewrap", "ciphertext", keyring, items)

    # -- MAC and raw signatures -----------------------------------------

    def mac(self, keyring: str, data: bytes) -> Dict[str, Any]:
        """HMAC-SHA-256 with the signing version: ``{"mac": "lockstep:v<n>:...", "version", "kid"}``."""
        return self.request("POST", f"/v1/mac/{_segment(keyring)}", {"data": _b64(data)})

    def mac_verify(self, keyring: str, data: bytes, mac: str) -> Dict[str, Any]:
        """Checks a MAC (constant time, in the sidecar)."""
        return self.request("POST", f"/v1/mac/{_segment(keyring)}/verify", {"data": _b64(data), "mac": mac})

    def sign(self, keyring: str, data: bytes) -> Dict[str, Any]:
        """A raw signature over ``data``: ``{"signature": bytes, "version", "kid", "alg"}``."""
        answer = self.request("POST", f"/v1/sign/{_segment(keyring)}", {"data": _b64(data)})
        return dict(answer, signature=_unb64(answer["signature"]))

    def verify(self, keyring: str, data: bytes, signature: bytes, kid: Optional[str] = None) -> Dict[str, Any]:
        """Checks a raw signature, with the version ``kid`` names or each version in the verification set."""
        body = {"data": _b64(data), "signature": _b64(signature)}
        if kid is not None:
            body["kid"] = kid
        return self.request("POST", f"/v1/sign/{_segment(keyring)}/verify", body)

    # -- webhooks --------------------------------------------------------

    def webhook_sign(
        self, keyring: str, payload: bytes, id: Optional[str] = None, timestamp: Optional[int] = None
    ) -> Dict[str, str]:
        """The Standard Webhooks headers for ``payload``: ``webhook-id``, ``webhook-timestamp``, ``webhook-signature``."""
        body: Dict[str, Any] = {"payload": _b64(payload)}
        if id is not None:
            body["id"] = id
        if timestamp is not None:
            body["timestamp"] = int(timestamp)
        return self.request("POST", f"/v1/webhook/{_segment(keyring)}/sign", body)

    def webhook_verify(
        self, keyring: str, payload: bytes, headers: Mapping[str, str], tolerance: Optional[int] = None
    ) -> Dict[str, Any]:
        """Checks an incoming webhook; ``headers`` may hold others too (only the three are sent)."""
        wanted = {"webhook-id", "webhook-timestamp", "webhook-signature"}
        body: Dict[str, Any] = {
            "payload": _b64(payload),
            "headers": {k: str(v) for k, v in headers.items() if k.lower() in wanted},
        }
        if tolerance is not None:
            body["tolerance"] = int(tolerance)
        return self.request("POST", f"/v1/webhook/{_segment(keyring)}/verify", body)
