"""eval/report.md: a human summary of metrics.json, with the learning curve and per-segment plots."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..plots import learning_curve, segments_bar

log = logging.getLogger(__name__)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return "n/a" if v is None else str(v)


def render_report(metrics: Mapping[str, Any], history: Mapping[str, Any], out: Path) -> str:
    primary = metrics["primaryMetric"]
    gate = metrics["gate"]
    lines = [
        "# Distillation report",
        "",
        f"**Gate: {'PASSED' if gate['passed'] else 'FAILED'}**",
        "",
        *(f"- {r}" for r in gate.get("reasons", [])),
        "",
        f"Primary metric `{primary}`: quality ratio {_fmt(metrics['qualityRatio'])}, "
        f"speedup at batch 1 {_fmt(metrics.get('speedup'))}x, on {metrics['testRows']} held-out rows.",
        "",
        "## Quality",
        "",
        "| metric | teacher | student |",
        "|---|---|---|",
    ]
    for name in sorted(set(metrics["teacher"]) | set(metrics["student"])):
        lines.append(f"| {name} | {_fmt(metrics['teacher'].get(name))} | {_fmt(metrics['student'].get(name))} |")
    lat = metrics["latency"]
    lines += ["", f"## Latency ({lat.get('device', 'cpu')}, tokenizer included)", "",
              "| model | params | size MB | p50 ms | p95 ms | p99 ms | rows/s (batch) |",
              "|---|---|---|---|---|---|---|"]
    for who in ("teacher", "student"):
        if who in lat:
            m, size = lat[who], metrics.get("models", {}).get(who, {})
            lines.append(f"| {who} | {size.get('params', 'n/a')} | {_fmt(size.get('sizeMb'))} | "
                         f"{_fmt(m.get('batch1_p50_ms'))} | {_fmt(m.get('batch1_p95_ms'))} | "
                         f"{_fmt(m.get('batch1_p99_ms'))} | {_fmt(m.get('throughput_rows_per_s'))} "
                         f"({int(m.get('throughput_batch_size', 0))}) |")
    if history.get("train"):
        try:
            learning_curve(history, out / "learning_curve.png")
            lines += ["", "## Learning curve", "", "![learning curve](learning_curve.png)"]
            if history.get("best"):
                best = history["best"]
                lines += ["", f"Kept the weights of step {best['step']}, the lowest validation loss "
                          f"({_fmt(best['loss'])}), not those of the last step."]
        except Exception as e:
            log.warning("learning curve plot failed: %s", e)
    segments = metrics.get("segments") or {}
    if segments:
        lines += ["", "## Segments", "", f"| segment | rows | teacher {primary} | student {primary} | drop |",
                  "|---|---|---|---|---|"]
        for name, seg in segments.items():
            t, s = seg["teacher"].get(primary), seg["student"].get(primary)
            drop = t - s if t is not None and s is not None else None
            lines.append(f"| {name} | {int(seg['count']['rows'])} | {_fmt(t)} | {_fmt(s)} | {_fmt(drop)} |")
        try:
            segments_bar(segments, primary, out / "segments.png")
            lines += ["", "![teacher vs student per segment](segments.png)"]
        except Exception as e:
            log.warning("segment plot failed: %s", e)
    return "\n".join(lines) + "\n"
