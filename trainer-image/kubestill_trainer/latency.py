"""Latency and throughput of a task model: end to end from text (tokenizer included), as a caller sees it."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from kubestill.api.report import LatencyFigures

from .tasks.base import Row


def percentiles(samples_ms: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(samples_ms, dtype=np.float64)
    return {f"p{q}": float(np.percentile(arr, q)) for q in (50, 95, 99)}


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
    batched = list(rows) * max(1, -(-batch_size * 4 // len(rows)))  # at least 4 full batches
    predict(batched[:batch_size])
    t = time.perf_counter()
    for i in range(0, len(batched), batch_size):
        predict(batched[i : i + batch_size])
    elapsed = time.perf_counter() - t
    out["throughput_rows_per_s"] = len(batched) / elapsed
    out["throughput_batch_size"] = float(batch_size)
    return out


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


def dir_size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6
