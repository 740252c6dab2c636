"""The WSGI middleware, with the real sidecar verifying."""

import io
import json

from lockstep_client import Client, JWTMiddleware


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({"hello": environ["lockstep.claims"]["sub"]}).encode()]


def call(middleware, authorization=None):
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.input": io.BytesIO()}
    if authorization is not None:
        environ["HTTP_AUTHORIZATION"] = authorization
    seen = {}

    def start_response(status, headers):
        seen["status"], seen["headers"] = status, dict(headers)

    body = b"".join(middleware(environ, start_response))
    return seen["status"], seen["headers"], json.loads(body)


def test_a_valid_token_passes_with_its_claims(client):
    token = client.jwt_sign("jwt", {"sub": "alice", "aud": "api"}, ttl=60)["token"]
    status, _, body = call(JWTMiddleware(app, "jwt", client, audience="api"), f"Bearer {token}")
    assert (status, body) == ("200 OK", {"hello": "alice"})


def test_missing_and_invalid_tokens_are_401(client):
    middleware = JWTMiddleware(app, "jwt", client, audience="api")
    status, headers, body = call(middleware)
    assert status.startswith("401") and body["error"]["code"] == "token_missing"
    assert headers["WWW-Authenticate"].startswith("Bearer")
    other = client.jwt_sign("jwt", {"sub": "mallory", "aud": "elsewhere"}, ttl=60)["token"]
    status, _, body = call(middleware, f"Bearer {other}")
    assert status.startswith("401") and body["error"]["code"] == "token_audience"
    # Longer than the sidecar takes in a request body: refused as a token.
    status, _, body = call(middleware, "Bearer " + "a" * 70_000)
    assert status.startswith("401") and body["error"]["code"] == "token_malformed"


def test_a_token_with_an_audience_needs_one_named_or_ignored(client):
    token = client.jwt_sign("jwt", {"sub": "alice", "aud": "api"}, ttl=60)["token"]
    status, _, body = call(JWTMiddleware(app, "jwt", client), f"Bearer {token}")
    assert status.startswith("401") and body["error"]["code"] == "token_audience"
    status, _, body = call(JWTMiddleware(app, "jwt", client, ignore_audience=True), f"Bearer {token}")
    assert (status, body) == ("200 OK", {"hello": "alice"})


def test_an_unreachable_sidecar_is_503(tmp_path):
    middleware = JWTMiddleware(app, "jwt", Client(str(tmp_path / "gone.sock")))
    status, _, body = call(middleware, "Bearer a.b.c")
    assert status.startswith("503") and body["error"]["code"] == "socket_unreachable"
