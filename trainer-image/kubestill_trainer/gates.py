"""The quality gates of `spec.evaluation` as a pure function: one reason line per gate, pass or fail."""

from __future__ import annotations

import math
from collections.abc import Mapping

from kubestill.api.v1alpha1.distillationjob import EvaluationSpec, GateVerdict


def quality_ratio(student: float, teacher: float) -> float:
    """student / teacher on the primary metric (a teacher at 0 gives 1 if the student is too, else inf)."""
    if teacher == 0:
        return 1.0 if student == 0 else math.inf
    return student / teacher


def judge(
    evaluation: EvaluationSpec,
    primary: str,
    teacher: Mapping[str, float],
    student: Mapping[str, float],
    segments: Mapping[str, Mapping[str, Mapping[str, float]]],
    student_p95_ms: float | None,
) -> GateVerdict:
    """segments: {segment: {"teacher": {metric: v}, "student": {metric: v}}}."""
    reasons: list[str] = []
    passed = True
    if primary not in teacher or primary not in student:
        return GateVerdict(passed=False, reasons=[f"primary metric {primary!r} was not measured "
                                                   f"(measured: {', '.join(sorted(student)) or 'none'})"])
    ratio = quality_ratio(student[primary], teacher[primary])
    ok = ratio >= evaluation.min_quality_ratio
    passed &= ok
    reasons.append(f"quality ratio {ratio:.4f} ({primary} {student[primary]:.4f} / {teacher[primary]:.4f}) "
                   f"{'>=' if ok else '<'} minQualityRatio {evaluation.min_quality_ratio}")
    if evaluation.max_segment_drop is not None:
        drops = {name: seg["teacher"][primary] - seg["student"][primary]
                 for name, seg in segments.items() if primary in seg["teacher"] and primary in seg["student"]}
        if not drops:
            reasons.append("maxSegmentDrop: no segments to check (data.fields.segment unset or empty)")
        else:
            worst = max(drops, key=lambda k: drops[k])
            ok = drops[worst] <= evaluation.max_segment_drop
            passed &= ok
            reasons.append(f"largest segment drop {drops[worst]:.4f} in {worst!r} "
                           f"{'<=' if ok else '>'} maxSegmentDrop {evaluation.max_segment_drop}")
    if evaluation.latency_budget_ms is not None:
        if student_p95_ms is None:
            passed = False
            reasons.append("latencyBudgetMs: student latency was not measured")
        else:
            ok = student_p95_ms <= evaluation.latency_budget_ms
            passed &= ok
            reasons.append(f"student p95 latency {student_p95_ms:.2f} ms at batch 1 "
                           f"{'<=' if ok else '>'} latencyBudgetMs {evaluation.latency_budget_ms}")
    return GateVerdict(passed=passed, reasons=reasons)
