"""Quality gates and the ROI arithmetic, with worked examples."""

from __future__ import annotations

from typing import Any

import pytest

from kubestill.api.v1alpha1.distillationjob import CostSpec, EvaluationSpec
from kubestill.logic.gates import evaluate_gates, quality_ratio
from kubestill.logic.roi import StageUsage, compute_roi

BASE: dict[str, Any] = {"primaryMetric": "accuracy", "teacher": {"accuracy": 0.9}, "student": {"accuracy": 0.87}}
LAT = {"student": {"unit": "ms", "batchSize": 1, "p50": 3.0, "p95": 4.0, "p99": 5.0}}


@pytest.mark.parametrize(
    ("metrics", "ratio"),
    [(BASE, 0.87 / 0.9), ({**BASE, "qualityRatio": 0.5}, 0.87 / 0.9), ({"primaryMetric": "f1"}, None),
     ({**BASE, "teacher": {"accuracy": 0}}, None)],
    ids=["computed", "recomputed-not-trusted", "malformed", "teacher-zero"],
)
def test_quality_ratio(metrics: dict[str, Any], ratio: float | None) -> None:
    assert quality_ratio(metrics) == (pytest.approx(ratio) if ratio is not None else None)


@pytest.mark.parametrize(
    ("evaluation", "metrics", "passed", "reasons"),
    [
        # The judge's own verdict (its edge cases: tests/unit/api/test_gates.py).
        ({"minQualityRatio": 0.95}, BASE, True, ["qualityRatio 0.9667 (accuracy 0.8700 / 0.9000) >= "]),
        ({"latencyBudgetMs": 5}, {**BASE, "latency": LAT}, True, ["qualityRatio", "4.00 ms at batch 1 <= "]),
        # Version 0, as trainers wrote it before the model: read through the migration.
        ({"latencyBudgetMs": 5}, {**BASE, "latency": {"student": {"batch1_p50_ms": 2, "batch1_p95_ms": 7.5,
                                                                  "batch1_p99_ms": 9}}},
         False, ["qualityRatio", "7.50 ms at batch 1 > latencyBudgetMs 5"]),
        # The trainer's recorded verdict must pass too; a passing one adds nothing.
        ({}, {**BASE, "gate": {"passed": False, "reasons": ["f1 too low"]}}, False,
         ["qualityRatio", "trainer: f1 too low"]),
        ({}, {**BASE, "gate": {"passed": False}}, False, ["qualityRatio", "trainer: gate failed"]),
        # A trainer verdict cannot excuse a gate the operator could not check (they once disagreed here).
        ({"latencyBudgetMs": 5}, {**BASE, "gate": {"passed": True}}, False,
         ["qualityRatio", "latencyBudgetMs: the student's latency was not measured"]),
        # A malformed report: one clear reason, no exception.
        ({}, {"primaryMetric": "accuracy"}, False, ["metrics.json: teacher: Field required (and 1 more)"]),
        ({}, {**BASE, "schemaVersion": 7}, False, ["metrics.json: (top level): schemaVersion 7 is newer"]),
        ({}, {**BASE, "latency": {"student": {"p95": "fast"}}}, False, ["metrics.json: latency.student.p50"]),
    ],
    ids=["pass", "latency", "v0-latency", "trainer-failed", "trainer-failed-no-reason", "latency-missing",
         "malformed", "newer", "wrong-type"],
)
def test_gates(evaluation: dict[str, Any], metrics: dict[str, Any], passed: bool, reasons: list[str]) -> None:
    verdict = evaluate_gates(EvaluationSpec.model_validate(evaluation), metrics)
    assert verdict.passed is passed
    assert len(verdict.reasons) == len(reasons), verdict.reasons
    for got, want in zip(verdict.reasons, reasons, strict=True):
        assert want in got, got


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
