"""The trainer and the operator judge gates with the same function, so they agree on every edge case
(they once disagreed on a teacher metric of 0 and on a missing latency), and report.md renders any report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubestill.api import gates
from kubestill.api.report import EvaluationReport
from kubestill.api.v1alpha1.distillationjob import EvaluationSpec
from kubestill.logic.gates import evaluate_gates
from kubestill_trainer.stages import evaluate
from kubestill_trainer.stages.report_md import render_report
from tests.unit.api.test_gates import CASES

LAT = {"unit": "ms", "batchSize": 1, "samples": 20, "p50": 3.0, "p95": 4.2, "p99": 6.0}


def test_the_trainer_has_no_judge_of_its_own() -> None:
    assert evaluate.judge is gates.judge and evaluate.quality_ratio is gates.quality_ratio
    assert not (Path(evaluate.__file__).parents[1] / "gates.py").exists()


@pytest.mark.parametrize(("evaluation", "changes"), [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_trainer_and_operator_agree(evaluation: dict[str, Any], changes: dict[str, Any]) -> None:
    """What the trainer writes (its verdict inside the report) is what the operator decides on reading it."""
    spec = EvaluationSpec.model_validate(evaluation)
    base = {"primaryMetric": "accuracy", "teacher": {"accuracy": 0.9}, "student": {"accuracy": 0.87}}
    report = EvaluationReport.model_validate({**base, **{k: v for k, v in changes.items() if k != "gate"}})
    report.gate = evaluate.judge(spec, report)  # as run_evaluate does
    operator = evaluate_gates(spec, report.to_wire())
    assert (operator.passed, list(operator.reasons)) == (report.gate.passed, report.gate.reasons)


@pytest.mark.parametrize(
    "metrics",
    [
        {"schemaVersion": 1, "primaryMetric": "accuracy", "testRows": 20, "teacher": {"accuracy": 0.9},
         "student": {"accuracy": 0.8, "f1": None}, "qualityRatio": 0.8889, "speedup": 2.0,
         "gate": {"passed": False, "reasons": ["qualityRatio 0.8889 < minQualityRatio 0.95"]},
         "segments": {"a": {"support": 12, "teacher": {"accuracy": 1.0}, "student": {"accuracy": 0.75}}},
         "latency": {"device": "cpu", "student": LAT, "teacher": {**LAT, "p50": 6.0}},
         "models": {"student": {"params": 10, "sizeMb": 0.1}},
         "rowSets": {"test": {"rows": 20, "goldRows": 18, "teacher": {"accuracy": 0.9},
                              "student": {"accuracy": 0.8, "agreement": 0.85}}},
         "data": {"totalRows": 200, "dropped": {"low confidence": 4}, "droppedShare": 0.02, "missingLabels": 20}},
        # Version 0 (an older trainer's metrics.json) renders too.
        {"primaryMetric": "accuracy", "gate": {"passed": True}, "qualityRatio": 1.0, "testRows": 20,
         "teacher": {"accuracy": 0.9}, "student": {"accuracy": 0.9}, "latency": {}},
    ],
    ids=["v1", "v0"],
)
def test_report_md(metrics: dict[str, Any], tmp_path: Path) -> None:
    text = render_report(metrics, {}, tmp_path)
    assert text.startswith("# Distillation report\n")
    assert ("**Gate: FAILED**" in text) is (not metrics["gate"]["passed"])
    if metrics.get("segments"):
        assert "| a | 12 | 1.0000 | 0.7500 | 0.2500 |" in text and (tmp_path / "segments.png").exists()
        assert "| student | 10 | 0.1000 | 1 | 3.0000 | 4.2000 | 6.0000 | n/a (n/a) |" in text
        assert "| f1 | n/a | n/a |" in text
        assert "| test | 20 | 18 | 0.9000 | 0.8000 | 0.8500 |" in text
        assert "- 200 rows read; dropped by the quality filter: low confidence 4 (share 0.0200)" in text
        assert "- 20 of 200 rows have no gold label" in text
