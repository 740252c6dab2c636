"""Error mapping, transport failures and packaging."""

import os
import pathlib
import re

import pytest

import lockstep_client
from lockstep_client import Client, InvalidRequest, NotFound, SidecarUnreachable, Unavailable, error_from
from lockstep_client.errors import KIND_OF_CODE, KIND_OF_STATUS

ROOT = pathlib.Path(__file__).resolve().parents[4]


def test_every_code_maps_to_the_shared_kind(shared_errors):
    assert KIND_OF_CODE == shared_errors["codes"]
    assert {str(k): v for k, v in KIND_OF_STATUS.items()} == shared_errors["by_status"]


def test_an_unknown_code_takes_the_kind_of_its_status():
    assert isinstance(error_from(404, {"error": {"code": "brand_new", "message": "m"}}), NotFound)
    assert isinstance(error_from(503, {"error": {"code": "brand_new", "message": "m"}}), Unavailable)
    assert isinstance(error_from(418, {"error": {"code": "brand_new", "message": "m"}}), InvalidRequest)
    assert isinstance(error_from(502, "not json"), SidecarUnreachable)


def test_an_unreachable_socket_is_a_typed_error(tmp_path):
    with pytest.raises(SidecarUnreachable) as raised:
        Client(str(tmp_path / "absent.sock")).health()
    assert raised.value.code == "socket_unreachable"


def test_the_socket_defaults_to_the_environment(monkeypatch):
    monkeypatch.setenv("LOCKSTEP_SOCKET", "/tmp/elsewhere.sock")
    assert Client().socket_path == "/tmp/elsewhere.sock"
    monkeypatch.delenv("LOCKSTEP_SOCKET")
    assert Client().socket_path == "/run/lockstep/sidecar.sock"


def test_bytes_are_required_where_bytes_travel(client):
    with pytest.raises(TypeError):
        client.mac("hooks", "text, not bytes")


def test_metrics_are_text(client):
    assert "lockstep_sidecar" in client.metrics()


def test_versioned_with_the_project():
    cargo = (ROOT / "Cargo.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', cargo, re.M).group(1)
    pyproject = (ROOT / "sidecar/clients/python/pyproject.toml").read_text()
    assert re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1) == version
    assert lockstep_client.__version__ == version


def test_a_kept_alive_connection_survives_a_sidecar_restart(client, control):
    assert client.health() == {"status": "ok"}
    control("restart", "web")
    # The old connection is dead; the call retries on a fresh one.
    assert client.health() == {"status": "ok"}
    assert os.path.exists(client.socket_path)
