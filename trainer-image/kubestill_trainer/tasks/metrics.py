"""Pure quality metrics on numpy arrays (classification and retrieval), shared by tasks and benches."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[Any]


def classification_metrics(pred: IntArray, gold: IntArray, num_classes: int) -> dict[str, float]:
    """accuracy and macro precision / recall / F1 (classes absent from both gold and pred are skipped)."""
    if len(gold) == 0:
        return {"accuracy": float("nan"), "macro_precision": float("nan"), "macro_recall": float("nan"),
                "macro_f1": float("nan")}
    precisions, recalls, f1s = [], [], []
    for c in range(num_classes):
        tp = int(np.sum((pred == c) & (gold == c)))
        fp = int(np.sum((pred == c) & (gold != c)))
        fn = int(np.sum((pred != c) & (gold == c)))
        if tp + fp + fn == 0:
            continue
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        precisions.append(p)
        recalls.append(r)
        f1s.append(2 * p * r / (p + r) if p + r else 0.0)
    return {
        "accuracy": float(np.mean(pred == gold)),
        "macro_precision": float(np.mean(precisions)),
        "macro_recall": float(np.mean(recalls)),
        "macro_f1": float(np.mean(f1s)),
    }


def normalize_rows(x: FloatArray) -> FloatArray:
    out: FloatArray = x / np.clip(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12, None)
    return out


def mean_cosine(a: FloatArray, b: FloatArray) -> float:
    """Mean row-wise cosine similarity of two [N, D] arrays."""
    return float(np.mean(np.sum(normalize_rows(a) * normalize_rows(b), axis=-1)))


def retrieval_metrics(queries: FloatArray, corpus: FloatArray, k: int = 10) -> dict[str, float]:
    """Query i's one relevant document is corpus row i; cosine ranking over the whole corpus.

    recall@1, recall@k, MRR@k and NDCG@k (one relevant document: 1 / log2(rank + 1) within the top k).
    Ties are broken against the relevant document, so a constant model scores low, not high.
    """
    sims = normalize_rows(queries) @ normalize_rows(corpus).T
    own = np.diag(sims)[:, None]
    rank = np.sum(sims >= own, axis=1)  # 1 = best; ties counted against us
    return {
        "recall@1": float(np.mean(rank <= 1)),
        f"recall@{k}": float(np.mean(rank <= k)),
        f"mrr@{k}": float(np.mean(np.where(rank <= k, 1.0 / rank, 0.0))),
        f"ndcg@{k}": float(np.mean(np.where(rank <= k, 1.0 / np.log2(rank + 1), 0.0))),
    }


def softmax(logits: FloatArray, temperature: float = 1.0) -> FloatArray:
    z = logits / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    out: FloatArray = e / e.sum(axis=-1, keepdims=True)
    return out
