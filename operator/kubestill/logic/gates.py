"""Quality gates: may the student be published? Pure; decided from the evaluate stage's metrics.json.

The trainer writes its own verdict into metrics.json; the operator re-checks the gates it can see in the
numbers (quality ratio, per-segment drop, latency) against the spec, so a stale or differently configured
trainer image cannot publish a student the spec forbids. Both must pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubestill.api.v1alpha1.distillationjob import EvaluationSpec


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reasons: tuple[str, ...]


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def quality_ratio(metrics: Mapping[str, Any]) -> float | None:
    """qualityRatio as reported, else student / teacher on the primary metric."""
    ratio = _num(metrics.get("qualityRatio"))
    if ratio is not None:
        return ratio
    primary = metrics.get("primaryMetric")
    teacher = _num((metrics.get("teacher") or {}).get(primary))
    student = _num((metrics.get("student") or {}).get(primary))
    if teacher is None or student is None or teacher == 0:
        return None
    return student / teacher


def segment_drops(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Teacher minus student on the primary metric per segment.

    Accepts {"seg": {"teacher": 0.9, "student": 0.8}} and {"seg": {"teacher": {metric: v}, "student": {...}}}.
    """
    primary = metrics.get("primaryMetric")
    out: dict[str, float] = {}
    for name, seg in (metrics.get("segments") or {}).items():
        if not isinstance(seg, Mapping):
            continue
        teacher, student = seg.get("teacher"), seg.get("student")
        if isinstance(teacher, Mapping) and isinstance(student, Mapping):
            teacher, student = teacher.get(primary), student.get(primary)
        t, s = _num(teacher), _num(student)
        if t is not None and s is not None:
            out[str(name)] = t - s
    return out


def student_p95_ms(metrics: Mapping[str, Any]) -> float | None:
    """Student p95 latency in ms at batch 1: latency.student.batch1_p95_ms (what the trainer writes),
    latency.student.p95Ms or latency.studentP95Ms."""
    latency = metrics.get("latency") or {}
    student = latency.get("student")
    if isinstance(student, Mapping):
        for key in ("batch1_p95_ms", "p95Ms"):
            found = _num(student.get(key))
            if found is not None:
                return found
    return _num(latency.get("studentP95Ms"))


def evaluate_gates(evaluation: EvaluationSpec, metrics: Mapping[str, Any]) -> Verdict:
    """The operator's verdict: every configured gate, plus the trainer's own verdict when it gave one."""
    reasons: list[str] = []
    passed = True
    trainer_gate = metrics.get("gate") if isinstance(metrics.get("gate"), Mapping) else None

    ratio = quality_ratio(metrics)
    if ratio is None:
        passed = False
        reasons.append("qualityRatio: missing from metrics.json")
    else:
        ok = ratio >= evaluation.min_quality_ratio
        passed &= ok
        sign = ">=" if ok else "<"
        reasons.append(f"qualityRatio {ratio:.4f} {sign} {evaluation.min_quality_ratio:g}")

    if evaluation.max_segment_drop is not None:
        drops = segment_drops(metrics)
        if drops:
            worst_name, worst = max(drops.items(), key=lambda kv: kv[1])
            ok = worst <= evaluation.max_segment_drop
            passed &= ok
            sign = "<=" if ok else ">"
            reasons.append(f"segment drop {worst:.4f} ({worst_name}) {sign} {evaluation.max_segment_drop:g}")
        elif trainer_gate is None:
            passed = False
            reasons.append("maxSegmentDrop: no per-segment metrics in metrics.json")

    if evaluation.latency_budget_ms is not None:
        p95 = student_p95_ms(metrics)
        if p95 is not None:
            ok = p95 <= evaluation.latency_budget_ms
            passed &= ok
            sign = "<=" if ok else ">"
            reasons.append(f"student p95 {p95:.2f} ms {sign} budget {evaluation.latency_budget_ms:g} ms")
        elif trainer_gate is None:
            passed = False
            reasons.append("latencyBudgetMs: no student latency in metrics.json")

    if trainer_gate is not None:
        trainer_passed = bool(trainer_gate.get("passed"))
        passed &= trainer_passed
        if not trainer_passed:
            extra = [str(r) for r in trainer_gate.get("reasons") or []]
            reasons.append("trainer: " + ("; ".join(extra) if extra else "gate failed"))
    return Verdict(passed=passed, reasons=tuple(reasons))
