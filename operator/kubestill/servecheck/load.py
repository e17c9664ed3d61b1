"""Closed-loop load on a served model: the serving check's Job (`kubestill servecheck`) and bench/serving.py.

Closed loop, as Triton's perf_analyzer runs by default (`--concurrency-range`): each of `concurrency` workers
sends one request, waits for the answer, and sends the next, for `duration_s`. Throughput is answered
requests per second of wall time; latency is each request's round trip as the client sees it (serialisation,
HTTP, queueing in the dynamic batcher, the model, deserialisation).

perf_analyzer itself is not used: its PyPI package (perf-analyzer 2.60) has no wheel installable here, so the
requests go through Triton's own Python client (tritonclient), one client per worker thread. The client's
threads share the machine's cores with the server, as perf_analyzer's would on the same host. `cpu_seconds`
is the caller's: bench/serving.py reads the server's process group from /proc (kubestill.dev.served_load).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LoadFigures:
    """One closed-loop run: `requests` answered in `wall_s` seconds by `concurrency` workers; latencies in ms;
    `cpu_s` the server group's CPU seconds over the run (NaN where /proc is not readable)."""

    concurrency: int
    requests: int
    errors: int
    wall_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    cpu_s: float

    @property
    def throughput(self) -> float:
        """Answered requests per second."""
        return self.requests / self.wall_s if self.wall_s > 0 else float("nan")

    @property
    def cpu_s_per_1000(self) -> float:
        """Server CPU seconds per 1,000 answered requests."""
        return 1000.0 * self.cpu_s / self.requests if self.requests else float("nan")


def summarize(concurrency: int, latencies_ms: Sequence[float], errors: int, wall_s: float,
              cpu_s: float) -> LoadFigures:
    """Percentiles (numpy's linear interpolation, as perf_analyzer reports them) of the answered requests.

    >>> f = summarize(2, [float(i) for i in range(1, 101)], 0, 10.0, 5.0)
    >>> (f.p50_ms, f.p99_ms, f.throughput, f.cpu_s_per_1000)
    (50.5, 99.01, 10.0, 50.0)
    """
    arr = np.asarray(latencies_ms, dtype=np.float64)
    p50, p95, p99 = (float(np.percentile(arr, q)) if arr.size else float("nan") for q in (50, 95, 99))
    return LoadFigures(concurrency, int(arr.size), errors, wall_s, round(p50, 6), round(p95, 6), round(p99, 6),
                       cpu_s)


def closed_loop(send: Callable[[int, int], None], concurrency: int, duration_s: float,
                cpu_seconds: Callable[[], float] = lambda: float("nan")) -> LoadFigures:
    """Run `concurrency` workers for `duration_s`; `send(worker, i)` makes the i-th request of a worker and
    returns when it is answered (an exception counts as an error, not a latency). `cpu_seconds()` is read
    before and after."""
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    start = time.perf_counter()
    deadline = start + duration_s

    def worker(w: int) -> None:
        i = 0
        while i == 0 or time.perf_counter() < deadline:  # at least one request each, however late it starts
            t = time.perf_counter()
            try:
                send(w, i)
            except Exception:  # a failed request is counted, the run goes on
                errors[w] += 1
            else:
                latencies[w].append((time.perf_counter() - t) * 1000.0)
            i += 1

    cpu0 = cpu_seconds()
    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    cpu = cpu_seconds() - cpu0
    return summarize(concurrency, [x for ws in latencies for x in ws], sum(errors), wall, cpu)
