"""The shared request/answer cases (tests/testdata/client-cases.json)."""

import base64
import json
import os
import time

import pytest

from lockstep_client import LockstepError

BYTES = {"plaintext", "associated_data", "data", "payload", "signature"}


def _cases():
    path = os.environ.get("LOCKSTEP_TEST_CASES")
    if not path:
        return []
    with open(path) as f:
        return json.load(f)["cases"]


def wire(value):
    """An answer as the wire carried it: bytes as base64."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {k: wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [wire(v) for v in value]
    return value


MISSING = object()


def lookup(value, path):
    for part in path.split("."):
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return MISSING
    return value


def _text(text, name):
    return text.encode() if name in BYTES else text


def resolve(arg, saved, name=None):
    if isinstance(arg, dict) and set(arg) == {"ref", "segment"}:
        value = lookup(saved, arg["ref"])
        assert value is not MISSING, f"no saved value {arg['ref']}"
        return value.split(".")[arg["segment"]]
    if isinstance(arg, dict) and set(arg) == {"repeat", "times"}:
        return _text(arg["repeat"] * arg["times"], name)
    if isinstance(arg, dict) and set(arg) == {"now_plus"}:
        return int(time.time()) + arg["now_plus"]
    if isinstance(arg, dict) and set(arg) == {"join"}:
        return _text("".join(resolve(part, saved) for part in arg["join"]), name)
    if isinstance(arg, dict) and set(arg) == {"ref"}:
        value = lookup(saved, arg["ref"])
        assert value is not MISSING, f"no saved value {arg['ref']}"
        return base64.b64decode(value) if name in BYTES else value
    if isinstance(arg, dict):
        return {k: resolve(v, saved, k) for k, v in arg.items()}
    if isinstance(arg, list):
        return [resolve(v, saved, name) for v in arg]
    if isinstance(arg, str) and name in BYTES:
        return arg.encode()
    return arg


def test_the_shared_cases_are_there():
    assert len(_cases()) >= 30


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c["name"])
def test_case(case, client, verify_client):
    saved = {}
    for index, step in enumerate(case["steps"]):
        where = f"step {index} ({step['call']})"
        time.sleep(step.get("wait_secs", 0))
        target = verify_client if step.get("pool") == "verify" else client
        args = resolve(step.get("args", {}), saved)
        call = getattr(target, step["call"])
        if "error" in step:
            with pytest.raises(LockstepError) as raised:
                call(**args)
            expected = step["error"]
            got = raised.value
            assert (got.code, got.kind, got.status) == (expected["code"], expected["kind"], expected["status"]), where
            continue
        answer = wire(call(**args))
        for path, expected in step.get("expect", {}).items():
            assert lookup(answer, path) == resolve(expected, saved), f"{where}: {path} in {answer}"
        for path in step.get("present", []):
            assert lookup(answer, path) is not MISSING, f"{where}: {path} missing from {answer}"
        if "save" in step:
            saved[step["save"]] = answer
