"""A keyring's keys kept current in the background by the watch long-poll.

One thread per :class:`KeySet` waits on ``/v1/keys/{k}/watch`` and swaps in
each new answer as it comes; reads never touch the socket. Through errors
and sidecar restarts the last good answer stays, and the thread retries
with jittered exponential backoff.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from .client import Client
from .errors import LockstepError

log = logging.getLogger("lockstep_client")


class KeySet:
    """The current keys answer of ``keyring``, kept fresh by a daemon thread.

    ``on_change(answer)`` is called from that thread after each change
    (the first answer included); an exception it raises is logged and
    ignored. ``watch_timeout`` is each long-poll's wait (default: the
    sidecar's). ``close()`` stops the thread at once.
    """

    def __init__(
        self,
        keyring: str,
        client: Optional[Client] = None,
        on_change: Optional[Callable[[Dict[str, Any]], None]] = None,
        watch_timeout: Optional[int] = None,
        backoff_min: float = 0.2,
        backoff_max: float = 10.0,
    ):
        base = client or Client()
        # Its own client: the long-poll holds a connection for its whole wait.
        self._client = Client(base.socket_path, base.timeout)
        self.keyring = keyring
        self._on_change = on_change
        self._watch_timeout = watch_timeout
        self._backoff = (backoff_min, backoff_max)
        self._lock = threading.Lock()
        self._current: Optional[Dict[str, Any]] = None
        self._ready = threading.Event()
        self._stop = threading.Event()
        self.last_error: Optional[LockstepError] = None
        self.changes = 0
        self._thread = threading.Thread(target=self._run, name=f"lockstep-keyset-{keyring}", daemon=True)
        self._thread.start()

    @property
    def current(self) -> Optional[Dict[str, Any]]:
        """The last good keys answer (``None`` until the first one)."""
        with self._lock:
            return self._current

    def wait_ready(self, timeout: Optional[float] = None) -> bool:
        """Waits for the first answer; whether it came."""
        return self._ready.wait(timeout)

    @property
    def signing(self) -> Optional[Dict[str, Any]]:
        """The version that signs now, if any."""
        current = self.current
        return current.get("signing") if current else None

    @property
    def verifying(self) -> List[Dict[str, Any]]:
        """The verification set, less any version whose ``expires_at`` has
        passed by this machine's clock: the last good answer is kept through
        a sidecar outage, but an expired key never verifies from it."""
        current = self.current
        now = time.time()
        versions = current.get("verifying", []) if current else []
        return [v for v in versions if v.get("expires_at") is None or v["expires_at"] > now]

    def find(self, kid: str) -> Optional[Dict[str, Any]]:
        """The version of the verification set with this key id."""
        return next((v for v in self.verifying if v.get("kid") == kid), None)

    def close(self, timeout: float = 5.0) -> None:
        """Stops the background thread, ending the wait in flight."""
        self._stop.set()
        self._client.abort()
        self._thread.join(timeout)

    def __enter__(self) -> "KeySet":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        state: Optional[str] = None
        failures = 0
        while not self._stop.is_set():
            try:
                answer = self._client.watch(self.keyring, after=state, timeout=self._watch_timeout)
            except LockstepError as error:
                if self._stop.is_set():
                    return
                self.last_error = error
                failures += 1
                low, high = self._backoff
                delay = min(high, low * (2 ** min(failures - 1, 16)))
                self._stop.wait(delay * random.uniform(0.5, 1.0))
                continue
            failures = 0
            self.last_error = None
            if self._stop.is_set():
                return
            if answer.get("state") == state:
                continue
            state = answer.get("state")
            answer = {k: v for k, v in answer.items() if k != "changed"}
            with self._lock:
                self._current = answer
                self.changes += 1
            self._ready.set()
            if self._on_change is not None:
                try:
                    self._on_change(answer)
                except Exception:  # the app's callback must not stop the watch
                    log.exception("lockstep KeySet on_change callback failed")
