"""The quality gates of `spec.evaluation`, decided once: may the student be published?

`judge` is the only implementation. The trainer calls it to write its verdict into metrics.json and
report.md; the operator calls it again on the same report with the job's spec (a stale or differently built
trainer image cannot publish a student the spec forbids). Same function, same inputs: same verdict.
It lives in kubestill.api because the trainer may import nothing else of the operator. Pure.

Every configured gate adds one reason line, passed or not; a gate that is configured but cannot be checked
FAILS (nothing a user asked for is silently skipped). Boundaries pass: ratio == minQualityRatio,
drop == maxSegmentDrop and p95 == latencyBudgetMs are all within the gate.

| case                                               | verdict | why                                          |
|----------------------------------------------------|---------|----------------------------------------------|
| primary metric missing or null, teacher or student | fail    | nothing to compare                           |
| primary metric is descriptive (mean_length, ...)   | fail    | it measures no quality                       |
| teacher primary <= 0 (student anything)            | fail    | ratio undefined (x/0) or inverted (x/-y)     |
| student better than teacher (ratio > 1)            | pass    | the gate bounds a loss, not a gain           |
| maxSegmentDrop unset                               | -       | no line                                      |
| maxSegmentDrop set, no segments                    | fail    | the segment gate could not be checked        |
| segment support < minSegmentSupport                | skipped | named in the line; too few rows to judge     |
| segment without the primary metric (null)          | skipped | named in the line                            |
| maxSegmentDrop set, every segment skipped          | fail    | the segment gate could not be checked        |
| student better than teacher in a segment           | pass    | a negative drop                              |
| latencyBudgetMs unset                              | -       | no line                                      |
| latencyBudgetMs set, student latency not measured  | fail    | the latency gate could not be checked        |

Teacher at 0: the trainer once passed it (an infinite ratio) and the operator failed it (as missing). A
teacher scoring 0 on the primary metric means the metric does not measure what the teacher does (no gold
labels, a metric of another task); any student "keeps 100%" of nothing, so the ratio says nothing: fail, and
the reason says to pick another primaryMetric. A negative teacher score (Kendall tau) would invert the ratio.

No latency with a budget: the operator once passed it when the trainer had a verdict. A budget is a promise
the user asked for; a student whose latency nobody measured has not kept it.

Lower-is-better metrics: none. Every metric the tasks report for judging is higher-is-better (accuracy, F1,
precision, recall, nDCG, MRR, MAP, ROUGE-L, token F1, exact match, cosine, agreement, Kendall tau);
`mean_length` and `gold_labels` describe the data and are refused as a primary metric.
"""

from __future__ import annotations

from .report import EvaluationReport, LatencyFigures, SegmentReport
from .v1alpha1.distillationjob import EvaluationSpec, GateVerdict

# Figures the tasks report that are not quality: a ratio of them means nothing.
DESCRIPTIVE_METRICS = frozenset({"mean_length", "gold_labels"})


def quality_ratio(student: float | None, teacher: float | None) -> float | None:
    """student / teacher on the primary metric; None when undefined (either missing, or teacher <= 0).

    >>> quality_ratio(0.87, 0.9)
    0.9666666666666667
    >>> quality_ratio(0.95, 0.9) > 1  # a student better than its teacher
    True
    >>> quality_ratio(0.0, 0.0) is None and quality_ratio(0.5, None) is None
    True
    """
    if student is None or teacher is None or teacher <= 0:
        return None
    return student / teacher


