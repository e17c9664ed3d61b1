"""eval/report.md: a human summary of metrics.json, with the learning curve and per-segment plots."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubestill.api.report import EvaluationReport, load_report

from ..plots import learning_curve, segments_bar

log = logging.getLogger(__name__)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return "n/a" if v is None else str(v)


def _quality(report: EvaluationReport) -> list[str]:
    gate = report.gate
    verdict = "NOT JUDGED" if gate is None else "PASSED" if gate.passed else "FAILED"
    lines = [
        "# Distillation report",
        "",
        f"**Gate: {verdict}**",
        "",
        *(f"- {r}" for r in (gate.reasons if gate is not None else [])),
        "",
        f"Primary metric `{report.primary_metric}`: quality ratio {_fmt(report.quality_ratio)}, "
        f"speedup at batch 1 {_fmt(report.speedup)}x, on {_fmt(report.test_rows)} held-out rows.",
        "",
        "## Quality",
        "",
        "| metric | teacher | student |",
        "|---|---|---|",
    ]
    for name in sorted(set(report.teacher) | set(report.student)):
        lines.append(f"| {name} | {_fmt(report.teacher.get(name))} | {_fmt(report.student.get(name))} |")
    return lines


def _data(report: EvaluationReport) -> list[str]:
    """Row sets with their counts (what each metric is measured against) and the label stage's counts."""
    lines: list[str] = []
    if report.row_sets:
        primary = report.primary_metric
        lines += ["", "## Row sets", "",
                  "Gold metrics (accuracy, F1, ...) are over the rows with a gold label; agreement is with the "
                  "teacher, over every row.", "",
                  f"| rows | count | with gold label | teacher {primary} | student {primary} | student agreement |",
                  "|---|---|---|---|---|---|"]
        for name, rs in report.row_sets.items():
            lines.append(f"| {name} | {rs.rows} | {rs.gold_rows} | {_fmt(rs.teacher.get(primary))} | "
                         f"{_fmt(rs.student.get(primary))} | {_fmt(rs.student.get('agreement'))} |")
    data = report.data
    if data is not None:
        dropped = ", ".join(f"{k} {v}" for k, v in sorted(data.dropped.items())) or "none"
        lines += ["", "## Data", "", f"- {data.total_rows} rows read; dropped by the quality filter: {dropped} "
                  f"(share {_fmt(data.dropped_share)})"]
        lines += [f"- {w}" for w in data.warnings()]
        t = data.training
        if t is not None:
            lines += [f"- {t.summary()}"]
            lines += [f"- {w}" for w in t.warnings()]
    return lines


def _latency(report: EvaluationReport) -> list[str]:
    lat = report.latency
    lines = ["", f"## Latency ({lat.device or 'n/a'}, tokenizer included)", "",
             "| model | params | size MB | batch | p50 ms | p95 ms | p99 ms | rows/s (batch) |",
             "|---|---|---|---|---|---|---|---|"]
    for who, m in (("teacher", lat.teacher), ("student", lat.student)):
        if m is None:
            continue
        size = report.models.get(who)
        lines.append(f"| {who} | {_fmt(size and size.params)} | {_fmt(size and size.size_mb)} | {m.batch_size} | "
                     f"{_fmt(m.p50)} | {_fmt(m.p95)} | {_fmt(m.p99)} | {_fmt(m.throughput_rows_per_second)} "
                     f"({_fmt(m.throughput_batch_size)}) |")
    return lines


def _learning_curve(history: Mapping[str, Any], out: Path) -> list[str]:
    if not history.get("train"):
        return []
    try:
        learning_curve(history, out / "learning_curve.png")
    except Exception as e:
        log.warning("learning curve plot failed: %s", e)
        return []
    lines = ["", "## Learning curve", "", "![learning curve](learning_curve.png)"]
    if history.get("best"):
        best = history["best"]
        lines += ["", f"Kept the weights of step {best['step']}, the lowest validation loss "
                  f"({_fmt(best['loss'])}), not those of the last step."]
    return lines


def _segments(report: EvaluationReport, out: Path) -> list[str]:
    primary = report.primary_metric
    if not report.segments:
        return []
    lines = ["", "## Segments", "", f"| segment | rows | teacher {primary} | student {primary} | drop |",
             "|---|---|---|---|---|"]
    for name, seg in report.segments.items():
        t, s = seg.teacher.get(primary), seg.student.get(primary)
        drop = t - s if t is not None and s is not None else None
        lines.append(f"| {name} | {seg.support} | {_fmt(t)} | {_fmt(s)} | {_fmt(drop)} |")
    bars = {name: {"teacher": {primary: seg.teacher.get(primary) or 0.0},
                   "student": {primary: seg.student.get(primary) or 0.0}} for name, seg in report.segments.items()}
    try:
        segments_bar(bars, primary, out / "segments.png")
        lines += ["", "![teacher vs student per segment](segments.png)"]
    except Exception as e:
        log.warning("segment plot failed: %s", e)
    return lines


def render_report(metrics: EvaluationReport | Mapping[str, Any], history: Mapping[str, Any], out: Path) -> str:
    """report.md of a report (or metrics.json parsed as JSON, of any version kubestill reads), writing its
    plots into `out`."""
    report = metrics if isinstance(metrics, EvaluationReport) else load_report(metrics)
    lines = [*_quality(report), *_data(report), *_latency(report), *_learning_curve(history, out),
             *_segments(report, out)]
    return "\n".join(lines) + "\n"
