"""The standard export layouts load with the libraries themselves, with no missing or unexpected weight, and
compute what kubestill's own loader computes on real text (BBC News titles): a static and a narrow projected
embedding student through sentence-transformers, a classifier with kubestill's head through sentence-transformers
(logits + labels.json), a classifier cut from a Hugging Face classifier through AutoModelForSequenceClassification,
and a bi-encoder reranker whose scores are sentence-transformers' cosine similarities.

Each student comes out of the real command line (label, train, evaluate, export) on a few dozen rows, one epoch.
Tolerance: 1e-4 absolute (same weights and operations; padding differs between batch compositions)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from .conftest import BBC, MINILM, run_trainer, write_job

pytestmark = pytest.mark.slow
TOLERANCE = 1e-4


def _train_and_export(tmp_path: Path, spec: dict[str, Any]) -> Path:
    """Run all four stages on `spec` (+ small data, one epoch, a gate any student passes); return export/."""
    work = tmp_path / "work"
    spec = {
        "data": {"uri": BBC, "fields": {"text": "title", "label": "label"}, "maxSamples": 48, "seed": 3},
        "training": {"epochs": 1, "batchSize": 16, "learningRate": 1e-3, "maxSeqLength": 32},
        "evaluation": {"minQualityRatio": 0.01},
        "output": {"studentModelName": "std", "artifactUri": f"file://{work}", "formats": ["safetensors"]},
        **spec,
    }
    done = run_trainer(["all", "--config", str(write_job(tmp_path / "job.yaml", spec))])
    assert done.returncode == 0, done.stderr[-3000:]
    return work / "export"


def _kubestill(export: Path) -> tuple[list[str], list[str], dict[str, np.ndarray]]:  # type: ignore[type-arg]
    """Texts (titles) and pairs (article leads, longer than maxSeqLength: truncated) of the held-out rows, and
    kubestill's own predictions for them (load_for_serving on export/model)."""
    from kubestill_trainer.labelstore import load_labels
    from kubestill_trainer.serving.loader import load_for_serving

    rows, _ = load_labels(export.parent / "labels").subset("test")
    assert len(rows) >= 5
    task, model = load_for_serving(export / "model")
    return [r.text for r in rows], [r.pair or "" for r in rows], task.predict(model, rows, 4)


def _assert_transformer_loads_cleanly(path: Path) -> None:
    """The Transformer module's weights (the directory's root) match the architecture key for key."""
    from transformers import AutoModel

    _, info = AutoModel.from_pretrained(str(path), output_loading_info=True)
    assert not any(info.values()), info  # missing, unexpected, mismatched keys and errors: all empty


def _sentence_transformer(path: Path) -> Any:
    from sentence_transformers import SentenceTransformer

    _assert_transformer_loads_cleanly(path)
    return SentenceTransformer(str(path), device="cpu")


@pytest.mark.parametrize(("architecture", "output_dim", "modules"), [
    # A static student starts from Model2Vec (PCA coordinates): a Dense layer maps them back to the teacher's width.
    ({"numLayers": 0}, None, ["Transformer", "Pooling", "Dense", "Normalize"]),
    # Narrower than the teacher (128 vs 384): outputDim adds a projection back to the teacher's width.
    ({"numLayers": 1, "hiddenSize": 128}, 384, ["Transformer", "Pooling", "Dense", "Normalize"]),
], ids=["static", "narrow-projected"])
def test_embedding_student_loads_with_sentence_transformers(
    tmp_path: Path, architecture: dict[str, Any], output_dim: int | None, modules: list[str]
) -> None:
    dim = {"outputDim": output_dim} if output_dim else {}
    export = _train_and_export(tmp_path, {
        "task": "embedding", "teacher": {"modelUri": MINILM}, "student": {"architecture": architecture},
        "data": {"uri": BBC, "fields": {"text": "title", "pair": "lead"}, "maxSamples": 48, "seed": 3},
        "loss": {"terms": [{"name": "embedding-mse", **dim}, {"name": "embedding-cosine", **dim}]},
    })
    assert json.loads((export / "export.json").read_text())["sentenceTransformers"]["maxAbsDiff"] <= TOLERANCE
    texts, pairs, ours = _kubestill(export)
    path = export / "sentence-transformers"
    model = _sentence_transformer(path)
    assert [m["type"].rsplit(".", 1)[-1] for m in json.loads((path / "modules.json").read_text())] == modules
    got = model.encode(texts, convert_to_numpy=True)
    assert got.shape == ours["embedding"].shape == (len(texts), 384)
    np.testing.assert_allclose(got, ours["embedding"], atol=TOLERANCE)
    assert max(len(model.tokenizer(p)["input_ids"]) for p in pairs) > 32  # some leads are truncated (maxSeqLength)
    np.testing.assert_allclose(model.encode(pairs, convert_to_numpy=True), ours["pair_embedding"], atol=TOLERANCE)


