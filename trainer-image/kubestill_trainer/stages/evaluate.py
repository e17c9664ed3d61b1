"""evaluate: teacher and student on the held-out test split: quality metrics overall and per segment,
latency (batch 1 percentiles, batched throughput), parameters, size on disk, and the gate verdict.
Output: eval/metrics.json (a kubestill.api.report.EvaluationReport, the operator's contract), eval/report.md,
eval/*.png; metrics.json is also sent over the report channel."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kubestill.api.gates import judge, quality_ratio
from kubestill.api.report import (
    DataReport,
    EvaluationReport,
    LatencyFigures,
    LatencyReport,
    ModelSize,
    RowSetReport,
    SegmentReport,
)

from ..context import RunContext
from ..labelstore import CONFIDENCE, TEST_DROPPED, Labels, load_labels
from ..latency import dir_size_mb, figures, load_average, measure_figures, measure_pair, throughput
from ..outputs import Array
from ..storage import resolve_uri, write_json
from ..tasks.base import Predictions, Row, TaskModel
from ..tasks.encoder import param_count
from .report_md import render_report

log = logging.getLogger(__name__)
LATENCY_BATCH = 32


def _take(pred: Mapping[str, Array], idx: list[int]) -> Predictions:
    return {k: v[idx] for k, v in pred.items()}


def segment_metrics(ctx: RunContext, rows: Sequence[Row], student: Predictions, teacher: Predictions,
                    meta: Mapping[str, Any]) -> dict[str, SegmentReport]:
    """Teacher and student metrics on the test rows of each segment, with the segment's row count."""
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        if r.segment is not None:
            groups.setdefault(r.segment, []).append(i)
    out = {}
    for name, idx in sorted(groups.items()):
        seg_rows = [rows[i] for i in idx]
        t, s = _take(teacher, idx), _take(student, idx)
        out[name] = SegmentReport(support=len(idx), teacher=ctx.task.metrics(t, t, seg_rows, meta),
                                  student=ctx.task.metrics(s, t, seg_rows, meta))
    return out


def model_latency(ctx: RunContext, model: TaskModel, rows: Sequence[Row]) -> LatencyFigures | None:
    sample = list(rows[:256])
    return measure_figures(lambda rs: ctx.task.predict(model, rs, len(rs)), sample, batch_size=LATENCY_BATCH,
                           single=min(100, max(20, len(sample))))


def paired_latency(ctx: RunContext, latency: LatencyReport, student: TaskModel, teacher: TaskModel,
                   rows: Sequence[Row]) -> None:
    """Fill `latency` with both models timed interleaved on the same rows (latency.measure_pair), their batched
    throughputs, and the speedup's bootstrap interval."""
    sample = list(rows[:256])
    if not sample:
        return
    calls = {name: (lambda m: lambda rs: ctx.task.predict(m, rs, len(rs)))(model)
             for name, model in (("student", student), ("teacher", teacher))}
    pair = measure_pair(calls["student"], calls["teacher"], sample, single=min(100, max(20, len(sample))))
    assert pair is not None
    latency.student = figures(pair.student_ms, throughput(calls["student"], sample, LATENCY_BATCH), LATENCY_BATCH)
    latency.teacher = figures(pair.teacher_ms, throughput(calls["teacher"], sample, LATENCY_BATCH), LATENCY_BATCH)
    latency.speedup_interval = list(pair.interval) if pair.interval else None
    latency.speedup_distinguishable = pair.distinguishable
    print(f"latency: speedup {pair.speedup:.2f}x at batch 1"
          + (f", 95% interval [{pair.interval[0]:.2f}, {pair.interval[1]:.2f}]" if pair.interval else "")
          + ("" if pair.distinguishable is not False else ": not distinguishable from 1 on this machine")
          + f" (load average {latency.load_average})", flush=True)


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return None if numerator is None or not denominator else numerator / denominator


def _latency_and_sizes(ctx: RunContext, student: TaskModel, student_dir: Path,
                       rows: Sequence[Row]) -> tuple[LatencyReport, dict[str, ModelSize]]:
    """Latency and size of the student and, when it is a local model, the teacher, on the same rows."""
    latency = LatencyReport(device=str(ctx.device), load_average=load_average())
    sizes = {"student": ModelSize(params=param_count(student), size_mb=dir_size_mb(student_dir))}
    model_uri = ctx.spec.teacher.model_uri
    if model_uri:
        teacher_dir = resolve_uri(model_uri)
        teacher = ctx.task.load_model(teacher_dir).to(ctx.device).eval()
        paired_latency(ctx, latency, student, teacher, rows)
        sizes["teacher"] = ModelSize(params=param_count(teacher), size_mb=dir_size_mb(teacher_dir))
        del teacher
    else:  # a remote teacher: the student alone
        latency.student = model_latency(ctx, student, rows)
    if latency.student is not None and latency.teacher is not None:
        latency.batched_speedup = _ratio(latency.student.throughput_rows_per_second,
                                         latency.teacher.throughput_rows_per_second)
    return latency, sizes


