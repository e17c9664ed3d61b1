"""Pure metric and progress arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from kubestill_trainer.progress import progress_at
from kubestill_trainer.tasks.metrics import classification_metrics, mean_cosine, retrieval_metrics


def test_classification_metrics_by_hand() -> None:
    gold = np.array([0, 0, 1, 1, 2])
    pred = np.array([0, 1, 1, 1, 0])
    m = classification_metrics(pred, gold, 3)
    assert m["accuracy"] == pytest.approx(0.6)
    # class 0: p=1/2 r=1/2; class 1: p=2/3 r=1; class 2: p=0 r=0
    assert m["macro_precision"] == pytest.approx((0.5 + 2 / 3 + 0) / 3)
    assert m["macro_recall"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 0) / 3)


def test_retrieval_perfect_constant_and_swapped() -> None:
    q = np.eye(12, dtype=np.float32)
    perfect = retrieval_metrics(q, q)
    assert perfect == {"recall@1": 1.0, "recall@10": 1.0, "mrr@10": 1.0, "ndcg@10": 1.0}
    constant = retrieval_metrics(np.ones((12, 4)), np.ones((12, 4)))
    assert constant["recall@1"] == 0.0 and constant["recall@10"] == 0.0  # ties count against the model
    swapped = retrieval_metrics(q, q[[1, 0, *range(2, 12)]])
    assert swapped["recall@1"] == pytest.approx(10 / 12)
    # the two swapped queries see their document at similarity 0, tied with 10 others: rank 12, a miss
    assert swapped["mrr@10"] == pytest.approx(10 / 12)


def test_mean_cosine() -> None:
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert mean_cosine(a, a * 3) == pytest.approx(1.0)
    assert mean_cosine(a, -a) == pytest.approx(-1.0)


def test_progress_eta_counts_only_this_process() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    now = start + timedelta(seconds=10)
    # Resumed at step 50: 10 steps in 10 s, 40 to go -> ETA 40 s from now.
    p = progress_at(60, 100, 20, 0.5, start, 50, now)
    assert p.percent == 60.0 and p.epoch == 3.0 and p.eta == now + timedelta(seconds=40)
    assert set(p.to_wire()) >= {"percent", "step", "totalSteps", "epoch", "loss", "eta", "updatedAt"}
    assert progress_at(100, 100, 20, 0.1, start, 50, now).eta == now
    assert progress_at(50, 100, 20, None, start, 50, now).eta is None
