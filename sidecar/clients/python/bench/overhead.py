"""Per-call cost of the client over the raw socket request, side by side.

For each call, batches of the client's call and of the same HTTP exchange
written by hand on a kept-alive Unix socket alternate for --secs seconds;
one JSON line per call: medians of the per-call times of the batches, in
microseconds. Run by `make bench-clients` (tests/benches/clients.rs).
"""

import argparse
import base64
import json
import os
import socket
import statistics
import time

from lockstep_client import Client


class Raw:
    """One HTTP/1.1 exchange at a time on a kept-alive connection."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.buf = b""

    def call(self, request):
        self.sock.sendall(request)
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(65536)
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:"))
        while len(rest) < length:
            rest += self.sock.recv(65536)
        self.buf = rest[length:]
        return rest[:length]


def request(method, path, body=None):
    payload = b"" if body is None else json.dumps(body).encode()
    head = f"{method} {path} HTTP/1.1\r\nHost: sidecar\r\nX-Lockstep-Request: 1\r\nContent-Length: {len(payload)}\r\n"
    if body is not None:
        head += "Content-Type: application/json\r\n"
    return (head + "\r\n").encode() + payload


def measure(fn, batch):
    started = time.perf_counter()
    for _ in range(batch):
        fn()
    return (time.perf_counter() - started) / batch * 1e6


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--secs", type=float, default=3.0)
    parser.add_argument("--batch", type=int, default=200)
    args = parser.parse_args()
    client = Client(os.environ["LOCKSTEP_SOCKET"])
    raw = Raw(client.socket_path)
    token = client.jwt_sign("jwt", {"sub": "bench"}, ttl=600)["token"]
    calls = {
        "keys": (lambda: client.keys("jwt"), request("GET", "/v1/keys/jwt")),
        "jwt_verify": (lambda: client.jwt_verify("jwt", token), request("POST", "/v1/jwt/jwt/verify", {"token": token})),
        "mac": (lambda: client.mac("hooks", b"x" * 64), request("POST", "/v1/mac/hooks", {"data": base64.b64encode(b"x" * 64).decode()})),
    }
    for name, (call, wire) in calls.items():
        assert "error" not in json.loads(raw.call(wire)), name
        mine, theirs = [], []
        deadline = time.monotonic() + args.secs
        while time.monotonic() < deadline:
            mine.append(measure(call, args.batch))
            theirs.append(measure(lambda: raw.call(wire), args.batch))
        client_us, raw_us = statistics.median(mine), statistics.median(theirs)
        print(json.dumps({"language": "python", "call": name, "client_us": round(client_us, 1),
                          "raw_us": round(raw_us, 1), "batches": len(mine)}))


if __name__ == "__main__":
    main()
