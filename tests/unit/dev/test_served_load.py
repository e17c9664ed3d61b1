"""The served-load arithmetic of bench/serving.py: percentiles, CPU from /proc, speedup at equal p99."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from kubestill.dev.served_load import (
    LoadFigures,
    closed_loop,
    group_cpu_seconds,
    group_processes,
    speedup_at_equal_p99,
    stat_cpu_ticks,
    summarize,
)


def fig(conc: int, p99: float, rps: float) -> LoadFigures:
    # rps requests in one second, all at latency p99: p99 is exactly that latency.
    return summarize(conc, [p99] * int(rps), 0, 1.0, 0.0)


@pytest.mark.parametrize(("base", "candidates", "expected"), [
    (fig(8, 100, 10), [fig(8, 20, 300)], 30.0),
    (fig(8, 100, 10), [fig(1, 5, 50), fig(8, 100, 200)], 20.0),    # equal p99 counts
    (fig(8, 100, 10), [fig(8, 101, 900)], None),                   # none fast enough
    (fig(8, 100, 10), [fig(8, 50, 100), fig(32, 150, 900)], 10.0),  # the faster run breaks the p99
    (fig(8, 100, 10), [], None),
])
def test_speedup_at_equal_p99(base: LoadFigures, candidates: list[LoadFigures], expected: float | None) -> None:
    assert speedup_at_equal_p99(base, candidates) == expected


@pytest.mark.parametrize(("line", "expected"), [
    ("7 (tritonserver) S 1 7 7 0 -1 0 0 0 0 0 300 45 0 0 20 0 9 0 1 0 0", (7, 345)),
    ("9 (a b) c)) R 7 9 7 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 1 0 0", (9, 3)),  # odd command names
])
def test_stat_cpu_ticks(line: str, expected: tuple[int, int]) -> None:
    assert stat_cpu_ticks(line) == expected


def test_group_cpu_seconds_sums_only_the_group(tmp_path: Path) -> None:
    tick = os.sysconf("SC_CLK_TCK")
    for pid, group, used in ((10, 10, tick), (11, 10, 2 * tick), (12, 99, 50 * tick)):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(f"{pid} (p) S 1 {group} {group} 0 -1 0 0 0 0 0 {used} 0 0 0")
    (tmp_path / "self").mkdir()  # not a pid: skipped
    (tmp_path / "13").mkdir()    # exited while read: no stat, skipped
    assert group_cpu_seconds(10, tmp_path) == pytest.approx(3.0)
    assert group_processes(10, tmp_path) == {10: ("p", pytest.approx(1.0)), 11: ("p", pytest.approx(2.0))}
    assert group_processes(10, tmp_path / "absent") == {} and math.isnan(group_cpu_seconds(10, tmp_path / "absent"))


def test_summary_figures() -> None:
    f = summarize(4, [10.0, 20.0, 30.0, 40.0], 1, 2.0, 0.4)
    assert (f.requests, f.errors, f.throughput, f.p50_ms, f.cpu_s_per_1000) == (4, 1, 2.0, 25.0, 100.0)


def test_closed_loop_counts_answers_and_errors() -> None:
    def send(worker: int, i: int) -> None:
        if worker == 1:
            raise ConnectionError("refused")

    # Each worker makes at least one request, even one whose thread starts after the deadline (a loaded machine).
    out = closed_loop(send, 2, 0.0, iter([1.0, 1.5]).__next__)
    assert (out.concurrency, out.requests, out.errors) == (2, 1, 1)
    assert out.cpu_s == pytest.approx(0.5)
    longer = closed_loop(send, 2, 0.05)
    assert longer.requests >= 1 and longer.errors >= 1
