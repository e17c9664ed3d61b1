"""Quality gates: may the student be published? Pure; decided from the evaluate stage's metrics.json.

The operator reads metrics.json through kubestill.api.report and judges it with kubestill.api.gates.judge,
the function the trainer used to write its own verdict, against the job's spec: a stale or differently
configured trainer image cannot publish a student the spec forbids. The trainer's recorded verdict must pass
too (an older trainer image may check what this operator does not know of).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubestill.api import gates
from kubestill.api.report import EvaluationReport, ReportError, load_report
from kubestill.api.v1alpha1.distillationjob import EvaluationSpec


@dataclass(frozen=True)
class Verdict:
    """The operator's decision: `passed`, and one human line per gate (what status.gate and GatePassed show)."""

    passed: bool
    reasons: tuple[str, ...]


def quality_ratio(metrics: Mapping[str, Any]) -> float | None:
    """student / teacher on the primary metric of metrics.json (kubestill.api.gates.quality_ratio); None when
    the report is malformed or the ratio undefined."""
    try:
        report = load_report(metrics)
    except ReportError:
        return None
    return ratio_of(report)


def ratio_of(report: EvaluationReport) -> float | None:
    """The quality ratio of a parsed report."""
    primary = report.primary_metric
    return gates.quality_ratio(report.student.get(primary), report.teacher.get(primary))


def evaluate_gates(evaluation: EvaluationSpec, metrics: Mapping[str, Any]) -> Verdict:
    """The operator's verdict on metrics.json (the parsed JSON object): every configured gate judged by
    kubestill.api.gates.judge, and the trainer's own verdict when it recorded one. A report that does not
    parse fails with the parse error as its one reason (e.g. "metrics.json: student: Field required")."""
    try:
        report = load_report(metrics)
    except ReportError as err:
        return Verdict(passed=False, reasons=(str(err),))
    verdict = gates.judge(evaluation, report)
    reasons = list(verdict.reasons)
    passed = verdict.passed
    if report.gate is not None and not report.gate.passed:
        passed = False
        if report.gate.reasons != verdict.reasons:  # the same judge on the same spec says nothing new
            reasons.append("trainer: " + ("; ".join(report.gate.reasons) or "gate failed"))
    return Verdict(passed=passed, reasons=tuple(reasons))
