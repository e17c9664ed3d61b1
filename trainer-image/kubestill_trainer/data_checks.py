"""What the label stage measures about the data so that nothing is dropped, replaced or cut silently: the
teacher's confidence relative to chance, rows without a gold label or with one the teacher does not know,
inputs longer than training.maxSeqLength, a train split too small for the student. Pure functions of rows,
arrays, a tokenizer and the spec."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from transformers import PreTrainedTokenizerBase

from kubestill.api.report import TrainingDataReport, TruncationReport
from kubestill.api.v1alpha1.distillationjob import StaticInit, StudentSpec

from .outputs import Array
from .tasks.base import Row

TOKENIZE_CHUNK = 1024  # rows tokenized per call: bounds memory on long inputs
EXAMPLES = 10


def relative_confidence(top_probability: Array, classes: int) -> Array:
    """The top class probability p relative to chance 1/C over C classes: log(C*p) / log(C), clipped to [0, 1].

    0 at chance (p = 1/C) or below, 1 at certainty (p = 1), and a fixed share of the way in log-odds against
    the uniform distribution for any C: it is the self-information of the top class saved over chance,
    log(1/(1/C)) - log(1/p), as a share of the most that can be saved, log C (Shannon, 1948; with the
    uniform prior of Cover & Thomas, Elements of Information Theory, 2nd ed., ch. 2). An absolute threshold
    on p does not carry over between label sets: with 130 classes a teacher that puts p = 0.2 on a class
    (26 times chance) is confident, yet `p >= 0.3` drops it; pseudo-labelling work makes the same point
    about fixed thresholds (FlexMatch, Zhang et al., NeurIPS 2021). Shapes: [N] -> [N]; C < 2 gives ones.

    >>> [round(float(x), 3) for x in relative_confidence(np.array([0.2, 0.5, 1.0]), 5)]
    [0.0, 0.569, 1.0]
    >>> round(float(relative_confidence(np.array([0.2]), 130)[0]), 3)  # 26x chance over 130 classes
    0.669
    """
    p = np.asarray(top_probability, dtype=np.float64)
    if classes < 2:
        return np.ones_like(p)
    with np.errstate(divide="ignore"):
        out = np.log(np.clip(p, 0.0, 1.0) * classes) / math.log(classes)
    clipped: Array = np.clip(np.nan_to_num(out, nan=0.0, neginf=0.0), 0.0, 1.0)
    return clipped


@dataclass
class LabelCounts:
    """Gold labels as read: rows without one, rows whose label is not a teacher class (with examples)."""

    missing: int = 0
    unknown: int = 0
    unknown_examples: dict[str, int] = field(default_factory=dict)  # label -> rows, the first EXAMPLES labels


def count_labels(rows: Sequence[Row], classes: Sequence[str]) -> LabelCounts:
    """Missing and unknown gold labels of `rows` against the teacher's `classes`.

    >>> c = count_labels([Row("1", "a", label="x"), Row("2", "b"), Row("3", "c", label="zz")], ["x", "y"])
    >>> (c.missing, c.unknown, c.unknown_examples)
    (1, 1, {'zz': 1})
    """
    known = set(classes)
    out = LabelCounts()
    for row in rows:
        if row.label is None:
            out.missing += 1
        elif row.label not in known:
            out.unknown += 1
            if row.label in out.unknown_examples or len(out.unknown_examples) < EXAMPLES:
                out.unknown_examples[row.label] = out.unknown_examples.get(row.label, 0) + 1
    return out


def token_lengths(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[int]:
    """Tokens per text as the models see them before truncation (special tokens included)."""
    lengths: list[int] = []
    for i in range(0, len(texts), TOKENIZE_CHUNK):
        # verbose=False: the "longer than the model's maximum" warning is what this function counts.
        enc = tokenizer(list(texts[i : i + TOKENIZE_CHUNK]), truncation=False, verbose=False)
        lengths += [len(ids) for ids in enc["input_ids"]]
    return lengths


def truncation(lengths: Sequence[int], max_seq_length: int) -> TruncationReport:
    """How many rows are longer than `max_seq_length` tokens, from their token lengths.

    >>> t = truncation([10, 200, 128, 129], 128)
    >>> (t.truncated_rows, t.truncated_share, t.max_tokens)
    (2, 0.5, 200)
    """
    cut = sum(1 for n in lengths if n > max_seq_length)
    return TruncationReport(
        max_seq_length=max_seq_length, rows=len(lengths), truncated_rows=cut,
        truncated_share=cut / len(lengths) if lengths else None, max_tokens=max(lengths) if lengths else None,
        p95_tokens=int(np.percentile(lengths, 95)) if lengths else None)


@dataclass(frozen=True)
class DataNeed:
    """The fewest train rows a student kind is known to learn from, why, and what to do short of it."""

    student: str
    rows: int
    advice: str


SHORTER_TEST = "or raise data.splits.train (which shrinks the held-out split the gates judge)"
MORE_TEXT = ("add unlabelled text from the same source to data.uri (the teacher labels every row; gold labels "
             "are optional) " + SHORTER_TEST)
MORE_PAIRS = "add more pairs from the same source to data.uri (a row without its pair is dropped) " + SHORTER_TEST
# Fine-tuning every weight of a pre-trained transformer on a small dataset fails outright on some seeds and
# swings with the rest: seen on RTE (2.5k examples), MRPC (3.7k) and CoLA (8.5k) (Mosbach et al., On the Stability
# of Fine-tuning BERT, ICLR 2021; Zhang et al., Revisiting Few-sample BERT Fine-tuning, ICLR 2021, study sets
# under 10k). 1,000 train rows is a floor well inside that regime, not a point where it ends. A static student
# from a Model2Vec distillation already holds the teacher: the 1,149 train rows of bench/embedding.py --data faq
# (252 question -> answer pairs: questions, answers and answer sentences) took it to 0.93 of the teacher's R@10,
# so its floor is what has been measured to work. From the teacher's raw input embeddings it learns everything
# from the data: the same 1,149 rows left it at 0.37 (issue #14), and students without pre-trained context
# needed transfer sets grown by augmentation (Tang et al., Distilling Task-Specific Knowledge from BERT into
# Simple Neural Networks, 2019); 10,000 is an order of magnitude over the failed run, not a measured success.
LAYERS = 1000
STATIC_RAW = 10000
STATIC_MODEL2VEC = 1000
# Few-shot text classification is benchmarked at K = 16 examples per class, where plain fine-tuning falls well
# short of the full-data result (Gao et al., Making Pre-trained Language Models Better Few-shot Learners, ACL
# 2021; SetFit, Tunstall et al. 2022, at 8 and 64): under it a class is learnt from a handful of examples.
CLASS_ROWS = 16


def data_need(student: StudentSpec, paired: bool = False, static_init: StaticInit | None = None) -> DataNeed:
    """The data-size threshold for `student` (see the constants' sources). `paired`: each row is a text with its
    pair (embedding with data.fields.pair, reranking), so the remedy is more pairs, not bare text. `static_init`:
    how a static student really starts when it is not what the spec says (a Hugging Face
    *ForSequenceClassification teacher's static student keeps the teacher's raw input embeddings).

    >>> from kubestill.api.v1alpha1.distillationjob import StudentArchitecture
    >>> data_need(StudentSpec(architecture=StudentArchitecture(num_layers=0))).rows
    1000
    >>> data_need(StudentSpec(architecture=StudentArchitecture(num_layers=0, init="teacher-embeddings"))).rows
    10000
    >>> data_need(StudentSpec(architecture=StudentArchitecture(num_layers=2))).student
    'a student of 2 layers cut from the teacher'
    """
    more = MORE_PAIRS if paired else MORE_TEXT
    arch = student.architecture
    start = static_init or (arch.static_init if arch is not None else None)
    if start == StaticInit.TEACHER_EMBEDDINGS:
        return DataNeed("a static student started from the teacher's input embeddings", STATIC_RAW,
                        more + "; with a sentence-encoder teacher, init model2vec starts from far more of it")
    if start == StaticInit.MODEL2VEC:
        return DataNeed("a static student started from a Model2Vec distillation", STATIC_MODEL2VEC,
                        more + "; below it the student stays close to its Model2Vec start")
    if arch is not None:
        layers = f"{arch.num_layers} layer{'s' if arch.num_layers > 1 else ''}"
        return DataNeed(f"a student of {layers} cut from the teacher", LAYERS, more)
    if student.lora is not None:
        return DataNeed("LoRA adapters on a base model", LAYERS, more)
    return DataNeed("a base model trained in full", LAYERS, more)


def training_data_check(student: StudentSpec, train_rows: int, class_rows: Mapping[str, int] | None = None,
                        paired: bool = False, static_init: StaticInit | None = None) -> TrainingDataReport:
    """The train split's size against `student`'s need (`data_need`, with `paired` and `static_init`);
    `class_rows` (classification): train rows per teacher class by the teacher's top label, every class included
    (0 for a class it never picked).

    >>> from kubestill.api.v1alpha1.distillationjob import StudentArchitecture
    >>> two = StudentSpec(architecture=StudentArchitecture(num_layers=2))
    >>> r = training_data_check(two, 1500, {"a": 1490, "b": 10, "c": 0})
    >>> (r.sufficient, r.sparse_class_count, r.sparse_classes)
    (False, 2, {'c': 0, 'b': 10})
    >>> training_data_check(two, 1500).sufficient
    True
    """
    need = data_need(student, paired, static_init)
    sparse = sorted(((n, k) for k, n in (class_rows or {}).items() if n < CLASS_ROWS))
    return TrainingDataReport(
        student=need.student, train_rows=train_rows, recommended_rows=need.rows,
        classes=len(class_rows) if class_rows is not None else None,
        recommended_class_rows=CLASS_ROWS if class_rows is not None else None,
        sparse_classes={k: n for n, k in sparse[:EXAMPLES]}, sparse_class_count=len(sparse), advice=need.advice)
