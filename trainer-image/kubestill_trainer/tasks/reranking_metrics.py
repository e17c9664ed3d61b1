"""Ranking quality of candidate lists: pure numpy, one query per row of a [N, G] score matrix.

Padded candidate slots are NaN in `scores` and never ranked. `relevant` [N, G] bool marks the relevant
candidates of each query (gold labels, else the teacher's top candidate). Ties are broken against the
relevant candidates (a constant model scores low, not high), as in `metrics.retrieval_metrics`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating[Any]]
BoolArray = npt.NDArray[np.bool_]


def ranks(scores: FloatArray, relevant: BoolArray) -> npt.NDArray[np.int64]:
    """[N, G] 1-based rank of every candidate (relevant ones placed after equally scored others); padded
    slots (NaN) get rank G + 1."""
    s = np.where(np.isnan(scores), -np.inf, scores)
    n, g = s.shape
    # Sort by score descending, then irrelevant before relevant (pessimistic ties), then by index.
    order = np.lexsort((np.arange(g)[None, :].repeat(n, 0), relevant.astype(np.int8), -s), axis=1)
    out = np.empty((n, g), dtype=np.int64)
    rows = np.arange(n)[:, None]
    out[rows, order] = np.arange(1, g + 1)[None, :]
    return np.where(np.isnan(scores), g + 1, out)


def ranking_metrics(scores: FloatArray, relevant: BoolArray, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """MRR@10, NDCG@10 (binary gains), MAP and Recall@k, averaged over queries with a relevant candidate."""
    relevant = relevant & ~np.isnan(scores)
    has = relevant.any(axis=1)
    if not has.any():
        return {}
    scores, relevant = scores[has], relevant[has]
    r = ranks(scores, relevant)
    rel_ranks = np.where(relevant, r, np.iinfo(np.int64).max)
    first = rel_ranks.min(axis=1)
    n_rel = relevant.sum(axis=1)
    out = {"mrr@10": float(np.mean(np.where(first <= 10, 1.0 / first, 0.0)))}
    gains = np.where(relevant & (r <= 10), 1.0 / np.log2(r + 1), 0.0).sum(axis=1)
    ideal = np.array([np.sum(1.0 / np.log2(np.arange(2, min(k, 10) + 2))) for k in n_rel])
    out["ndcg@10"] = float(np.mean(gains / ideal))
    # Average precision: mean over relevant candidates of (relevant ranked at or above it) / its rank.
    ap = []
    for row_r, row_rel in zip(r, relevant, strict=True):
        rr = np.sort(row_r[row_rel])
        ap.append(float(np.mean(np.arange(1, len(rr) + 1) / rr)))
    out["map"] = float(np.mean(ap))
    for k in ks:
        out[f"recall@{k}"] = float(np.mean((relevant & (r <= k)).sum(axis=1) / n_rel))
    return out


def agreement_metrics(scores: FloatArray, teacher: FloatArray) -> dict[str, float]:
    """How closely a ranking follows the teacher's: top-1 agreement and mean Kendall tau-a per query."""
    valid = ~np.isnan(scores) & ~np.isnan(teacher)
    top_s = np.argmax(np.where(valid, scores, -np.inf), axis=1)
    top_t = np.argmax(np.where(valid, teacher, -np.inf), axis=1)
    taus = []
    for s, t, v in zip(scores, teacher, valid, strict=True):
        s, t = s[v], t[v]
        if len(s) < 2:
            continue
        i, j = np.triu_indices(len(s), k=1)
        taus.append(float(np.mean(np.sign(s[i] - s[j]) * np.sign(t[i] - t[j]))))
    out = {"top1_agreement": float(np.mean(top_s == top_t))}
    if taus:
        out["kendall_tau"] = float(np.mean(taus))
    return out
