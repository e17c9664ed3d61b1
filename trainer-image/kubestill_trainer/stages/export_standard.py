"""export/sentence-transformers and export/transformers: the student in layouts the libraries load themselves.

export/model is kubestill's own directory (one `model.safetensors` for the whole task model, keys prefixed
`encoder.`); sentence-transformers or transformers loading it report every weight MISSING and run random ones.
The layouts written here load with no missing or unexpected key and compute what kubestill computes:

- embedding student (`SentenceEncoder`) -> `sentence-transformers/`: Transformer + Pooling (mean or CLS, ours)
  [+ Dense, identity activation, when the student projects] [+ Normalize when it normalises].
  `SentenceTransformer(path).encode(texts)` returns our embeddings. A static student (numLayers 0) exports the
  same way: its encoder is the teacher's embedding block (token + position + type embeddings, LayerNorm) with no
  layer, which a Transformer module of 0 layers reproduces exactly; sentence-transformers' StaticEmbedding
  would drop the position embeddings and the LayerNorm and give other vectors.
- classifier cut from a Hugging Face classifier (`HFClassifier`) -> `transformers/`:
  `AutoModelForSequenceClassification` with `id2label` / `label2id`, the very class kubestill runs.
- classifier with kubestill's head (`EncoderClassifier`: mean or CLS pooling -> one Linear) ->
  `sentence-transformers/` with the head as a Dense layer (identity activation): `encode(texts)` returns the
  logits, and `labels.json` names their columns. No stock `*ForSequenceClassification` class computes this: BERT's
  runs its pooler (Linear + tanh) on the CLS token before the classifier, and none mean-pools.

Each layout is loaded back with its library and compared with kubestill's model on a few texts of different
lengths: an export that differs by more than STANDARD_TOLERANCE raises instead of being written silently.
- bi-encoder reranker (`RerankModel`, mode bi) -> `sentence-transformers/` of its encoder: our score is the cosine
  of query and passage embeddings, which is `model.similarity` (the layout's similarity function is cosine).

Cross-encoder rerankers (pooling + Linear, like our classifiers) and generators get no standard layout yet (the
summary says so).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer
from torch import nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ..tasks.base import EXPORT_EXAMPLE_ROWS, Row, TaskModel
from ..tasks.classification import EncoderClassifier, HFClassifier
from ..tasks.embedding import SentenceEncoder
from ..tasks.reranking import RerankModel

SENTENCE_TRANSFORMERS_DIR = "sentence-transformers"
TRANSFORMERS_DIR = "transformers"
LABELS_FILE = "labels.json"
# Same weights and operations on both sides; only padding differs (sentence-transformers batches by length), which
# moves float32 results by about 1e-6.
STANDARD_TOLERANCE = 1e-4
# Different lengths (padding), and one longer than any maxSeqLength (truncation: sentence-transformers keeps the
# student's limit as the tokenizer's model_max_length).
CHECK_TEXTS = (*EXPORT_EXAMPLE_ROWS, "Short.", " ".join(["A sentence repeated until it must be truncated."] * 120))


def label_maps(labels: list[str]) -> dict[str, dict[str, Any]]:
    """`id2label` / `label2id` as transformers writes them to config.json.

    >>> label_maps(["sport", "tech"])
    {'id2label': {'0': 'sport', '1': 'tech'}, 'label2id': {'sport': 0, 'tech': 1}}
    """
    return {"id2label": {str(i): name for i, name in enumerate(labels)},
            "label2id": {name: i for i, name in enumerate(labels)}}


def _ours(model: TaskModel, texts: tuple[str, ...], max_length: int) -> np.ndarray:  # type: ignore[type-arg]
    """kubestill's output for `texts`: the embedding, or the logits of a classifier ([N, D] float32)."""
    model = model.cpu().eval()
    with torch.no_grad():
        out = model(model.encode([Row(str(i), t) for i, t in enumerate(texts)], max_length))
    tensor = out.embedding if out.embedding is not None else out.logits
    assert tensor is not None
    return np.asarray(tensor.float().numpy())


def _check(name: str, expected: np.ndarray, got: np.ndarray) -> float:  # type: ignore[type-arg]
    if expected.shape != got.shape:
        raise ValueError(f"{name} export: output shape {got.shape} differs from kubestill's {expected.shape}")
    worst = float(np.max(np.abs(expected - got)))
    print(f"{name}: max abs diff vs kubestill {worst:.3e} (tolerance {STANDARD_TOLERANCE:g})", flush=True)
    if not worst <= STANDARD_TOLERANCE:  # not `>`: a NaN anywhere must fail too
        raise ValueError(f"{name} export differs from kubestill's model by {worst:.3e} > {STANDARD_TOLERANCE:g}")
    return worst