def _row_set(ctx: RunContext, rows: Sequence[Row], student: Predictions, teacher: Predictions,
             meta: Mapping[str, Any]) -> RowSetReport:
    return RowSetReport(rows=len(rows), gold_rows=ctx.task.gold_rows(rows, meta),
                        teacher=ctx.task.metrics(teacher, teacher, rows, meta),
                        student=ctx.task.metrics(student, teacher, rows, meta))


def _unfiltered(ctx: RunContext, labels: Labels, test: RowSetReport, student_model: TaskModel,
                meta: Mapping[str, Any]) -> RowSetReport:
    """Every test row the teacher answered, the low-confidence ones the filter dropped included (the same as
    `test` when it dropped none): how the student does on the data as it comes, not only the easy part."""
    if TEST_DROPPED not in labels.splits:
        return test
    rows, targets = labels.subset_of(("test", TEST_DROPPED))
    targets.pop(CONFIDENCE, None)
    teacher = ctx.task.teacher_predictions(targets)
    return _row_set(ctx, rows, ctx.task.predict(student_model, rows, LATENCY_BATCH), teacher, meta)


def _data_report(ctx: RunContext) -> DataReport | None:
    """The label stage's counts (labels/report.json's `data`); None for labels of an older trainer."""
    file = ctx.path("labels", "report.json")
    data = json.loads(file.read_text()).get("data") if file.exists() else None
    return DataReport.model_validate(data) if data else None


def run_evaluate(ctx: RunContext) -> dict[str, Any]:
    """The evaluate stage: eval/metrics.json and eval/report.md, returned as a summary with `gatePassed`
    (False: the cli exits with GATE_EXIT_CODE after the outputs are pushed)."""
    spec = ctx.spec
    labels = load_labels(ctx.path("labels"))
    rows, targets = labels.subset("test")
    targets.pop(CONFIDENCE, None)
    if not rows:
        raise ValueError("the test split is empty: add data or raise data.splits.test")
    student_dir = ctx.path("train", "student")
    if not student_dir.exists():
        raise FileNotFoundError(f"{student_dir} is missing: run the train stage first")
    student = ctx.task.load_model(student_dir).to(ctx.device).eval()
    teacher_pred = ctx.task.teacher_predictions(targets)
    student_pred = ctx.task.predict(student, rows, LATENCY_BATCH)
    meta = labels.meta
    primary = ctx.task.primary(meta)
    test = _row_set(ctx, rows, student_pred, teacher_pred, meta)
    row_sets = {"test": test, "unfiltered": _unfiltered(ctx, labels, test, student, meta)}
    t_metrics, s_metrics = test.teacher, test.student
    if spec.evaluation.metrics:
        wanted = {*spec.evaluation.metrics, primary}
        t_metrics = {k: v for k, v in t_metrics.items() if k in wanted}
        s_metrics = {k: v for k, v in s_metrics.items() if k in wanted}
    segments = segment_metrics(ctx, rows, student_pred, teacher_pred, meta)
    latency, sizes = _latency_and_sizes(ctx, student, student_dir, rows)
    speedup = None
    if latency.student is not None and latency.teacher is not None:
        speedup = _ratio(latency.teacher.p50, latency.student.p50)
    report = EvaluationReport(
        primary_metric=primary, test_rows=len(rows), labels=[str(x) for x in meta.get("labels") or []],
        teacher=t_metrics, student=s_metrics,
        quality_ratio=quality_ratio(s_metrics.get(primary), t_metrics.get(primary)), speedup=speedup,
        segments=segments, latency=latency, models=sizes, row_sets=row_sets, data=_data_report(ctx),
    )
    report.gate = judge(spec.evaluation, report)
    out = ctx.path("eval")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", report.to_wire())
    history_file = ctx.path("train", "history.json")
    history = json.loads(history_file.read_text()) if history_file.exists() else {}
    (out / "report.md").write_text(render_report(report, history, out))
    ctx.report.publish("metrics.json", report.to_json())
    log.info("evaluate: %s teacher %s student %s ratio %s speedup %s gate %s", primary,
             t_metrics.get(primary), s_metrics.get(primary), report.quality_ratio,
             f"{speedup:.2f}x" if speedup else "n/a", "passed" if report.gate.passed else "failed")
    return {"primaryMetric": primary, "qualityRatio": report.quality_ratio, "speedup": speedup,
            "gatePassed": report.gate.passed, "gateReasons": report.gate.reasons}
