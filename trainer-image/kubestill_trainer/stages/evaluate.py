"""evaluate: teacher and student on the held-out test split: quality metrics overall and per segment,
latency (batch 1 percentiles, batched throughput), parameters, size on disk, and the gate verdict.
Output: eval/metrics.json (the contract's shape), eval/report.md, eval/*.png; metrics.json is also sent
over the report channel."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..context import RunContext
from ..gates import judge, quality_ratio
from ..labelstore import CONFIDENCE, load_labels
from ..latency import dir_size_mb, measure
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
                    meta: Mapping[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        if r.segment is not None:
            groups.setdefault(r.segment, []).append(i)
    out = {}
    for name, idx in sorted(groups.items()):
        seg_rows = [rows[i] for i in idx]
        t, s = _take(teacher, idx), _take(student, idx)
        out[name] = {"teacher": ctx.task.metrics(t, t, seg_rows, meta),
                     "student": ctx.task.metrics(s, t, seg_rows, meta), "count": {"rows": float(len(idx))}}
    return out


def model_latency(ctx: RunContext, model: TaskModel, rows: Sequence[Row]) -> dict[str, float]:
    sample = list(rows[:256])
    return measure(lambda rs: ctx.task.predict(model, rs, len(rs)), sample, batch_size=LATENCY_BATCH,
                   single=min(100, max(20, len(sample))))


def run_evaluate(ctx: RunContext) -> dict[str, Any]:
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
    t_metrics = ctx.task.metrics(teacher_pred, teacher_pred, rows, meta)
    s_metrics = ctx.task.metrics(student_pred, teacher_pred, rows, meta)
    if spec.evaluation.metrics:
        wanted = {*spec.evaluation.metrics, primary}
        t_metrics = {k: v for k, v in t_metrics.items() if k in wanted}
        s_metrics = {k: v for k, v in s_metrics.items() if k in wanted}
    segments = segment_metrics(ctx, rows, student_pred, teacher_pred, meta)

    latency: dict[str, Any] = {"student": model_latency(ctx, student, rows), "device": ctx.device}
    sizes: dict[str, Any] = {"student": {"params": param_count(student), "sizeMb": dir_size_mb(student_dir)}}
    teacher_dir = resolve_uri(spec.teacher.model_uri) if spec.teacher.model_uri else None
    if teacher_dir is not None:
        teacher = ctx.task.load_model(teacher_dir).to(ctx.device).eval()
        latency["teacher"] = model_latency(ctx, teacher, rows)
        sizes["teacher"] = {"params": param_count(teacher), "sizeMb": dir_size_mb(teacher_dir)}
        del teacher
    speedup = None
    if "teacher" in latency:
        speedup = latency["teacher"]["batch1_p50_ms"] / latency["student"]["batch1_p50_ms"]
        latency["batchedSpeedup"] = (latency["student"]["throughput_rows_per_s"]
                                     / latency["teacher"]["throughput_rows_per_s"])
    gate = judge(spec.evaluation, primary, t_metrics, s_metrics, segments,
                 latency["student"].get("batch1_p95_ms"))
    ratio = quality_ratio(s_metrics.get(primary, float("nan")), t_metrics.get(primary, float("nan")))
    metrics: dict[str, Any] = {
        "primaryMetric": primary,
        "teacher": t_metrics,
        "student": s_metrics,
        "qualityRatio": ratio,
        "speedup": speedup,
        "gate": gate.to_wire(),
        "segments": segments,
        "latency": latency,
        "models": sizes,
        "testRows": len(rows),
    }
    if "labels" in meta:
        metrics["labels"] = list(meta["labels"])
    out = ctx.path("eval")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", _finite(metrics))
    history_file = ctx.path("train", "history.json")
    history = json.loads(history_file.read_text()) if history_file.exists() else {}
    (out / "report.md").write_text(render_report(metrics, history, out))
    ctx.report.publish("metrics.json", json.dumps(_finite(metrics)))
    log.info("evaluate: %s teacher %.4f student %.4f ratio %.4f speedup %s gate %s", primary,
             t_metrics.get(primary, float("nan")), s_metrics.get(primary, float("nan")), ratio,
             f"{speedup:.2f}x" if speedup else "n/a", "passed" if gate.passed else "failed")
    return {"primaryMetric": primary, "qualityRatio": ratio, "speedup": speedup, "gatePassed": gate.passed}


def _finite(value: Any) -> Any:
    """JSON has no NaN or Infinity: unmeasurable figures become null."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float | np.floating) and not np.isfinite(value):
        return None
    if isinstance(value, np.floating):
        return float(value)
    return value
