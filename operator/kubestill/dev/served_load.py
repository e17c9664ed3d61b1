"""Closed-loop load on a served model, and what it cost the server (bench/serving.py).

Closed loop, as Triton's perf_analyzer runs by default (`--concurrency-range`): each of `concurrency` workers
sends one request, waits for the answer, and sends the next, for `duration_s`. Throughput is answered
requests per second of wall time; latency is each request's round trip as the client sees it (serialisation,
HTTP, queueing in the dynamic batcher, the model, deserialisation).

perf_analyzer itself is not used: its PyPI package (perf-analyzer 2.60) has no wheel installable here, so the
requests go through Triton's own Python client (tritonclient), one client per worker thread. The client's
threads share the machine's cores with the server, as perf_analyzer's would on the same host.

CPU seconds are read from /proc for every process in the server's process group (tritonserver and its
python backend stubs; `start_tritonserver` starts it in a session of its own): user + system time.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PROC = Path("/proc")


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


def stat_cpu_ticks(stat_line: str) -> tuple[int, int]:
    """(process group id, utime + stime clock ticks) from a /proc/<pid>/stat line (proc(5)): fields after
    the parenthesised command name, which may itself hold spaces and parentheses.

    >>> stat_line = "42 (triton (stub)) S 1 42 42 0 -1 4194560 1 0 0 0 150 25 0 0 20 0 1 0 1 0 0"
    >>> stat_cpu_ticks(stat_line)
    (42, 175)
    """
    rest = stat_line[stat_line.rindex(")") + 2:].split()
    # rest[0] is field 3 (state): pgrp is field 5, utime 14, stime 15.
    return int(rest[2]), int(rest[11]) + int(rest[12])


def group_cpu_seconds(pgid: int, proc: Path = PROC) -> float:
    """User + system CPU seconds of the live processes in process group `pgid` (NaN without /proc)."""
    if not proc.is_dir():
        return float("nan")
    ticks = 0
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            group, used = stat_cpu_ticks((entry / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue  # exited while we read, or not ours to read
        if group == pgid:
            ticks += used
    return ticks / os.sysconf("SC_CLK_TCK")


def speedup_at_equal_p99(baseline: LoadFigures, candidate: Sequence[LoadFigures]) -> float | None:
    """The candidate's best throughput at a p99 no worse than the baseline's, over the baseline's throughput
    (None when no candidate run meets that p99).

    >>> base = summarize(8, [100.0] * 10, 0, 1.0, 0.0)            # 10 req/s, p99 100 ms
    >>> fast = [summarize(8, [20.0] * 300, 0, 1.0, 0.0),          # 300 req/s, p99 20 ms
    ...         summarize(32, [150.0] * 900, 0, 1.0, 0.0)]        # 900 req/s but p99 150 ms: too slow
    >>> speedup_at_equal_p99(base, fast)
    30.0
    """
    fitting = [c.throughput for c in candidate if c.requests and c.p99_ms <= baseline.p99_ms]
    if not fitting or not baseline.throughput > 0:
        return None
    return max(fitting) / baseline.throughput
