"""label: batched teacher inference over the inputs, quality filtering with reasons and counts, and the
deterministic train / validation / test split. Output: see `labelstore`."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import numpy as np

from ..context import RunContext
from ..data import load_rows, split_rows
from ..labelstore import CONFIDENCE, Labels, save_labels
from ..outputs import Array
from ..storage import resolve_uri
from ..tasks.base import LabelBatch, Row
from ..teachers.factory import make_teacher
from ..tokenizer_check import check_student_tokenizer

log = logging.getLogger(__name__)

EMPTY, LOW_CONFIDENCE, INVALID = "empty", "low confidence", "invalid output"


def filter_reason(row: Row, confidence: float, invalid: str | None, min_confidence: float,
                  drop_empty: bool, needs_pair: bool) -> str | None:
    """Why a labelled row is dropped (one reason, checked in this order), or None to keep it."""
    if drop_empty and (not row.text.strip() or (needs_pair and not (row.pair or "").strip())):
        return EMPTY
    if invalid:
        return INVALID
    if confidence < min_confidence:
        return LOW_CONFIDENCE
    return None


def run_label(ctx: RunContext) -> dict[str, Any]:
    """The label stage: labels/ (see `labelstore`) and its quality report, returned. Raises ValueError when the
    data holds no rows or fewer than 3 survive the quality filter."""
    spec = ctx.spec
    rows = load_rows(resolve_uri(spec.data.uri), spec.data)
    if not rows:
        raise ValueError(f"spec.data.uri: {spec.data.uri} holds no rows")
    check_student_tokenizer(spec, ctx.task, rows)  # before the teacher is loaded: refuse early and cheaply
    # Empty rows are not sent to the teacher at all.
    to_label = [r for r in rows if not (spec.labeling.drop_empty and not r.text.strip())]
    meta, batches = _ask_teacher(ctx, rows, to_label)
    targets, confidence, invalid = _concatenate(batches)
    keep, reasons, examples = _quality_filter(ctx, to_label, confidence, invalid)
    reasons[EMPTY] += len(rows) - len(to_label)
    kept_rows = [to_label[i] for i in keep]
    if len(kept_rows) < 3:
        raise ValueError(f"only {len(kept_rows)} of {len(rows)} rows survived the quality filter "
                         f"({dict(reasons)}); lower labeling.minConfidence or check the teacher")
    split_of = split_rows([r.id for r in kept_rows], spec.data.splits.train, spec.data.splits.validation,
                          spec.data.seed)
    kept_targets = {k: v[keep] for k, v in targets.items()}
    kept_targets[CONFIDENCE] = confidence[keep].astype(np.float32)
    splits = [split_of[r.id] for r in kept_rows]
    report = {
        "total": len(rows),
        "kept": len(kept_rows),
        "dropped": {k: reasons.get(k, 0) for k in (EMPTY, LOW_CONFIDENCE, INVALID)},
        "splits": {s: splits.count(s) for s in ("train", "validation", "test")},
        "minConfidence": spec.labeling.min_confidence,
        "meanConfidence": float(np.mean(kept_targets[CONFIDENCE])),
        "droppedExamples": examples,
    }
    save_labels(ctx.path("labels"), Labels(kept_rows, splits, kept_targets, meta), report)
    log.info("label: kept %d of %d rows; dropped %s", len(kept_rows), len(rows), report["dropped"])
    return report


def _ask_teacher(ctx: RunContext, rows: list[Row], to_label: list[Row]) -> tuple[dict[str, Any], list[LabelBatch]]:
    """labels/meta.json's facts and the teacher's answers for `to_label`, in batches of labeling.batchSize;
    the teacher is closed whatever happens."""
    spec = ctx.spec
    gold = sorted({r.label for r in rows if r.label is not None})
    teacher = make_teacher(spec, ctx.task, gold, ctx.device)
    try:
        meta = {"task": str(spec.task), "teacher": teacher.kind, **ctx.task.label_meta(teacher, rows)}
        batches: list[LabelBatch] = []
        size = spec.labeling.batch_size
        for i in range(0, len(to_label), size):
            batches.append(ctx.task.label(teacher, to_label[i : i + size], meta))
            log.info("labelled %d/%d rows", min(i + size, len(to_label)), len(to_label))
    finally:
        teacher.close()
    return meta, batches


def _concatenate(batches: list[LabelBatch]) -> tuple[dict[str, Array], Array, list[str | None]]:
    """Row-aligned targets, confidence [N] and the teacher's invalid-output reason per row (None: valid)."""
    targets: dict[str, Array] = {
        k: np.concatenate([b.targets[k] for b in batches]) for k in (batches[0].targets if batches else {})}
    confidence = np.concatenate([b.confidence for b in batches]) if batches else np.zeros(0, np.float32)
    invalid = [x for b in batches for x in (b.invalid or [None] * len(b.confidence))]
    return targets, confidence, invalid


def _quality_filter(ctx: RunContext, rows: list[Row], confidence: Array, invalid: list[str | None]
                    ) -> tuple[list[int], Counter[str], list[dict[str, str]]]:
    """Indices of the rows kept, the count of each drop reason, and up to 20 dropped rows as examples."""
    spec = ctx.spec
    needs_pair = spec.data.fields.pair is not None
    reasons: Counter[str] = Counter()
    examples: list[dict[str, str]] = []
    keep: list[int] = []
    for i, row in enumerate(rows):
        reason = filter_reason(row, float(confidence[i]), invalid[i], spec.labeling.min_confidence,
                               spec.labeling.drop_empty, needs_pair)
        if reason is None:
            keep.append(i)
            continue
        reasons[reason] += 1
        if len(examples) < 20:
            examples.append({"id": row.id, "reason": reason, "detail": invalid[i] or ""})
    return keep, reasons, examples
