"""bench/serving.py's wrk load (kubestill.dev.wrk_load): the real wrk against a loopback server that reads the
KServe v2 bodies it is sent. Every row is sent, one per request; answers other than 2xx are errors, not
latencies; the report's arithmetic is its doctest."""

from __future__ import annotations

import doctest
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler

import pytest

from kubestill.dev import wrk_load

from ...local_http import serving

TEXTS = ["markets rise", 'a "quoted" title', "sport: the cup", "tech, again"]


def handler(seen: Counter[str], status: int) -> type[BaseHTTPRequestHandler]:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as Triton: one connection per wrk client

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            (tensor,) = body["inputs"]
            assert tensor["name"] == "TEXT" and tensor["shape"] == [1, 1] and tensor["datatype"] == "BYTES"
            with lock:
                seen[tensor["data"][0]] += 1
            answer = b'{"outputs": []}'
            self.send_response(status)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


def test_doctests() -> None:
    result = doctest.testmod(wrk_load)
    assert result.attempted >= 2 and result.failed == 0


def test_every_row_is_sent_and_counted() -> None:
    seen: Counter[str] = Counter()
    with serving(handler(seen, 200)) as url:
        bodies = [wrk_load.v2_body([{"TEXT": t}]) for t in TEXTS]
        fig = wrk_load.run(f"{url}/v2/models/m/infer", bodies, 2, 1.0, cpu_seconds=lambda: 1.0)
    # wrk counts what was answered before it stopped; the server may have read one more per connection.
    assert fig.errors == 0 and len(TEXTS) < fig.requests <= sum(seen.values()) <= fig.requests + 2
    assert set(seen) == set(TEXTS)  # each row, quotes and all, arrived as sent
    assert max(seen.values()) - min(seen.values()) <= 2  # cycled, not one row over and over
    assert fig.concurrency == 2 and 0.9 <= fig.wall_s <= 3.0 and 0 < fig.p50_ms <= fig.p99_ms
    assert fig.cpu_s == 0.0  # the callable read before and after


@pytest.mark.parametrize("rows", [[], [{"TEXT": "a"}, {"QUERY": "b"}]])
def test_a_request_needs_rows_of_the_same_tensors(rows: list[dict[str, str]]) -> None:
    with pytest.raises(ValueError, match="same tensors"):
        wrk_load.v2_body(rows)


def test_answers_other_than_2xx_are_errors() -> None:
    seen: Counter[str] = Counter()
    with serving(handler(seen, 500)) as url:
        fig = wrk_load.run(f"{url}/infer", [wrk_load.v2_body([{"TEXT": "x"}])], 1, 1)
    assert fig.requests == 0 and 0 < fig.errors <= sum(seen.values()) <= fig.errors + 1


def test_a_refused_connection_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="wrk exited"):
        wrk_load.run("http://127.0.0.1:1/infer", [wrk_load.v2_body([{"TEXT": "x"}])], 1, 1)
