"""`kubestill servecheck`'s work: wait until the model is ready behind its Service, warm it up, run the measured
closed loop (kubestill.servecheck.load) over HTTP with Triton's Python client, and summarise it as a
ServeCheckResult. I/O: the network; the figures themselves are load.summarize's."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from kubestill.api.served import ServeCheckRequest, ServeCheckResult

from .load import LoadFigures, closed_loop
from .rows import input_names, rows

Send = Callable[[int, int], None]


def _host(url: str) -> str:
    """tritonclient.http wants host:port, not a URL.

    >>> _host("http://sm-triton.ml.svc:8000/")
    'sm-triton.ml.svc:8000'
    """
    return url.split("://", 1)[-1].rstrip("/")


def http_sender(request: ServeCheckRequest) -> tuple[Send, list[str]]:
    """(`send(worker, i)`: one request of one row, a client per worker thread; the list the first failure's
    text is put in). Workers start at spread-out rows so they do not all send the same text at once."""
    import tritonclient.http as httpclient

    local = threading.local()
    names = input_names(request.task)
    payloads = [[np.array([[s.encode()]], dtype=np.object_) for s in row] for row in rows(request.task,
                                                                                           request.texts)]
    first_error: list[str] = []

    def send(worker: int, i: int) -> None:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpclient.InferenceServerClient(
                _host(request.url), connection_timeout=30, network_timeout=60)
        inputs = []
        for name, array in zip(names, payloads[(worker * 7919 + i) % len(payloads)], strict=True):
            inp = httpclient.InferInput(name, [1, 1], "BYTES")
            inp.set_data_from_numpy(array)
            inputs.append(inp)
        try:
            client.infer(request.model_name, inputs)
        except Exception as err:
            if not first_error:
                first_error.append(f"{type(err).__name__}: {err}")
            raise

    return send, first_error


def wait_ready(request: ServeCheckRequest, sleep: Callable[[float], None] = time.sleep) -> str | None:
    """None once Triton says the model is ready (/v2/models/<name>/ready), else why not after the timeout."""
    import tritonclient.http as httpclient

    client: Any = httpclient.InferenceServerClient(_host(request.url), connection_timeout=5, network_timeout=10)
    deadline = time.monotonic() + request.ready_timeout_seconds
    last = "not ready"
    while True:
        try:
            if client.is_model_ready(request.model_name):
                return None
        except Exception as err:  # connection refused, DNS not there yet: try again until the deadline
            last = f"{type(err).__name__}: {err}"
        if time.monotonic() >= deadline:
            return (f"model {request.model_name} at {request.url} not ready after "
                    f"{request.ready_timeout_seconds:g} s: {last}")
        sleep(1.0)


def result_of(figures: LoadFigures, first_error: str | None) -> ServeCheckResult:
    """The result of a measured run: not ok when no request was answered (the first failure says why).

    >>> from kubestill.servecheck.load import summarize
    >>> result_of(summarize(8, [2.0, 4.0], 1, 2.0, 0.0), "HTTP 503").message
    '1 of 3 requests failed, the first: HTTP 503'
    >>> result_of(summarize(8, [], 5, 2.0, 0.0), "refused").ok
    False
    """
    total = figures.requests + figures.errors
    if figures.requests == 0:
        return ServeCheckResult(ok=False, concurrency=figures.concurrency, errors=figures.errors,
                                wall_seconds=round(figures.wall_s, 3),
                                message=f"all {total} requests failed, the first: {first_error or 'no error text'}")
    note = f"{figures.errors} of {total} requests failed, the first: {first_error}" if figures.errors else ""
    return ServeCheckResult(
        ok=True, message=note, p50_ms=round(figures.p50_ms, 3), p95_ms=round(figures.p95_ms, 3),
        p99_ms=round(figures.p99_ms, 3), throughput_rps=round(figures.throughput, 3),
        concurrency=figures.concurrency, requests=figures.requests, errors=figures.errors,
        wall_seconds=round(figures.wall_s, 3))


def run_check(request: ServeCheckRequest) -> ServeCheckResult:
    """Wait for readiness, warm up (unmeasured), measure."""
    not_ready = wait_ready(request)
    if not_ready is not None:
        return ServeCheckResult(ok=False, concurrency=request.concurrency, message=not_ready)
    send, first_error = http_sender(request)
    if request.warmup_seconds > 0:
        closed_loop(send, request.concurrency, request.warmup_seconds)
    first_error.clear()  # a warm-up failure (a Pod still loading) is not the measured run's
    figures = closed_loop(send, request.concurrency, request.duration_seconds)
    return result_of(figures, first_error[0] if first_error else None)
