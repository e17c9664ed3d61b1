"""How closely generated continuations follow the teacher's, on token ids (teacher and student share the
tokenizer; token-level KD needs that anyway). Pure python/numpy; padded positions are -1.

- exact_match: the whole continuation equals the teacher's
- first_token: the first generated token equals the teacher's (the greedy decision KD trains most directly)
- token_f1: F1 of the bags of tokens (SQuAD-style overlap)
- rougeL: F-measure of the longest common subsequence (Lin 2004), on tokens
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from kubestill.api.text_metrics import rouge_l_tokens

IntArray = npt.NDArray[np.integer[Any]]


def unpad(row: Sequence[int] | IntArray, eos: int | None = None) -> list[int]:
    """Tokens of a padded row (-1 = padding), without a trailing eos."""
    out = [int(t) for t in row if int(t) >= 0]
    if eos is not None and out and out[-1] == eos:
        out.pop()
    return out


def rouge_l(pred: Sequence[int], ref: Sequence[int]) -> float:
    """ROUGE-L F1 of two token-id sequences (kubestill.judge.text, the judge's own)."""
    return rouge_l_tokens(ref, pred)


def token_f1(pred: Sequence[int], ref: Sequence[int]) -> float:
    if not pred and not ref:
        return 1.0
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    p, r = common / len(pred), common / len(ref)
    return 2 * p * r / (p + r)


def generation_metrics(pred: IntArray, ref: IntArray, eos: int | None = None) -> dict[str, float]:
    """Mean agreement metrics of predicted vs reference token rows ([N, T], -1 padded)."""
    if len(pred) != len(ref):
        raise ValueError(f"{len(pred)} predictions for {len(ref)} references")
    if len(pred) == 0:
        return {}
    em, first, f1, rl, length = [], [], [], [], []
    for p_row, r_row in zip(pred, ref, strict=True):
        p, r = unpad(p_row, eos), unpad(r_row, eos)
        em.append(float(p == r))
        first.append(float(bool(p) and bool(r) and p[0] == r[0]) if (p or r) else 1.0)
        f1.append(token_f1(p, r))
        rl.append(rouge_l(p, r))
        length.append(len(p))
    return {"exact_match": float(np.mean(em)), "first_token": float(np.mean(first)),
            "token_f1": float(np.mean(f1)), "rougeL": float(np.mean(rl)), "mean_length": float(np.mean(length))}
