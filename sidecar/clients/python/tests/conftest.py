"""The fixture comes from the environment the Rust harness sets
(tests/src/clients.rs: real server, real release sidecars); run these
through `make test` or `cargo test -p lockstep-tests --test clients`."""

import json
import os
import urllib.request

import pytest

from lockstep_client import Client


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run through `cargo test -p lockstep-tests --test clients`", pytrace=False)
    return value


@pytest.fixture(scope="session")
def client() -> Client:
    return Client(_env("LOCKSTEP_SOCKET"))


@pytest.fixture(scope="session")
def verify_client() -> Client:
    return Client(_env("LOCKSTEP_TEST_VERIFY_SOCKET"))


@pytest.fixture(scope="session")
def control():
    base = _env("LOCKSTEP_TEST_CONTROL")

    def call(action: str, target: str) -> dict:
        request = urllib.request.Request(f"{base}/{action}/{target}", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=120) as answer:
            return json.loads(answer.read())

    return call


@pytest.fixture(scope="session")
def shared_cases() -> list:
    with open(_env("LOCKSTEP_TEST_CASES")) as f:
        return json.load(f)["cases"]


@pytest.fixture(scope="session")
def shared_errors() -> dict:
    with open(_env("LOCKSTEP_TEST_ERRORS")) as f:
        return json.load(f)
