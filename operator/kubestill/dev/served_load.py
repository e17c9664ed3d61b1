"""What a served model cost the server, for bench/serving.py: CPU seconds from /proc, speedup at equal p99. The
closed loop itself is kubestill.servecheck.load (the operator's serving check runs the same one); its names are
re-exported here for the bench and its tests.

CPU seconds are read from /proc for every process in the server's process group (tritonserver and its
python backend stubs; `start_tritonserver` starts it in a session of its own): user + system time.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from kubestill.servecheck.load import LoadFigures, closed_loop, summarize

__all__ = ["LoadFigures", "closed_loop", "group_cpu_seconds", "group_processes", "speedup_at_equal_p99",
           "stat_cpu_ticks", "summarize"]

PROC = Path("/proc")


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


def group_processes(pgid: int, proc: Path = PROC) -> dict[int, tuple[str, float]]:
    """The live processes of process group `pgid`: {pid: (command name as /proc shows it, at most 15
    characters; user + system CPU seconds)}; empty without /proc."""
    if not proc.is_dir():
        return {}
    out = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            line = (entry / "stat").read_text()
            group, used = stat_cpu_ticks(line)
        except (OSError, ValueError, IndexError):
            continue  # exited while we read, or not ours to read
        if group == pgid:
            out[int(entry.name)] = (line[line.index("(") + 1 : line.rindex(")")], used / os.sysconf("SC_CLK_TCK"))
    return out


def group_cpu_seconds(pgid: int, proc: Path = PROC) -> float:
    """User + system CPU seconds of the live processes in process group `pgid` (NaN without /proc)."""
    if not proc.is_dir():
        return float("nan")
    return sum(seconds for _, seconds in group_processes(pgid, proc).values())


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
