"""label: batched teacher inference over the inputs, quality filtering with reasons and counts, and the
deterministic train / validation / test split. Output: see `labelstore`; labels/report.json holds every count
(dropped rows by reason, unreadable rows, missing and unknown gold labels, inputs cut at maxSeqLength, the
train split's size against the student's need), its
`data` key a kubestill.api.report.DataReport that evaluate copies into metrics.json."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from kubestill.api.report import DataReport, TrainingDataReport, TruncationReport
from kubestill.api.v1alpha1 import Task
from kubestill.api.v1alpha1.distillationjob import StaticInit

from ..context import RunContext
from ..data import BadRow, read_rows, split_rows
from ..data_checks import count_labels, relative_confidence, token_lengths, training_data_check, truncation
from ..labelstore import CONFIDENCE, TEST_DROPPED, Labels, save_labels
from ..outputs import Array
from ..refusal import GateRefusal
from ..storage import resolve_uri, write_json
from ..tasks.base import LabelBatch, Row
from ..tasks.classification import ENCODER_CLASSIFIER_FORMAT
from ..tasks.encoder import read_card
from ..teachers.factory import make_teacher
from ..tokenizer_check import check_student_tokenizer

log = logging.getLogger(__name__)

EMPTY, LOW_CONFIDENCE, INVALID = "empty", "low confidence", "invalid output"


def filter_reason(row: Row, confidence: float, invalid: str | None, min_confidence: float,
                  drop_empty: bool, needs_pair: bool, relative: float = 1.0,
                  min_relative: float | None = None) -> str | None:
    """Why a labelled row is dropped (one reason, checked in this order), or None to keep it. `confidence` is
    the teacher's top probability (labeling.minConfidence), `relative` the same relative to chance
    (labeling.minRelativeConfidence, see `data_checks.relative_confidence`)."""
    if drop_empty and (not row.text.strip() or (needs_pair and not (row.pair or "").strip())):
        return EMPTY
    if invalid:
        return INVALID
    if confidence < min_confidence or (min_relative is not None and relative < min_relative):
        return LOW_CONFIDENCE
    return None


def run_label(ctx: RunContext) -> dict[str, Any]:
    """The label stage: labels/ (see `labelstore`) and its quality report, returned.

    Raises DataError for unreadable data (data.onBadRows fail), GateRefusal when the quality filter drops more
    than labeling.maxDroppedShare (or bad rows exceed data.maxBadRowShare), ValueError when the data holds no
    rows or fewer than 3 survive the quality filter."""
    spec = ctx.spec
    read = read_rows(resolve_uri(spec.data.uri), spec.data)
    rows = read.rows
    if not rows:
        raise ValueError(f"spec.data.uri: {spec.data.uri} holds no rows")
    check_student_tokenizer(spec, ctx.task, rows)  # before the teacher is loaded: refuse early and cheaply
    # Empty rows are not sent to the teacher at all.
    to_label = [r for r in rows if not (spec.labeling.drop_empty and not r.text.strip())]
    meta, batches = _ask_teacher(ctx, rows, to_label)
    targets, confidence, invalid = _concatenate(batches)
    classes = len(meta.get("labels") or [])
    why, examples = _quality_filter(ctx, to_label, confidence, relative_confidence(confidence, classes), invalid)
    reasons = Counter(w for w in why if w is not None)
    reasons[EMPTY] += len(rows) - len(to_label)
    # The split is drawn over every row the teacher answered, before the confidence filter: the test split
    # does not depend on minConfidence, and its low-confidence rows are kept aside (TEST_DROPPED) so evaluate
    # can also report on the unfiltered test split.
    usable = [i for i, w in enumerate(why) if w in (None, LOW_CONFIDENCE)]
    split_of = split_rows([to_label[i].id for i in usable], spec.data.splits.train, spec.data.splits.validation,
                          spec.data.seed)
    stored = [(i, split_of[to_label[i].id] if why[i] is None else TEST_DROPPED) for i in usable
              if why[i] is None or split_of[to_label[i].id] == "test"]
    splits = [s for _, s in stored]
    kept = sum(1 for w in why if w is None)
    data = _data_report(ctx, rows, read.bad, reasons, meta)
    data.training = _training_data(ctx, [i for i, split in stored if split == "train"], targets, meta)
    report = {
        "total": len(rows),
        "kept": kept,
        "dropped": {k: reasons.get(k, 0) for k in (EMPTY, LOW_CONFIDENCE, INVALID)},
        "droppedShare": data.dropped_share,
        "splits": {s: splits.count(s) for s in ("train", "validation", "test", TEST_DROPPED)},
        "minConfidence": spec.labeling.min_confidence,
        "minRelativeConfidence": spec.labeling.min_relative_confidence,
        "meanConfidence": float(np.mean(confidence[[i for i, w in enumerate(why) if w is None]])) if kept else None,
        "droppedExamples": examples,
        "badRows": [{"where": b.where, "reason": b.reason} for b in read.bad[:20]],
        "data": data.to_wire(),
    }
    _refuse_or_warn(ctx, report, data, kept)
    idx = [i for i, _ in stored]
    stored_targets = {k: v[idx] for k, v in targets.items()}
    stored_targets[CONFIDENCE] = confidence[idx].astype(np.float32)
    save_labels(ctx.path("labels"), Labels([to_label[i] for i in idx], splits, stored_targets, meta), report)
    log.info("label: kept %d of %d rows; dropped %s", kept, len(rows), report["dropped"])
    return report


def _data_report(ctx: RunContext, rows: list[Row], bad: list[BadRow], reasons: Counter[str],
                 meta: dict[str, Any]) -> DataReport:
    """The counts of what was dropped, lacks a label or is cut (kubestill.api.report.DataReport)."""
    spec = ctx.spec
    labels = count_labels(rows, meta["labels"]) if spec.data.fields.label and "labels" in meta else None
    dropped = {k: v for k, v in reasons.items() if v}
    return DataReport(
        total_rows=len(rows), bad_rows_skipped=len(bad), dropped=dropped,
        dropped_share=sum(dropped.values()) / len(rows),
        missing_labels=labels.missing if labels else 0, unknown_labels=labels.unknown if labels else 0,
        truncation=_truncation(ctx, rows))


def _training_data(ctx: RunContext, train: list[int], targets: dict[str, Array],
                   meta: dict[str, Any]) -> TrainingDataReport:
    """The data-size check (data_checks.training_data_check) on the train rows `train` (indices into the
    teacher's answers); a classifier's classes counted by the teacher's top label."""
    labels = meta.get("labels") or []
    class_rows = None
    if ctx.spec.task == Task.CLASSIFICATION and labels and "logits" in targets:
        top = Counter(int(k) for k in np.asarray(targets["logits"])[train].argmax(axis=-1)) if train else Counter()
        class_rows = {str(label): top.get(k, 0) for k, label in enumerate(labels)}
    paired = ctx.spec.data.fields.pair is not None
    return training_data_check(ctx.spec.student, len(train), class_rows, paired, _static_start(ctx))


def _static_start(ctx: RunContext) -> StaticInit | None:
    """TEACHER_EMBEDDINGS for a static student of a Hugging Face *ForSequenceClassification teacher, which keeps
    the teacher's raw input embeddings whatever the spec's default says (tasks.classification refuses model2vec
    for it); None: the spec says how it starts."""
    spec = ctx.spec
    arch = spec.student.architecture
    if arch is None or arch.num_layers or spec.task != Task.CLASSIFICATION or spec.teacher.model_uri is None:
        return None
    card = read_card(Path(resolve_uri(spec.teacher.model_uri)))
    return None if (card or {}).get("format") == ENCODER_CLASSIFIER_FORMAT else StaticInit.TEACHER_EMBEDDINGS


def _truncation(ctx: RunContext, rows: list[Row]) -> TruncationReport | None:
    """Rows longer than training.maxSeqLength in the student's tokens (the teacher's tokenizer for a student
    cut from it); None when no tokenizer is local."""
    spec = ctx.spec
    uri = spec.student.base_model_uri or spec.teacher.model_uri
    if uri is None:
        return None
    tokenizer = ctx.task.load_tokenizer(resolve_uri(uri))
    return truncation(token_lengths(tokenizer, [r.text for r in rows]), spec.training.max_seq_length)


def _refuse_or_warn(ctx: RunContext, report: dict[str, Any], data: DataReport, kept: int) -> None:
    """labeling.maxDroppedShare and the minimum of 3 kept rows, with labels/report.json written first so the
    refused run can be read; a warning line for each count a user should know of."""
    labeling = ctx.spec.labeling
    # The operator's DataComplete and TrainingDataSufficient conditions, before any training starts.
    ctx.report.publish("data.json", json.dumps(data.to_wire(), allow_nan=False))
    share = data.dropped_share or 0.0
    if share > labeling.max_dropped_share or kept < 3:
        root = ctx.path("labels")
        root.mkdir(parents=True, exist_ok=True)
        write_json(root / "report.json", report)
    dropped = ", ".join(f"{k} {v}" for k, v in sorted(data.dropped.items())) or "none"
    if share > labeling.max_dropped_share:
        raise GateRefusal(
            f"the label stage dropped {share:.1%} of {data.total_rows} rows ({dropped}), above "
            f"labeling.maxDroppedShare {labeling.max_dropped_share:g}: the rest would not represent the data; "
            "lower labeling.minConfidence (with many classes use labeling.minRelativeConfidence) or raise "
            "labeling.maxDroppedShare")
    if kept < 3:
        raise ValueError(f"only {kept} of {data.total_rows} rows survived the quality filter ({dropped}); lower "
                         "labeling.minConfidence or check the teacher")
    for warning in data.warnings() + (data.training.warnings() if data.training else []):
        log.warning("label: %s", warning)


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


def _quality_filter(ctx: RunContext, rows: list[Row], confidence: Array, relative: Array,
                    invalid: list[str | None]) -> tuple[list[str | None], list[dict[str, str]]]:
    """Per row the reason it is dropped (None: kept), and up to 20 dropped rows as examples."""
    labeling = ctx.spec.labeling
    needs_pair = ctx.spec.data.fields.pair is not None
    why: list[str | None] = []
    examples: list[dict[str, str]] = []
    for i, row in enumerate(rows):
        reason = filter_reason(row, float(confidence[i]), invalid[i], labeling.min_confidence, labeling.drop_empty,
                               needs_pair, float(relative[i]), labeling.min_relative_confidence)
        why.append(reason)
        if reason is not None and len(examples) < 20:
            examples.append({"id": row.id, "reason": reason, "detail": invalid[i] or ""})
    return why, examples