def _quality(evaluation: EvaluationSpec, report: EvaluationReport) -> tuple[bool, str]:
    primary = report.primary_metric
    wanted = evaluation.primary_metric
    if wanted and wanted != primary:  # e.g. a trainer image configured otherwise: judge only what was asked
        return False, f"metrics.json's primaryMetric is {primary!r}, evaluation.primaryMetric asks for {wanted!r}"
    if primary in DESCRIPTIVE_METRICS:
        return False, f"primaryMetric {primary!r} describes the data, it does not measure quality: choose another"
    teacher, student = report.teacher.get(primary), report.student.get(primary)
    if teacher is None or student is None:
        measured = ", ".join(sorted(k for k, v in report.student.items() if v is not None)) or "none"
        return False, f"primary metric {primary!r} was not measured (measured: {measured})"
    ratio = quality_ratio(student, teacher)
    if ratio is None:
        return False, (f"qualityRatio undefined: the teacher's {primary} is {teacher:.4f} (<= 0), so the metric "
                       "does not measure what the teacher does: choose another evaluation.primaryMetric")
    ok = ratio >= evaluation.min_quality_ratio
    return ok, (f"qualityRatio {ratio:.4f} ({primary} {student:.4f} / {teacher:.4f}) "
                f"{'>=' if ok else '<'} minQualityRatio {evaluation.min_quality_ratio:g}")


def _drop(segment: SegmentReport, primary: str) -> float | None:
    teacher, student = segment.teacher.get(primary), segment.student.get(primary)
    return None if teacher is None or student is None else teacher - student


def _segments(max_drop: float, min_support: int, report: EvaluationReport) -> tuple[bool, str]:
    if not report.segments:
        return False, ("maxSegmentDrop: no segments in the test split (set data.fields.segment to a field the "
                       "test rows have)")
    small = sorted(n for n, s in report.segments.items() if s.support < min_support)
    drops = {n: d for n, s in report.segments.items()
             if n not in small and (d := _drop(s, report.primary_metric)) is not None}
    unmeasured = sorted(set(report.segments) - set(small) - set(drops))
    skipped = "".join([
        f"; skipped under minSegmentSupport {min_support} rows: {', '.join(small)}" if small else "",
        f"; skipped without {report.primary_metric}: {', '.join(unmeasured)}" if unmeasured else "",
    ])
    if not drops:
        return False, f"maxSegmentDrop: no segment could be judged{skipped}"
    worst = max(drops, key=lambda name: drops[name])
    ok = drops[worst] <= max_drop
    return ok, (f"largest segment drop {drops[worst]:.4f} in {worst!r} ({report.segments[worst].support} rows) "
                f"{'<=' if ok else '>'} maxSegmentDrop {max_drop:g}{skipped}")


def _latency(budget_ms: float, student: LatencyFigures | None) -> tuple[bool, str]:
    if student is None:
        return False, "latencyBudgetMs: the student's latency was not measured"
    ok = student.p95 <= budget_ms
    return ok, (f"student p95 latency {student.p95:.2f} {student.unit} at batch {student.batch_size} "
                f"{'<=' if ok else '>'} latencyBudgetMs {budget_ms:g}")


def judge(evaluation: EvaluationSpec, report: EvaluationReport) -> GateVerdict:
    """Every gate of `evaluation` on `report` (its own `gate` is ignored): passed when all pass, one reason
    line per configured gate, in the order quality ratio, segments, latency.

    >>> from kubestill.api.report import EvaluationReport
    >>> report = EvaluationReport(primary_metric="accuracy", teacher={"accuracy": 0.9}, student={"accuracy": 0.87})
    >>> judge(EvaluationSpec(min_quality_ratio=0.95), report).reasons
    ['qualityRatio 0.9667 (accuracy 0.8700 / 0.9000) >= minQualityRatio 0.95']
    >>> judge(EvaluationSpec(min_quality_ratio=0.95, latency_budget_ms=20), report).passed
    False
    """
    checks = [_quality(evaluation, report)]
    if evaluation.max_segment_drop is not None:
        checks.append(_segments(evaluation.max_segment_drop, evaluation.min_segment_support, report))
    if evaluation.latency_budget_ms is not None:
        checks.append(_latency(evaluation.latency_budget_ms, report.latency.student))
    return GateVerdict(passed=all(ok for ok, _ in checks), reasons=[reason for _, reason in checks])
