"""Teacher and student timed interleaved, the speedup with a bootstrap interval (kubestill_trainer.latency):
a speedup hidden in noise is called so, a real one is not."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pytest

from kubestill_trainer.latency import PairedLatency, measure_pair, speedup_interval
from kubestill_trainer.tasks.base import Row


@pytest.mark.parametrize(("teacher", "student", "inside"), [
    # Worked example: every teacher call 4 ms, every student call 1 ms: the ratio of medians is 4 in every
    # resample, so the interval is [4, 4].
    pytest.param([4.0] * 20, [1.0] * 20, (4.0, 4.0), id="constant-4x"),
    # Same distribution on both sides: the interval straddles 1.
    pytest.param(list(np.random.default_rng(1).lognormal(0, 0.5, 200)),
                 list(np.random.default_rng(2).lognormal(0, 0.5, 200)), None, id="same-noise"),
])
def test_speedup_interval(teacher: list[float], student: list[float], inside: tuple[float, float] | None) -> None:
    interval = speedup_interval(teacher, student)
    assert interval is not None
    if inside is None:
        assert interval[0] < 1.0 < interval[1], interval
    else:
        assert interval == pytest.approx(inside)


def test_too_few_pairs_have_no_interval() -> None:
    assert speedup_interval([2.0] * 9, [1.0] * 9) is None
    assert PairedLatency([1.0], [2.0], 2.0, None).distinguishable is None


def _sleeper(ms: float) -> object:
    def call(rows: Sequence[Row]) -> None:
        time.sleep(ms / 1000)
    return call


def test_measure_pair_times_both_on_the_same_rows_interleaved() -> None:
    rows = [Row(str(i), f"text {i}") for i in range(5)]
    order: list[str] = []

    def tracked(name: str, ms: float) -> object:
        inner = _sleeper(ms)

        def call(rs: Sequence[Row]) -> None:
            order.append(name)
            inner(rs)  # type: ignore[operator]
        return call

    pair = measure_pair(tracked("s", 1.0), tracked("t", 5.0), rows, single=20, warmup=1)  # type: ignore[arg-type]
    assert pair is not None
    assert len(pair.student_ms) == len(pair.teacher_ms) == 20
    timed = order[2:]  # after one warm-up call of each
    assert timed[:4] == ["s", "t", "t", "s"]  # the order alternates row by row
    assert pair.speedup > 2 and pair.distinguishable is True
