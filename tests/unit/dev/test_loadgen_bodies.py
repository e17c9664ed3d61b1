"""What the load generator (kubestill.dev.loadgen) sends: Triton v2 bodies carrying the given texts in turn, the
same text in a mirrored copy as in the request it copies, and "request <n>" without texts. Against a loopback
HTTP server that records every body."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from kubestill.dev.loadgen import LoadGenerator
from kubestill.dev.polling import wait_for


class Recorder(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.seen: list[tuple[str, str]] = []  # (path, TEXT) in arrival order
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: Recorder

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        [tensor] = body["inputs"]
        assert (tensor["name"], tensor["shape"], tensor["datatype"]) == ("TEXT", [1, 1], "BYTES")
        with self.server.lock:
            self.server.seen.append((self.path, tensor["data"][0]))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:  # keep pytest's output clean
        pass


@pytest.fixture
def servers() -> Iterator[tuple[Recorder, Recorder]]:
    live, judge = Recorder(), Recorder()
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (live, judge)]
    for t in threads:
        t.start()
    yield live, judge
    for s in (live, judge):
        s.shutdown()
        s.server_close()


def sent(live: Recorder, judge: Recorder, count: int, **kwargs: Any) -> tuple[list[str], list[str]]:
    """The first `count` live texts and what was mirrored alongside them (100% mirrored)."""
    load = LoadGenerator(lambda: (100, 0, 100), live.url, live.url, rate=200.0, mirror_url=judge.url,
                         **kwargs).start()
    try:
        wait_for(lambda: len(judge.seen) >= count, 20, f"{count} mirrored requests", interval=0.05)
    finally:
        load.stop()
    return [t for _, t in live.seen[:count]], [t for _, t in judge.seen[:count]]


@pytest.mark.parametrize(("texts", "expected"), [
    (["a title", "another", "a third"], ["a title", "another", "a third", "a title", "another", "a third", "a title"]),
    (["only one"], ["only one"] * 7),
    ((), [f"request {n}" for n in range(7)]),
])
def test_texts_in_turn_and_mirrored_alike(servers: tuple[Recorder, Recorder], texts: list[str],
                                          expected: list[str]) -> None:
    live, judge = servers
    assert sent(live, judge, 7, texts=texts) == (expected, expected)


def test_the_model_names_the_path(servers: tuple[Recorder, Recorder]) -> None:
    live, judge = servers
    sent(live, judge, 2, model="classifier", texts=["x"])
    assert {p for p, _ in live.seen + judge.seen} == {"/v2/models/classifier/infer"}