def test_classifier_with_kubestill_head_loads_with_sentence_transformers(bbc_teacher: Path, tmp_path: Path) -> None:
    export = _train_and_export(tmp_path, {
        "task": "classification", "teacher": {"modelUri": f"file://{bbc_teacher}"},
        "student": {"architecture": {"numLayers": 1}},
        "loss": {"terms": [{"name": "logit-kl", "temperature": 2.0}]},
    })
    assert "transformers" not in json.loads((export / "export.json").read_text())
    texts, _, ours = _kubestill(export)
    path = export / "sentence-transformers"
    model = _sentence_transformer(path)
    logits = model.encode(texts, convert_to_numpy=True)
    np.testing.assert_allclose(logits, ours["logits"], atol=TOLERANCE)
    labels = json.loads((path / "labels.json").read_text())
    card = json.loads((export / "model" / "kubestill.json").read_text())
    assert [labels["id2label"][str(i)] for i in range(len(card["labels"]))] == card["labels"]
    assert {name: labels["label2id"][name] for name in card["labels"]} == {n: i for i, n in enumerate(card["labels"])}


@pytest.fixture()
def hf_teacher(tmp_path: Path) -> Path:
    """A Hugging Face BERT classifier over the five BBC topics: MiniLM's weights and a fresh classifier head
    (its quality does not matter here, only its class)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from kubestill_trainer.storage import resolve_uri

    source = resolve_uri(MINILM)
    topics = ["business", "entertainment", "politics", "sports", "tech"]
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(source), num_labels=5, id2label=dict(enumerate(topics)), label2id={t: i for i, t in enumerate(topics)})
    out = tmp_path / "hf-teacher"
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(source)).save_pretrained(str(out))
    return out


def test_hf_classifier_loads_with_auto_model_for_sequence_classification(hf_teacher: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    export = _train_and_export(tmp_path, {
        "task": "classification", "teacher": {"modelUri": f"file://{hf_teacher}"},
        "student": {"architecture": {"numLayers": 1}},
        "loss": {"terms": [{"name": "logit-kl", "temperature": 2.0}]},
        # The teacher's head is untrained (gold accuracy near 0 gives no quality ratio): gate on imitation.
        "evaluation": {"minQualityRatio": 0.01, "primaryMetric": "agreement"},
    })
    assert "sentenceTransformers" not in json.loads((export / "export.json").read_text())
    texts, _, ours = _kubestill(export)
    path = export / "transformers"
    model, info = AutoModelForSequenceClassification.from_pretrained(str(path), output_loading_info=True)
    assert not any(info.values()), info
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    with torch.no_grad():
        logits = model.eval()(**tokenizer(texts, padding=True, truncation=True, max_length=32,
                                          return_tensors="pt")).logits.numpy()
    np.testing.assert_allclose(logits, ours["logits"], atol=TOLERANCE)
    card = json.loads((export / "model" / "kubestill.json").read_text())
    assert [model.config.id2label[i] for i in range(len(card["labels"]))] == card["labels"]
    assert model.config.label2id == {name: i for i, name in enumerate(card["labels"])}


def test_bi_encoder_reranker_scores_with_sentence_transformers(tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from kubestill_trainer.labelstore import load_labels
    from kubestill_trainer.serving.loader import load_for_serving
    from kubestill_trainer.tasks.reranking import candidates
    from kubestill_trainer.tasks.reranking_data import bbc_title_lead_groups, write_jsonl

    data = write_jsonl(bbc_title_lead_groups(group_size=4, limit=32, seed=1), tmp_path / "groups.jsonl")
    export = _train_and_export(tmp_path, {
        "task": "reranking", "teacher": {"modelUri": MINILM},
        "student": {"architecture": {"numLayers": 1}},
        "data": {"uri": f"file://{data}", "seed": 3, "fields": {"text": "query", "pair": "passages", "label": "label"}},
        "loss": {"terms": [{"name": "margin-mse"}]},
    })
    assert json.loads((export / "export.json").read_text())["sentenceTransformers"]["score"] == "cosine"
    rows, _ = load_labels(export.parent / "labels").subset("test")
    assert len(rows) >= 3
    task, own = load_for_serving(export / "model")
    ours = task.predict(own, rows, 8)["scores"]
    _assert_transformer_loads_cleanly(export / "sentence-transformers")
    model = SentenceTransformer(str(export / "sentence-transformers"), device="cpu")
    for row, expected in zip(rows, ours, strict=True):
        passages = candidates(row)
        query = model.encode([row.text], convert_to_tensor=True)
        got = model.similarity(query, model.encode(passages, convert_to_tensor=True))[0].numpy()
        np.testing.assert_allclose(got, expected[: len(passages)], atol=TOLERANCE)
