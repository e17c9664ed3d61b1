"""What the label stage measures about the data so that nothing is dropped, replaced or cut silently: the
teacher's confidence relative to chance, rows without a gold label or with one the teacher does not know,
inputs longer than training.maxSeqLength. Pure functions of rows, arrays and a tokenizer."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from transformers import PreTrainedTokenizerBase

from kubestill.api.report import TruncationReport

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
