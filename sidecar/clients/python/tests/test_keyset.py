"""The background KeySet against a real sidecar: a rotation observed within
the watch's latency, the last good state kept through a restart."""

import threading
import time

from lockstep_client import KeySet


def wait_for(what, predicate, seconds=30.0):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_rotation_reaches_the_keyset_without_polling(client, control):
    changes = []
    seen = threading.Event()

    def on_change(answer):
        changes.append(answer)
        seen.set()

    with KeySet("hooks", client, on_change=on_change) as keys:
        assert keys.wait_ready(10)
        before = [v["version"] for v in keys.verifying]
        requests_before = _watch_requests(client)
        control("rotate", "hooks")
        started = time.monotonic()
        wait_for("the published version", lambda: len(keys.verifying) > len(before))
        latency = time.monotonic() - started
        assert latency < 10, latency
        assert [v["version"] for v in keys.verifying] == before + [max(before) + 1]
        assert changes[-1]["state"] == keys.current["state"]
        # Long-polls, not a poll per change: a handful of watch requests.
        assert _watch_requests(client) - requests_before <= 4
        wait_for("the new version signing", lambda: keys.signing and keys.signing["version"] == max(before) + 1)


def test_the_last_good_state_survives_a_sidecar_restart(client, control):
    with KeySet("jwt", client, backoff_min=0.05, backoff_max=0.5) as keys:
        assert keys.wait_ready(10)
        good = keys.current
        control("stop", "web")
        try:
            wait_for("an error seen by the watch", lambda: keys.last_error is not None, 15)
            assert keys.current == good, "the last good answer is kept while the sidecar is away"
            assert keys.find(good["signing"]["kid"]) is not None
        finally:
            control("start", "web")
        control("rotate", "jwt")
        wait_for("the rotation after the restart", lambda: len(keys.verifying) > len(good["verifying"]))
        assert keys.last_error is None, "a success clears the last error"


def _watch_requests(client):
    total = 0
    for line in client.metrics().splitlines():
        if line.startswith("lockstep_sidecar_requests_total") and 'route="watch"' in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def test_an_expired_version_never_verifies_from_the_last_good_answer(tmp_path):
    from lockstep_client import Client

    now = int(time.time())
    # No sidecar at all: the watch keeps failing, the answer stays.
    with KeySet("hooks", Client(str(tmp_path / "absent.sock")), backoff_min=0.05) as keys:
        with keys._lock:
            keys._current = {
                "signing": {"version": 2, "kid": "hooks-v2"},
                "verifying": [
                    {"version": 1, "kid": "hooks-v1", "expires_at": now - 1},
                    {"version": 2, "kid": "hooks-v2", "expires_at": None},
                    {"version": 3, "kid": "hooks-v3", "expires_at": now + 3600},
                ],
            }
        time.sleep(0.2)
        assert [v["version"] for v in keys.verifying] == [2, 3]
        assert keys.find("hooks-v1") is None
        assert keys.find("hooks-v3")["version"] == 3
