"""Model2Vec initialisation of static students (tasks/static_init.py): the SIF weights and the LayerNorm rows as
worked examples and properties, then the real table distilled from all-MiniLM-L6-v2: right shape, not the raw
embeddings, and a better retrieval than the raw init before any training."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
import torch

from kubestill.api.v1alpha1 import DistillationJobSpec
from kubestill_trainer.tasks.base import Row
from kubestill_trainer.tasks.embedding import Embedding, SentenceEncoder
from kubestill_trainer.tasks.metrics import retrieval_metrics
from kubestill_trainer.tasks.static_init import (
    OUTPUT_GAIN,
    RESERVED_DIMS,
    layer_norm_rows,
    sif_weights,
    static_table,
)

from .conftest import BBC, MINILM


@pytest.mark.parametrize(("n", "coefficient", "expected"), [
    # p = (1/2, 1/3, 1/4) / (13/12) = (6/13, 4/13, 3/13); w = a / (a + p)
    (3, 0.5, [0.5 / (0.5 + 6 / 13), 0.5 / (0.5 + 4 / 13), 0.5 / (0.5 + 3 / 13)]),
    (1, 1e-4, [1e-4 / (1e-4 + 1.0)]),  # one token holds all the probability mass
    (2, 0.25, [0.25 / (0.25 + 0.6), 0.25 / (0.25 + 0.4)]),  # p = (1/2, 1/3) / (5/6)
])
def test_sif_weights(n: int, coefficient: float, expected: list[float]) -> None:
    assert sif_weights(n, coefficient) == pytest.approx(expected)


def test_sif_weights_fall_with_frequency() -> None:
    w = sif_weights(30000)
    assert np.all(np.diff(w) > 0) and 0 < w[0] < w[-1] < 1


@pytest.mark.parametrize(("n", "coefficient"), [(0, 1e-4), (5, 0.0), (5, 1.0)])
def test_sif_weights_refuse(n: int, coefficient: float) -> None:
    with pytest.raises(ValueError, match="sif_weights"):
        sif_weights(n, coefficient)


def _layer_norm(x: np.ndarray, dims: int) -> np.ndarray:
    norm = torch.nn.LayerNorm(x.shape[1], eps=1e-12).double()
    with torch.no_grad():
        norm.weight.zero_()
        norm.weight[:dims] = 1.0
        norm.bias.zero_()
        return norm(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize(("n", "dims", "width", "seed"), [(1, 1, 4, 0), (50, 5, 8, 1), (200, 61, 64, 2),
                                                          (200, 20, 64, 3)])
def test_layer_norm_returns_the_scaled_rows(n: int, dims: int, width: int, seed: int) -> None:
    z = np.random.default_rng(seed).normal(size=(n, dims)) * np.random.default_rng(seed).uniform(0, 5, (n, 1))
    x, scale = layer_norm_rows(z, width)
    out = _layer_norm(x, dims)
    np.testing.assert_allclose(out[:, :dims], scale * z, atol=1e-6)
    np.testing.assert_allclose(out[:, dims:], 0.0, atol=1e-9)


def test_layer_norm_rows_need_room() -> None:
    with pytest.raises(ValueError, match="reserved"):
        layer_norm_rows(np.ones((2, 6)), 8)


def test_static_table_silences_specials_and_maps_back() -> None:
    rng = np.random.default_rng(0)
    tokens = [f"t{i}" for i in range(40)]
    vectors = rng.normal(size=(40, 6)).astype(np.float32)
    ids = {t: i + 2 for i, t in enumerate(tokens)}  # ids 0 and 1: special tokens the distiller left out
    table = static_table(tokens, vectors, ids, 42, 9, silent_ids={2})
    assert table.word.shape == (42, 9) and table.back.shape == (6, 9)
    assert table.norm_weight.tolist() == [OUTPUT_GAIN] * 6 + [0.0] * 3
    pooled = _layer_norm(table.word.astype(np.float64), 6) * OUTPUT_GAIN
    np.testing.assert_allclose(pooled[[0, 1, 2]], 0.0, atol=1e-6)  # never seen, or silenced
    # Through `back`, a row is its SIF-weighted, centred teacher vector (6 of 6 components kept).
    centred = (vectors - vectors.mean(axis=0)) * sif_weights(40)[:, None]
    np.testing.assert_allclose(pooled[3:] @ table.back.T, centred[1:], atol=1e-4)


# --- the real table, distilled from all-MiniLM-L6-v2 ---------------------------------------------------------


def _spec(init: str) -> DistillationJobSpec:
    return DistillationJobSpec.model_validate({
        "task": "embedding", "teacher": {"modelUri": MINILM},
        "student": {"architecture": {"numLayers": 0, "init": init}},
        "data": {"uri": BBC, "fields": {"text": "title", "pair": "lead"}},
        "loss": {"terms": [{"name": "embedding-cosine"}]},
        "training": {"maxSeqLength": 64},
        "output": {"studentModelName": "m2v", "artifactUri": "file:///tmp/unused"},
    })


@pytest.fixture(scope="module")
def students() -> dict[str, Any]:
    from kubestill_trainer.storage import resolve_uri

    teacher = resolve_uri(MINILM)
    return {init: Embedding(_spec(init)).build_student({}, teacher).eval()
            for init in ("teacher-embeddings", "model2vec")}


@pytest.mark.slow
def test_table_shape_and_not_the_raw_embeddings(students: dict[str, SentenceEncoder]) -> None:
    raw, m2v = students["teacher-embeddings"], students["model2vec"]
    raw_table = raw.encoder.get_input_embeddings().weight
    table = m2v.encoder.get_input_embeddings().weight
    assert table.shape == raw_table.shape and m2v.num_layers == 0
    assert not torch.allclose(table, raw_table)
    assert m2v.dense is not None and m2v.embedding_dim == raw.embedding_dim  # back in the teacher's space
    # Every PCA dimension is in use; the reserved ones are masked out by LayerNorm's weight.
    norm_weight = m2v.encoder.embeddings.LayerNorm.weight
    assert int((norm_weight > 0).sum()) == m2v.hidden_size - RESERVED_DIMS


@pytest.mark.slow
def test_better_retrieval_than_raw_before_training(students: dict[str, SentenceEncoder]) -> None:
    from kubestill_trainer.data import load_rows
    from kubestill_trainer.storage import resolve_uri

    spec = _spec("model2vec")
    rows = random.Random(3).sample(load_rows(resolve_uri(BBC), spec.data), 300)
    task = Embedding(spec)
    recall: dict[str, float] = {}
    for init, model in students.items():
        pred = task.predict(model, [Row(r.id, r.text, pair=r.pair) for r in rows], 64)
        recall[init] = retrieval_metrics(pred["embedding"], pred["pair_embedding"])["recall@10"]
    # Measured: 0.63 vs 0.39 on 503 FAQ pairs (bench/embedding.py --data faq); BBC titles -> leads alike.
    assert recall["model2vec"] > recall["teacher-embeddings"] + 0.05, recall
