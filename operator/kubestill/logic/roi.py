"""Return on investment of a distillation: what it cost in GPU hours, what the student saves per day.

Pure: stage durations and GPU counts are passed in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kubestill.api.v1alpha1.distillationjob import CostSpec


@dataclass(frozen=True)
class StageUsage:
    """GPU time of one finished stage."""

    seconds: float
    gpus: int


@dataclass(frozen=True)
class Roi:
    distillation_cost: float
    daily_savings: float
    break_even_days: float | None
    currency: str


def compute_roi(cost: CostSpec, usage: Iterable[StageUsage], speedup: float | None) -> Roi:
    """GPU hours x price; savings = daily volume x (teacher - student) price per request.

    Without a student price the student is assumed to cost the teacher's price divided by the measured
    speedup (serving cost scales with compute time). Break-even is None when there are no savings.
    """
    gpu_hours = sum(max(u.seconds, 0.0) * u.gpus for u in usage) / 3600.0
    spent = gpu_hours * cost.gpu_hour_price
    if cost.student_cost_per_million is not None:
        student_price = cost.student_cost_per_million
    elif speedup and speedup > 0:
        student_price = cost.teacher_cost_per_million / speedup
    else:
        student_price = cost.teacher_cost_per_million
    savings = cost.daily_requests / 1e6 * (cost.teacher_cost_per_million - student_price)
    if savings > 0:
        break_even: float | None = spent / savings
    else:
        break_even = None
    return Roi(
        distillation_cost=round(spent, 4),
        daily_savings=round(savings, 4),
        break_even_days=None if break_even is None else round(break_even, 3),
        currency=cost.currency,
    )
