"""Latency and throughput of a task model: end to end from text (tokenizer included), as a caller sees it.

Teacher and student are timed interleaved (`measure_pair`): one row through one, the same row through the
other, the order swapped every row, so both see the same load. Timed one after the other on a shared machine,
a burst of load during one block made a 2-of-6-layer student "0.65x faster" in one run and 1.5x in the next.
The speedup comes with a 95% bootstrap interval of the ratio of medians (scipy.stats.bootstrap, paired
resampling; Efron & Tibshirani, "An Introduction to the Bootstrap", 1993), and is called indistinguishable from
1 when that interval contains 1.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kubestill.api.report import LatencyFigures

from .tasks.base import Row


def percentiles(samples_ms: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(samples_ms, dtype=np.float64)
    return {f"p{q}": float(np.percentile(arr, q)) for q in (50, 95, 99)}


def throughput(predict: Callable[[Sequence[Row]], object], rows: Sequence[Row], batch_size: int = 32) -> float:
    """Rows per second in batches of `batch_size` over at least 4 full batches (one untimed batch first)."""
    batched = list(rows) * max(1, -(-batch_size * 4 // len(rows)))
    predict(batched[:batch_size])
    t = time.perf_counter()
    for i in range(0, len(batched), batch_size):
        predict(batched[i : i + batch_size])
    return len(batched) / (time.perf_counter() - t)


def measure(
    predict: Callable[[Sequence[Row]], object], rows: Sequence[Row], batch_size: int = 32, single: int = 100,
    warmup: int = 5,
) -> dict[str, float]:
    """p50/p95/p99 ms at batch 1 over `single` rows, and rows/s at `batch_size` over all rows."""
    if not rows:
        return {}
    for r in rows[:warmup]:
        predict([r])
    samples = []
    for i in range(single):
        r = rows[i % len(rows)]
        t = time.perf_counter()
        predict([r])
        samples.append((time.perf_counter() - t) * 1000)
    out = {f"batch1_{k}_ms": v for k, v in percentiles(samples).items()}
    out["throughput_rows_per_s"] = throughput(predict, rows, batch_size)
    out["throughput_batch_size"] = float(batch_size)
    return out


def figures(samples_ms: Sequence[float], rows_per_second: float | None, batch_size: int) -> LatencyFigures:
    """LatencyFigures of single-row call timings (ms) and a batched throughput."""
    pct = percentiles(samples_ms)
    return LatencyFigures(unit="ms", batch_size=1, samples=len(samples_ms), p50=pct["p50"], p95=pct["p95"],
                          p99=pct["p99"], throughput_rows_per_second=rows_per_second,
                          throughput_batch_size=batch_size if rows_per_second is not None else None)


def measure_figures(
    predict: Callable[[Sequence[Row]], object], rows: Sequence[Row], batch_size: int = 32, single: int = 100,
) -> LatencyFigures | None:
    """`measure` as metrics.json reports it: ms percentiles of `single` calls of one row, and rows/s at
    `batch_size`; None without rows (nothing to time)."""
    measured = measure(predict, rows, batch_size=batch_size, single=single)
    if not measured:
        return None
    return LatencyFigures(
        unit="ms", batch_size=1, samples=single, p50=measured["batch1_p50_ms"], p95=measured["batch1_p95_ms"],
        p99=measured["batch1_p99_ms"], throughput_rows_per_second=measured["throughput_rows_per_s"],
        throughput_batch_size=int(measured["throughput_batch_size"]),
    )


Predict = Callable[[Sequence[Row]], object]


@dataclass(frozen=True)
class PairedLatency:
    """Single-row latencies of a student and its teacher timed interleaved on the same rows (ms, shape
    (samples,) each), and the speedup teacher p50 / student p50 with its 95% bootstrap interval."""

    student_ms: list[float]
    teacher_ms: list[float]
    speedup: float
    interval: tuple[float, float] | None  # None: too few samples to resample

    @property
    def distinguishable(self) -> bool | None:
        """Whether the interval excludes 1 (None without an interval)."""
        return None if self.interval is None else not self.interval[0] <= 1.0 <= self.interval[1]


def speedup_interval(teacher_ms: Sequence[float], student_ms: Sequence[float], confidence: float = 0.95,
                     resamples: int = 999, seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap interval of median(teacher) / median(student) over paired samples (the i-th of
    each timed back to back); None with fewer than 10 pairs."""
    if len(teacher_ms) < 10 or len(teacher_ms) != len(student_ms):
        return None
    from scipy import stats

    def ratio(t: np.ndarray[Any, Any], s: np.ndarray[Any, Any], axis: int = -1) -> np.ndarray[Any, Any]:
        return np.asarray(np.median(t, axis=axis) / np.median(s, axis=axis))

    found = stats.bootstrap((np.asarray(teacher_ms), np.asarray(student_ms)), ratio, paired=True,
                            vectorized=True, n_resamples=resamples, confidence_level=confidence,
                            method="percentile", rng=np.random.default_rng(seed))
    return float(found.confidence_interval.low), float(found.confidence_interval.high)


def measure_pair(student: Predict, teacher: Predict, rows: Sequence[Row], single: int = 100,
                 warmup: int = 5) -> PairedLatency | None:
    """Time `single` one-row calls of each, interleaved and in alternating order, after `warmup` untimed calls
    of each; None without rows."""
    if not rows:
        return None
    for r in rows[:warmup]:
        student([r])
        teacher([r])
    timed: dict[str, list[float]] = {"student": [], "teacher": []}
    calls = {"student": student, "teacher": teacher}
    for i in range(single):
        r = rows[i % len(rows)]
        for name in ("student", "teacher") if i % 2 == 0 else ("teacher", "student"):
            t = time.perf_counter()
            calls[name]([r])
            timed[name].append((time.perf_counter() - t) * 1000)
    s_ms, t_ms = timed["student"], timed["teacher"]
    speedup = float(np.median(t_ms) / np.median(s_ms))
    return PairedLatency(s_ms, t_ms, speedup, speedup_interval(t_ms, s_ms))


def load_average() -> float | None:
    """The machine's 1-minute load average (None where the OS has none), reported beside the timings."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def dir_size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6
