"""Gate verdicts from spec.evaluation: one reason per gate, table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from kubestill.api.v1alpha1.distillationjob import EvaluationSpec
from kubestill_trainer.gates import judge, quality_ratio

T = {"accuracy": 0.90}
SEG = {"a": {"teacher": {"accuracy": 0.9}, "student": {"accuracy": 0.85}},
       "b": {"teacher": {"accuracy": 0.8}, "student": {"accuracy": 0.6}}}


@pytest.mark.parametrize(
    ("evaluation", "student", "segments", "p95", "passed", "reasons"),
    [
        ({"minQualityRatio": 0.95}, {"accuracy": 0.87}, {}, None, True, ["quality ratio 0.9667"]),
        ({"minQualityRatio": 0.98}, {"accuracy": 0.87}, {}, None, False, ["< minQualityRatio 0.98"]),
        ({"minQualityRatio": 0.5, "maxSegmentDrop": 0.1}, {"accuracy": 0.87}, SEG, None, False,
         ["quality ratio", "largest segment drop 0.2000 in 'b' > maxSegmentDrop 0.1"]),
        ({"minQualityRatio": 0.5, "maxSegmentDrop": 0.25}, {"accuracy": 0.87}, SEG, None, True,
         ["quality ratio", "<= maxSegmentDrop 0.25"]),
        ({"minQualityRatio": 0.5, "maxSegmentDrop": 0.1}, {"accuracy": 0.87}, {}, None, True,
         ["quality ratio", "no segments to check"]),
        ({"minQualityRatio": 0.5, "latencyBudgetMs": 5}, {"accuracy": 0.87}, {}, 4.2, True,
         ["quality ratio", "4.20 ms at batch 1 <= latencyBudgetMs 5"]),
        ({"minQualityRatio": 0.5, "latencyBudgetMs": 5}, {"accuracy": 0.87}, {}, 7.0, False,
         ["quality ratio", "> latencyBudgetMs 5"]),
        ({"minQualityRatio": 0.5, "latencyBudgetMs": 5}, {"accuracy": 0.87}, {}, None, False,
         ["quality ratio", "not measured"]),
        ({"minQualityRatio": 0.5}, {"f1": 0.87}, {}, None, False, ["primary metric 'accuracy' was not measured"]),
    ],
)
def test_judge(evaluation: dict[str, Any], student: dict[str, float], segments: dict[str, Any],
               p95: float | None, passed: bool, reasons: list[str]) -> None:
    verdict = judge(EvaluationSpec.model_validate(evaluation), "accuracy", T, student, segments, p95)
    assert verdict.passed is passed
    assert len(verdict.reasons) == len(reasons)
    for got, want in zip(verdict.reasons, reasons, strict=True):
        assert want in got


@pytest.mark.parametrize(("s", "t", "want"), [(0.9, 0.9, 1.0), (0.45, 0.9, 0.5), (0.0, 0.0, 1.0)])
def test_quality_ratio(s: float, t: float, want: float) -> None:
    assert quality_ratio(s, t) == pytest.approx(want)
