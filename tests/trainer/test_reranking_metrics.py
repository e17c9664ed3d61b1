"""Ranking metrics on worked examples (table-driven), candidate parsing, and gold-label parsing."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from kubestill_trainer.tasks.base import Row
from kubestill_trainer.tasks.reranking import candidates, relevant_indices
from kubestill_trainer.tasks.reranking_metrics import agreement_metrics, ranking_metrics, ranks

NAN = float("nan")


@pytest.mark.parametrize(
    ("scores", "relevant", "expected"),
    [
        # relevant first: perfect
        ([[3.0, 2.0, 1.0]], [[True, False, False]], {"mrr@10": 1.0, "ndcg@10": 1.0, "map": 1.0, "recall@1": 1.0}),
        # relevant second
        ([[3.0, 2.0, 1.0]], [[False, True, False]],
         {"mrr@10": 0.5, "ndcg@10": 1 / math.log2(3), "map": 0.5, "recall@1": 0.0, "recall@5": 1.0}),
        # ties count against the relevant candidate: a constant model is ranked last, not first
        ([[1.0, 1.0, 1.0]], [[True, False, False]], {"mrr@10": 1 / 3, "recall@1": 0.0}),
        # two relevant at ranks 1 and 3: AP = (1/1 + 2/3) / 2; NDCG = (1 + 1/2) / (1 + 1/log2(3))
        ([[3.0, 2.0, 1.0]], [[True, False, True]],
         {"map": (1 + 2 / 3) / 2, "ndcg@10": 1.5 / (1 + 1 / math.log2(3)), "recall@1": 0.5}),
        # padded candidates (NaN) are never ranked, and a query without relevant candidates is skipped
        ([[NAN, 1.0, 2.0], [1.0, 2.0, NAN]], [[True, True, False], [False, False, False]],
         {"mrr@10": 0.5, "recall@1": 0.0}),
    ],
)
def test_ranking_metrics(scores: list[list[float]], relevant: list[list[bool]], expected: dict[str, float]) -> None:
    got = ranking_metrics(np.array(scores), np.array(relevant))
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key


def test_ranks_put_padding_last() -> None:
    r = ranks(np.array([[NAN, 5.0, 7.0]]), np.array([[False, False, False]]))
    assert r.tolist() == [[4, 2, 1]]


@pytest.mark.parametrize(
    ("student", "teacher", "top1", "tau"),
    [
        ([[3.0, 2.0, 1.0]], [[30.0, 20.0, 10.0]], 1.0, 1.0),
        ([[1.0, 2.0, 3.0]], [[30.0, 20.0, 10.0]], 0.0, -1.0),
        ([[3.0, 1.0, 2.0, NAN]], [[3.0, 2.0, 1.0, NAN]], 1.0, 1 / 3),
    ],
)
def test_agreement_metrics(student: list[list[float]], teacher: list[list[float]], top1: float, tau: float) -> None:
    got = agreement_metrics(np.array(student), np.array(teacher))
    assert got["top1_agreement"] == pytest.approx(top1)
    assert got["kendall_tau"] == pytest.approx(tau)


@pytest.mark.parametrize(
    ("pair", "expected"),
    [
        (json.dumps(["a", "b [x]"]), ["a", "b [x]"]),
        (str(["a", "b"]), ["a", "b"]),  # what str() of a list in a record gives
        ("[not a list", ["[not a list"]),
        ("a single passage", ["a single passage"]),
        (None, []),
    ],
)
def test_candidates(pair: str | None, expected: list[str]) -> None:
    assert candidates(Row("r", "q", pair)) == expected


@pytest.mark.parametrize(
    ("label", "expected", "error"),
    [("2", [2], None), ("0, 3", [0, 3], None), (None, None, None), ("", None, None),
     ("x", None, "candidate indices"), ("7", None, "outside")],
)
def test_relevant_indices(label: str | None, expected: list[int] | None, error: str | None) -> None:
    row = Row("r", "q", None, label)
    if error:
        with pytest.raises(ValueError, match=error):
            relevant_indices(row, 4)
    else:
        assert relevant_indices(row, 4) == expected
