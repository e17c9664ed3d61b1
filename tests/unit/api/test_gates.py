"""The one gate judge, table-driven: every edge case of kubestill.api.gates' docstring table, worked out."""

from __future__ import annotations

from typing import Any

import pytest

from kubestill.api.gates import judge, quality_ratio
from kubestill.api.report import EvaluationReport
from kubestill.api.v1alpha1.distillationjob import EvaluationSpec

LAT = {"unit": "ms", "batchSize": 1, "samples": 100, "p50": 3.0, "p95": 4.2, "p99": 6.0}
SEG = {"a": {"support": 40, "teacher": {"accuracy": 0.9}, "student": {"accuracy": 0.85}},
       "b": {"support": 30, "teacher": {"accuracy": 0.8}, "student": {"accuracy": 0.6}}}


def _report(**changes: Any) -> EvaluationReport:
    base: dict[str, Any] = {"schemaVersion": 1, "primaryMetric": "accuracy", "teacher": {"accuracy": 0.9},
                            "student": {"accuracy": 0.87}}
    return EvaluationReport.model_validate({**base, **changes})


CASES: list[tuple[str, dict[str, Any], dict[str, Any], bool, list[str]]] = [
    # id, spec.evaluation, report changes, passed, a phrase of each reason line in order
    ("ratio-above-minimum", {"minQualityRatio": 0.95}, {}, True,
     ["qualityRatio 0.9667 (accuracy 0.8700 / 0.9000) >= minQualityRatio 0.95"]),
    ("ratio-below-minimum", {"minQualityRatio": 0.98}, {}, False,
     ["qualityRatio 0.9667 (accuracy 0.8700 / 0.9000) < minQualityRatio 0.98"]),
    ("ratio-at-minimum-passes", {"minQualityRatio": 0.5}, {"student": {"accuracy": 0.45}}, True,
     ["qualityRatio 0.5000 (accuracy 0.4500 / 0.9000) >= minQualityRatio 0.5"]),
    ("student-better-than-teacher", {"minQualityRatio": 0.95}, {"student": {"accuracy": 0.99}}, True,
     ["qualityRatio 1.1000 (accuracy 0.9900 / 0.9000) >= minQualityRatio 0.95"]),
    ("teacher-zero", {}, {"teacher": {"accuracy": 0.0}, "student": {"accuracy": 0.3}}, False,
     ["qualityRatio undefined: the teacher's accuracy is 0.0000 (<= 0), so the metric does not measure what the "
      "teacher does: choose another evaluation.primaryMetric"]),
    ("teacher-and-student-zero", {}, {"teacher": {"accuracy": 0.0}, "student": {"accuracy": 0.0}}, False,
     ["qualityRatio undefined"]),
    ("teacher-negative", {}, {"primaryMetric": "kendall_tau", "teacher": {"kendall_tau": -0.2},
                              "student": {"kendall_tau": -0.3}}, False, ["qualityRatio undefined"]),
    ("teacher-missing", {}, {"teacher": {"f1": 0.9}}, False,
     ["primary metric 'accuracy' was not measured (measured: accuracy)"]),
    ("teacher-null", {}, {"teacher": {"accuracy": None}}, False, ["primary metric 'accuracy' was not measured"]),
    ("student-missing", {}, {"student": {"f1": 0.87}}, False,
     ["primary metric 'accuracy' was not measured (measured: f1)"]),
    ("descriptive-primary", {}, {"primaryMetric": "mean_length", "teacher": {"mean_length": 12.0},
                                 "student": {"mean_length": 11.0}}, False, ["describes the data"]),
    ("segment-drop-too-large", {"minQualityRatio": 0.5, "maxSegmentDrop": 0.1}, {"segments": SEG}, False,
     ["qualityRatio", "largest segment drop 0.2000 in 'b' (30 rows) > maxSegmentDrop 0.1"]),
    ("segment-drop-within", {"minQualityRatio": 0.5, "maxSegmentDrop": 0.25}, {"segments": SEG}, True,
     ["qualityRatio", "largest segment drop 0.2000 in 'b' (30 rows) <= maxSegmentDrop 0.25"]),
    ("segments-empty", {"maxSegmentDrop": 0.1}, {}, False,
     ["qualityRatio", "maxSegmentDrop: no segments in the test split"]),
    ("segment-below-support-skipped", {"maxSegmentDrop": 0.1, "minSegmentSupport": 35}, {"segments": SEG}, True,
     ["qualityRatio", "largest segment drop 0.0500 in 'a' (40 rows) <= maxSegmentDrop 0.1; skipped under "
      "minSegmentSupport 35 rows: b"]),
    ("every-segment-below-support", {"maxSegmentDrop": 0.1, "minSegmentSupport": 50}, {"segments": SEG}, False,
     ["qualityRatio", "maxSegmentDrop: no segment could be judged; skipped under minSegmentSupport 50 rows: a, b"]),
    ("segment-without-primary-skipped", {"maxSegmentDrop": 0.1},
     {"segments": {**SEG, "b": {"support": 30, "teacher": {"accuracy": None}, "student": {}}}}, True,
     ["qualityRatio", "in 'a' (40 rows) <= maxSegmentDrop 0.1; skipped without accuracy: b"]),
    ("student-better-in-a-segment", {"maxSegmentDrop": 0.0},
     {"segments": {"a": {"support": 9, "teacher": {"accuracy": 0.5}, "student": {"accuracy": 0.7}}}}, True,
     ["qualityRatio", "largest segment drop -0.2000 in 'a' (9 rows) <= maxSegmentDrop 0"]),
    ("latency-within-budget", {"latencyBudgetMs": 5}, {"latency": {"student": LAT}}, True,
     ["qualityRatio", "student p95 latency 4.20 ms at batch 1 <= latencyBudgetMs 5"]),
    ("latency-at-budget-passes", {"latencyBudgetMs": 4.2}, {"latency": {"student": LAT}}, True,
     ["qualityRatio", "<= latencyBudgetMs 4.2"]),
    ("latency-over-budget", {"latencyBudgetMs": 4}, {"latency": {"student": LAT}}, False,
     ["qualityRatio", "student p95 latency 4.20 ms at batch 1 > latencyBudgetMs 4"]),
    ("latency-not-measured", {"latencyBudgetMs": 5}, {}, False,
     ["qualityRatio", "latencyBudgetMs: the student's latency was not measured"]),
    ("latency-without-budget-not-judged", {}, {"latency": {"student": {**LAT, "p95": 900.0}}}, True,
     ["qualityRatio"]),
    ("every-gate-one-line", {"minQualityRatio": 0.97, "maxSegmentDrop": 0.3, "latencyBudgetMs": 5},
     {"segments": SEG, "latency": {"student": LAT}}, False,
     ["qualityRatio 0.9667 (accuracy 0.8700 / 0.9000) < minQualityRatio 0.97", "<= maxSegmentDrop 0.3",
      "<= latencyBudgetMs 5"]),
    ("own-gate-ignored", {"minQualityRatio": 0.95}, {"gate": {"passed": False, "reasons": ["stale"]}}, True,
     ["qualityRatio"]),
]


@pytest.mark.parametrize(("evaluation", "changes", "passed", "reasons"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_judge(evaluation: dict[str, Any], changes: dict[str, Any], passed: bool, reasons: list[str]) -> None:
    verdict = judge(EvaluationSpec.model_validate(evaluation), _report(**changes))
    assert verdict.passed is passed, verdict.reasons
    assert len(verdict.reasons) == len(reasons), verdict.reasons
    for got, want in zip(verdict.reasons, reasons, strict=True):
        assert want in got, got


@pytest.mark.parametrize(
    ("student", "teacher", "want"),
    [(0.9, 0.9, 1.0), (0.45, 0.9, 0.5), (0.99, 0.9, 1.1), (0.0, 0.0, None), (0.5, 0.0, None), (0.1, -0.2, None),
     (None, 0.9, None), (0.9, None, None)],
)
def test_quality_ratio(student: float | None, teacher: float | None, want: float | None) -> None:
    got = quality_ratio(student, teacher)
    assert got == (pytest.approx(want) if want is not None else None)


def test_worked_examples_in_docstrings() -> None:
    import doctest

    from kubestill.api import gates

    result = doctest.testmod(gates)
    assert result.attempted > 0 and result.failed == 0
