"""Quality gates and the ROI arithmetic, with worked examples."""

from __future__ import annotations

from typing import Any

import pytest

from kubestill.api.v1alpha1.distillationjob import CostSpec, EvaluationSpec
from kubestill.logic.gates import evaluate_gates, quality_ratio, segment_drops
from kubestill.logic.roi import StageUsage, compute_roi

BASE: dict[str, Any] = {"primaryMetric": "accuracy", "teacher": {"accuracy": 0.9}, "student": {"accuracy": 0.87}}


@pytest.mark.parametrize(
    ("metrics", "ratio"),
    [(BASE, 0.87 / 0.9), ({**BASE, "qualityRatio": 0.5}, 0.5), ({"primaryMetric": "f1"}, None),
     ({**BASE, "teacher": {"accuracy": 0}}, None)],
)
def test_quality_ratio(metrics: dict[str, Any], ratio: float | None) -> None:
    assert quality_ratio(metrics) == (pytest.approx(ratio) if ratio is not None else None)


@pytest.mark.parametrize(
    ("evaluation", "metrics", "passed", "needle"),
    [
        ({"minQualityRatio": 0.95}, BASE, True, "qualityRatio 0.9667 >= 0.95"),
        ({"minQualityRatio": 0.99}, BASE, False, "qualityRatio 0.9667 < 0.99"),
        ({}, {"primaryMetric": "accuracy"}, False, "missing"),
        ({"maxSegmentDrop": 0.05}, {**BASE, "segments": {"sport": {"teacher": 0.9, "student": 0.8}}}, False,
         "segment drop 0.1000 (sport) > 0.05"),
        ({"maxSegmentDrop": 0.2},
         {**BASE, "segments": {"tech": {"teacher": {"accuracy": 0.9}, "student": {"accuracy": 0.85}}}}, True,
         "(tech) <= 0.2"),
        ({"maxSegmentDrop": 0.2}, BASE, False, "no per-segment metrics"),
        ({"latencyBudgetMs": 5}, {**BASE, "latency": {"student": {"p95Ms": 7.5}}}, False, "7.50 ms > budget 5"),
        ({"latencyBudgetMs": 5}, {**BASE, "latency": {"studentP95Ms": 2}}, True, "2.00 ms <= budget 5"),
        ({"latencyBudgetMs": 5}, {**BASE, "latency": {"student": {"batch1_p95_ms": 4}}}, True, "4.00 ms"),
        ({}, {**BASE, "gate": {"passed": False, "reasons": ["f1 too low"]}}, False, "trainer: f1 too low"),
        ({"latencyBudgetMs": 5}, {**BASE, "gate": {"passed": True}}, True, "qualityRatio"),
    ],
)
def test_gates(evaluation: dict[str, Any], metrics: dict[str, Any], passed: bool, needle: str) -> None:
    verdict = evaluate_gates(EvaluationSpec.model_validate(evaluation), metrics)
    assert verdict.passed is passed
    assert any(needle in r for r in verdict.reasons), verdict.reasons


def test_segment_drops_skip_malformed() -> None:
    assert segment_drops({**BASE, "segments": {"a": "x", "b": {"teacher": 1.0, "student": 0.5}}}) == {"b": 0.5}


@pytest.mark.parametrize(
    ("cost", "usage", "speedup", "expected"),
    [
        # 2 GPU-hours at 3/h = 6; 1M/day x (10 - 10/5) = 8/day; break-even 0.75 days.
        ({"gpuHourPrice": 3, "teacherCostPerMillion": 10, "dailyRequests": 1_000_000},
         [StageUsage(3600, 1), StageUsage(1800, 2)], 5.0, (6.0, 8.0, 0.75)),
        # explicit student price; CPU-only stages cost nothing
        ({"gpuHourPrice": 3, "teacherCostPerMillion": 10, "studentCostPerMillion": 4, "dailyRequests": 500_000},
         [StageUsage(3600, 0)], None, (0.0, 3.0, 0.0)),
        # no speedup known, no student price: no savings, no break-even
        ({"gpuHourPrice": 3, "teacherCostPerMillion": 10, "dailyRequests": 1000}, [StageUsage(3600, 1)], None,
         (3.0, 0.0, None)),
    ],
)
def test_roi(cost: dict[str, Any], usage: list[StageUsage], speedup: float | None,
             expected: tuple[float, float, float | None]) -> None:
    roi = compute_roi(CostSpec.model_validate(cost), usage, speedup)
    assert (roi.distillation_cost, roi.daily_savings, roi.break_even_days) == expected