def _write_sentence_transformer(
    encoder: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pooling: str, max_length: int,
    tail: list[nn.Module], out: Path,
) -> None:
    """Transformer (from `encoder`, saved to a scratch directory it is read from) + Pooling + `tail`."""
    with tempfile.TemporaryDirectory(dir=out.parent) as scratch:
        encoder.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        transformer = Transformer(scratch, max_seq_length=max_length)
        modules = [transformer, Pooling(int(encoder.config.hidden_size), pooling_mode=pooling), *tail]
        SentenceTransformer(modules=modules, device="cpu").save(str(out))


def _dense(linear: nn.Linear) -> Dense:
    return Dense(linear.in_features, linear.out_features, bias=linear.bias is not None,
                 activation_function=nn.Identity(), init_weight=linear.weight.detach().clone(),
                 init_bias=None if linear.bias is None else linear.bias.detach().clone())


def export_sentence_encoder(model: SentenceEncoder, out: Path) -> dict[str, Any]:
    """An embedding student as a sentence-transformers directory; returns the summary entry.

    Raises ValueError when `SentenceTransformer(out).encode` differs from the student by > STANDARD_TOLERANCE.
    """
    tail: list[nn.Module] = [_dense(model.dense)] if model.dense is not None else []
    if model.normalize:
        tail.append(Normalize())
    _write_sentence_transformer(model.encoder, model.tokenizer, model.pooling, model.max_length, tail, out)
    loaded = SentenceTransformer(str(out), device="cpu")
    got = loaded.encode(list(CHECK_TEXTS), convert_to_numpy=True)
    worst = _check("sentence-transformers", _ours(model, CHECK_TEXTS, model.max_length), got)
    return {"dir": out.name, "library": "sentence-transformers", "maxAbsDiff": worst}


def export_encoder_classifier(model: EncoderClassifier, out: Path) -> dict[str, Any]:
    """A classifier with kubestill's head as a sentence-transformers directory whose `encode` returns the
    logits ([N, len(labels)]); `labels.json` holds `id2label` / `label2id`. Raises ValueError as above."""
    _write_sentence_transformer(model.encoder, model.tokenizer, model.pooling, model.max_length,
                                [_dense(model.head)], out)
    (out / LABELS_FILE).write_text(json.dumps(label_maps(model.labels), indent=2) + "\n")
    loaded = SentenceTransformer(str(out), device="cpu")
    got = loaded.encode(list(CHECK_TEXTS), convert_to_numpy=True)
    worst = _check("sentence-transformers classifier", _ours(model, CHECK_TEXTS, model.max_length), got)
    return {"dir": out.name, "library": "sentence-transformers", "output": "logits", "labels": LABELS_FILE,
            "maxAbsDiff": worst}


def export_hf_classifier(model: HFClassifier, out: Path) -> dict[str, Any]:
    """A Hugging Face classifier as `AutoModelForSequenceClassification` + tokenizer, with our labels in
    `id2label` / `label2id`. Raises ValueError when its logits differ from the student's."""
    model.model.config.update(label_maps(model.labels))
    model.model.save_pretrained(str(out))
    model.tokenizer.save_pretrained(str(out))
    loaded = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    enc = tokenizer(list(CHECK_TEXTS), padding=True, truncation=True, max_length=model.max_length,
                    return_tensors="pt")
    with torch.no_grad():
        got = loaded(**enc).logits.float().numpy()
    worst = _check("transformers", _ours(model, CHECK_TEXTS, model.max_length), got)
    return {"dir": out.name, "library": "transformers", "class": "AutoModelForSequenceClassification",
            "maxAbsDiff": worst}


def export_standard(model: TaskModel, export_dir: Path) -> dict[str, Any]:
    """Write the standard layout of `model` under `export_dir` (see the module docstring).

    Returns the entries for export.json: {"sentenceTransformers": {...}} or {"transformers": {...}}, or
    {"standard": "none: ..."} for the kinds without one (cross-encoder rerankers, generators).
    """
    st_dir, hf_dir = export_dir / SENTENCE_TRANSFORMERS_DIR, export_dir / TRANSFORMERS_DIR
    for stale in (st_dir, hf_dir):
        shutil.rmtree(stale, ignore_errors=True)
    if isinstance(model, SentenceEncoder):
        return {"sentenceTransformers": export_sentence_encoder(model, st_dir)}
    if isinstance(model, EncoderClassifier):
        return {"sentenceTransformers": export_encoder_classifier(model, st_dir)}
    if isinstance(model, HFClassifier):
        return {"transformers": export_hf_classifier(model, hf_dir)}
    if isinstance(model, RerankModel) and model.bi is not None:
        return {"sentenceTransformers": {**export_sentence_encoder(model.bi, st_dir), "score": "cosine"}}
    return {"standard": f"none: no standard layout for {type(model).__name__} yet (only export/model)"}
