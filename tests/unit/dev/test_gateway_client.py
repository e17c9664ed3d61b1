"""The demo's gateway client counts who answered from the response alone (kubestill.dev.gateway_client): the
header a route's per-backend filter sets, else the HTTP status, else the error; grouped by the phase marked."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from kubestill.dev.gateway_client import BACKEND_HEADER, GatewayClient, tagged_backend_ref

# The answers of the fake gateway, in turn: (status, header value or None).
SCRIPT = [(200, "baseline"), (200, "candidate"), (503, None), (500, "candidate"), (200, None), (502, None)]


class _Gateway(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    n = 0
    received: list[str] = []  # the TEXT of each request, in order

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Gateway.received.append(request["inputs"][0]["data"][0])
        status, tag = SCRIPT[_Gateway.n % len(SCRIPT)]
        body = f"answer {_Gateway.n}".encode()
        _Gateway.n += 1
        self.send_response(status)
        if tag:
            self.send_header(BACKEND_HEADER, tag)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def gateway_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Gateway.n = 0
    _Gateway.received = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_answers_are_counted_by_the_backend_header_else_the_status(gateway_url: str) -> None:
    import http.client

    client = GatewayClient(gateway_url, "m")
    client.mark("step 1 (20%)")
    conn = http.client.HTTPConnection("127.0.0.1", int(gateway_url.rsplit(":", 1)[1]))
    got = [client.send(conn, n) for n in range(6)]
    assert got == ["baseline", "candidate", "503", "candidate:500", "200", "502"]


def test_a_200_without_the_header_is_counted_by_what_its_body_says(gateway_url: str) -> None:
    """A TraefikService entry gets no per-backend filter from Traefik: the answer itself names who answered."""
    import http.client

    client = GatewayClient(gateway_url, "m", untagged=lambda body: f"read:{body.decode()}")
    conn = http.client.HTTPConnection("127.0.0.1", int(gateway_url.rsplit(":", 1)[1]))
    got = [client.send(conn, n) for n in range(6)]
    assert got == ["baseline", "candidate", "503", "candidate:500", "read:answer 4", "502"]


def test_a_closed_gateway_counts_as_the_error_not_an_answer() -> None:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", 9, timeout=2)  # discard port: nothing listens
    assert GatewayClient("http://127.0.0.1:9", "m").send(conn, 0) == "ConnectionRefusedError"


def test_the_thread_groups_answers_by_the_phase_marked(gateway_url: str) -> None:
    client = GatewayClient(gateway_url, "m", rate=100, max_seconds=0.5).start()
    time.sleep(0.2)
    client.mark("step 1 (20%)")
    assert client._thread is not None
    client._thread.join(5)  # ends by itself after max_seconds
    phases = client.snapshot()
    assert [p for p, _ in phases] == ["start", "step 1 (20%)"]
    assert all(sum(counts.values()) >= 2 for _, counts in phases), phases
    assert sum(client.total().values()) == sum(sum(c.values()) for _, c in phases)


def test_requests_carry_the_texts_in_turn_and_who_answered_each_is_kept(gateway_url: str) -> None:
    texts = ["t0", "t1", "t2", "t3"]
    client = GatewayClient(gateway_url, "m", rate=200, max_seconds=0.3, texts=texts).start()
    assert client._thread is not None
    client._thread.join(5)
    n = len(client.answers)
    assert n >= 7 and [i for i, _ in client.answers] == list(range(n))
    assert _Gateway.received == [f"t{i % 4}" for i in range(n)]
    # SCRIPT answers request i with its entry i % 6: only entry 1 is the candidate's 200.
    assert client.sent_by("candidate") == [f"t{i % 4}" for i in range(n) if i % 6 == 1]
    assert client.sent_by("candidate:500") == [f"t{i % 4}" for i in range(n) if i % 6 == 3]


def test_without_texts_request_n_says_so(gateway_url: str) -> None:
    assert [GatewayClient(gateway_url, "m").text(n) for n in (0, 7)] == ["request 0", "request 7"]


def test_tagged_backend_ref_is_a_gateway_api_backend_ref_with_a_response_header_filter() -> None:
    assert tagged_backend_ref("svc", 8000, 0, "candidate") == {
        "name": "svc", "port": 8000, "weight": 0,
        "filters": [{"type": "ResponseHeaderModifier",
                     "responseHeaderModifier": {"set": [{"name": "X-Kubestill-Backend", "value": "candidate"}]}}]}
