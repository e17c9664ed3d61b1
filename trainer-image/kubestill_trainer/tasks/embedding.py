"""Sentence embeddings: the teacher's embedding of each text (and of its pair) is the target
(embedding-mse, embedding-cosine, infonce; hidden-mse / attention-mse with a local teacher).

`SentenceEncoder` = transformer encoder -> pooling -> optional Dense projection -> optional L2 normalise,
read from a sentence-transformers directory (modules.json) or from our own format. The Dense projection is
added to the student when a loss term sets `outputDim` (e.g. a narrow student projected to the teacher's
width, or a wide one to a smaller serving dimension) and is exported with it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from kubestill.api.v1alpha1.common import Task
from kubestill.api.v1alpha1.distillationjob import StaticInit

from ..outputs import Array, ModelOutputs
from .base import (
    EXPORT_EXAMPLE_ROWS,
    DistillTask,
    Features,
    LabelBatch,
    Predictions,
    Row,
    TaskModel,
    register_task,
    texts_of,
)
from .encoder import (
    cut_from_teacher,
    encoder_from_config,
    encoder_inputs,
    evenly_spaced,
    load_encoder,
    load_state,
    load_tokenizer,
    pool,
    read_card,
    save_model_dir,
    smaller_encoder,
    tokenize,
)
from .metrics import mean_cosine, retrieval_metrics
from .onnx_model import OnnxModel
from .static_init import model2vec_init
from .teacher import Teacher

EMBEDDING_LOSSES = ("embedding-mse", "embedding-cosine", "infonce")


class SentenceEncoder(TaskModel):
    task = Task.EMBEDDING

    def __init__(
        self, encoder: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pooling: str = "mean",
        normalize: bool = True, dense_dim: int | None = None, max_length: int = 128,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.normalize = normalize
        self.max_length = max_length
        width = int(encoder.config.hidden_size)
        self.dense: nn.Linear | None = nn.Linear(width, dense_dim) if dense_dim else None

    def encode(self, rows: Sequence[Row], max_length: int) -> Features:
        return tokenize(self.tokenizer, [r.text for r in rows], max_length)

    def forward(
        self, features: Features, *, output_hidden_states: bool = False, output_attentions: bool = False
    ) -> ModelOutputs:
        out = self.encoder(**encoder_inputs(self.encoder, features), output_hidden_states=output_hidden_states,
                           output_attentions=output_attentions)
        emb = pool(out.last_hidden_state, features["attention_mask"], self.pooling)
        if self.dense is not None:
            emb = self.dense(emb)
        if self.normalize:
            emb = F.normalize(emb, dim=-1)
        return ModelOutputs(embedding=emb, hidden_states=out.hidden_states, attentions=out.attentions)

    def save(self, path: Path) -> None:
        save_model_dir(path, self, self.encoder, self.tokenizer, {
            "task": "embedding", "format": "kubestill-sentence-encoder", "pooling": self.pooling,
            "normalize": self.normalize, "denseDim": self.dense.out_features if self.dense else None,
            "embeddingDim": self.embedding_dim, "maxSeqLength": self.max_length,
        })

    @property
    def hidden_size(self) -> int:
        return int(self.encoder.config.hidden_size)

    @property
    def num_layers(self) -> int:
        return int(self.encoder.config.num_hidden_layers)

    @property
    def embedding_dim(self) -> int:
        return self.dense.out_features if self.dense is not None else self.hidden_size


def _load_sentence_transformers(path: Path, max_length: int) -> SentenceEncoder:
    """A sentence-transformers directory: Transformer, Pooling, optional Dense (identity activation) and
    Normalize modules, read from modules.json without importing sentence-transformers."""
    modules = json.loads((path / "modules.json").read_text())
    pooling, normalize, dense_dir = "mean", False, None
    for m in modules:
        kind = str(m["type"]).rsplit(".", 1)[-1]
        sub = path / m.get("path", "")
        if kind == "Pooling":
            cfg = json.loads((sub / "config.json").read_text())
            pooling = "cls" if cfg.get("pooling_mode_cls_token") else "mean"
            if not (cfg.get("pooling_mode_cls_token") or cfg.get("pooling_mode_mean_tokens")):
                raise ValueError(f"{sub}: only mean or CLS pooling is supported")
        elif kind == "Normalize":
            normalize = True
        elif kind == "Dense":
            dense_dir = sub
        elif kind != "Transformer":
            raise ValueError(f"{path}: unsupported sentence-transformers module {m['type']}")
    st_cfg = path / "sentence_bert_config.json"
    if st_cfg.exists():
        max_length = int(json.loads(st_cfg.read_text()).get("max_seq_length", max_length))
    model = SentenceEncoder(load_encoder(path), load_tokenizer(path), pooling, normalize, None, max_length)
    if dense_dir is not None:
        cfg = json.loads((dense_dir / "config.json").read_text())
        if "Identity" not in str(cfg.get("activation_function", "Identity")):
            raise ValueError(f"{dense_dir}: only Dense layers with identity activation are supported")
        model.dense = nn.Linear(int(cfg["in_features"]), int(cfg["out_features"]), bias=cfg.get("bias", True))
        weights = load_file(str(dense_dir / "model.safetensors"))
        model.dense.load_state_dict({k.removeprefix("linear."): v for k, v in weights.items()})
    return model.eval()


def load_sentence_encoder(path: Path, max_length: int = 128) -> SentenceEncoder:
    card = read_card(path)
    if card and card.get("format") == "kubestill-sentence-encoder":
        model = SentenceEncoder(encoder_from_config(path), load_tokenizer(path), card["pooling"],
                                bool(card["normalize"]), card.get("denseDim"), int(card["maxSeqLength"]))
        load_state(model, path)
        return model.eval()
    if (path / "modules.json").exists():
        return _load_sentence_transformers(path, max_length)
    # A plain encoder directory: mean pooling, normalised (the common sentence-embedding recipe).
    return SentenceEncoder(load_encoder(path), load_tokenizer(path), "mean", True, None, max_length).eval()


def _back_to_teacher(teacher: SentenceEncoder, back: torch.Tensor) -> nn.Linear:
    """The Dense layer of a Model2Vec-initialised student: its pooled output (PCA coordinates) back to the
    teacher's space, through the teacher's own Dense layer when it has one (back [teacher hidden, student
    hidden] -> a Linear of student hidden -> teacher embedding dim), so KD losses compare like with like."""
    weight, bias = back, torch.zeros(back.shape[0])
    if teacher.dense is not None:
        weight = teacher.dense.weight.detach().cpu() @ back
        t_bias = teacher.dense.bias
        bias = t_bias.detach().cpu().clone() if t_bias is not None else torch.zeros(weight.shape[0])
    dense = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        dense.weight.copy_(weight)
        dense.bias.copy_(bias)
    return dense


@register_task(Task.EMBEDDING)
class Embedding(DistillTask):
    primary_metric = "ndcg@10"

    def primary(self, meta: Mapping[str, Any]) -> str:
        if self.spec.evaluation.primary_metric:
            return self.spec.evaluation.primary_metric
        return "ndcg@10" if self.spec.data.fields.pair else "cosine"

    def _output_dim(self) -> int | None:
        # One value at most: the spec refuses terms asking for different sizes (LossSpec's rule).
        dims = {t.output_dim for t in self.spec.loss.terms if t.name in EMBEDDING_LOSSES and t.output_dim}
        return dims.pop() if dims else None

    # --- label -----------------------------------------------------------------------------------------

    def label(self, teacher: Teacher, rows: Sequence[Row], meta: Mapping[str, Any]) -> LabelBatch:
        emb = np.asarray(teacher.embed([r.text for r in rows]), dtype=np.float32)
        targets = {"embedding": emb}
        bad = ~np.isfinite(emb).all(axis=-1) | (np.linalg.norm(emb, axis=-1) == 0)
        if self.spec.data.fields.pair:
            # Rows without a pair embed "" (an empty pair is reported as invalid below).
            pair = np.asarray(teacher.embed([r.pair or "" for r in rows]), dtype=np.float32)
            targets["pair_embedding"] = pair
            bad |= ~np.isfinite(pair).all(axis=-1)
        invalid = ["invalid teacher embedding" if b else None for b in bad]
        return LabelBatch(targets={k: np.nan_to_num(v) for k, v in targets.items()},
                          confidence=np.ones(len(rows), np.float32), invalid=invalid)

    def training_examples(
        self, rows: Sequence[Row], targets: Mapping[str, Array]
    ) -> tuple[list[Row], dict[str, Array]]:
        """Pairs are sentences too: the student learns to embed both sides (title and lead)."""
        if "pair_embedding" not in targets:
            return list(rows), {"embedding": targets["embedding"]}
        keep = [i for i, r in enumerate(rows) if r.pair]
        pair_rows = [Row(f"{rows[i].id}#pair", rows[i].pair or "", segment=rows[i].segment) for i in keep]
        return [*rows, *pair_rows], {
            "embedding": np.concatenate([targets["embedding"], targets["pair_embedding"][keep]])}

    # --- models ----------------------------------------------------------------------------------------

    def build_student(self, meta: Mapping[str, Any], teacher_dir: Path | None) -> TaskModel:
        student = self.spec.student
        max_len = self.spec.training.max_seq_length
        out_dim = self._output_dim()
        if student.architecture is not None:
            if teacher_dir is None:
                raise ValueError("student.architecture needs a local teacher (teacher.modelUri)")
            teacher = load_sentence_encoder(teacher_dir, max_len)
            arch = student.architecture
            if arch.hidden_size is not None:
                enc = smaller_encoder(teacher.encoder, arch.num_layers, arch.hidden_size)
            else:
                layers = arch.from_teacher_layers or evenly_spaced(arch.num_layers, teacher.num_layers)
                enc = cut_from_teacher(teacher.encoder, layers)
            model = SentenceEncoder(enc, teacher.tokenizer, teacher.pooling, teacher.normalize, None, max_len)
            if arch.static_init == StaticInit.MODEL2VEC:
                model.dense = _back_to_teacher(teacher, model2vec_init(enc, teacher.encoder, teacher.tokenizer))
            elif teacher.dense is not None and out_dim is None and arch.hidden_size is None:
                model.dense = nn.Linear(teacher.dense.in_features, teacher.dense.out_features)
                model.dense.load_state_dict(teacher.dense.state_dict())
        else:
            assert student.base_model_uri is not None
            from ..storage import resolve_uri

            model = load_sentence_encoder(resolve_uri(student.base_model_uri), max_len)
            model.max_length = max_len
        if out_dim is not None and model.embedding_dim != out_dim:
            model.dense = nn.Linear(model.hidden_size, out_dim)
        return model.train()

    def load_model(self, path: Path) -> TaskModel:
        return load_sentence_encoder(path, self.spec.training.max_seq_length)

    # --- train -----------------------------------------------------------------------------------------

    def teacher_outputs(self, targets: Mapping[str, torch.Tensor]) -> ModelOutputs:
        return ModelOutputs(embedding=targets["embedding"])

    # --- evaluate --------------------------------------------------------------------------------------

    @torch.no_grad()
    def _embed(self, model: TaskModel, texts: Sequence[str], batch_size: int) -> Array:
        model.eval()
        device = next(model.parameters()).device
        out = []
        for i in range(0, len(texts), batch_size):
            rows = [Row(str(j), t) for j, t in enumerate(texts[i : i + batch_size])]
            feats = {k: v.to(device) for k, v in model.encode(rows, self.spec.training.max_seq_length).items()}
            emb = model(feats).embedding
            assert emb is not None
            out.append(emb.float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def predict(self, model: TaskModel, rows: Sequence[Row], batch_size: int) -> Predictions:
        out = {"embedding": self._embed(model, [r.text for r in rows], batch_size)}
        if self.spec.data.fields.pair:
            out["pair_embedding"] = self._embed(model, [r.pair or "" for r in rows], batch_size)
        return out

    def teacher_predictions(self, targets: Mapping[str, Array]) -> Predictions:
        return {k: targets[k] for k in ("embedding", "pair_embedding") if k in targets}

    def metrics(
        self, predictions: Predictions, teacher: Predictions, rows: Sequence[Row], meta: Mapping[str, Any]
    ) -> dict[str, float]:
        out: dict[str, float] = {}
        emb, t_emb = predictions["embedding"], teacher["embedding"]
        if emb.shape == t_emb.shape:  # a student projected to another width has no cosine to the teacher
            both = [(emb, t_emb)]
            if "pair_embedding" in predictions:
                both.append((predictions["pair_embedding"], teacher["pair_embedding"]))
            out["cosine"] = float(np.mean([mean_cosine(a, b) for a, b in both]))
        if "pair_embedding" in predictions and len(rows) > 1:
            out.update(retrieval_metrics(emb, predictions["pair_embedding"], k=10))
        return out

    # --- export and serve ------------------------------------------------------------------------------

    def onnx_example(self, model: TaskModel) -> tuple[Features, list[str]]:
        # Output names in upper case: a lower-case "embedding" clashes with a node name inside the graph.
        rows = [Row(str(i), text) for i, text in enumerate(EXPORT_EXAMPLE_ROWS)]
        return model.encode(rows, self.spec.training.max_seq_length), ["EMBEDDING"]

    def onnx_forward(self, model: TaskModel, features: Features) -> tuple[torch.Tensor, ...]:
        emb = model(features).embedding
        assert emb is not None
        return (emb,)

    def serve(self, model: TaskModel, inputs: Mapping[str, Array]) -> dict[str, Array]:
        texts = texts_of(inputs["TEXT"])
        return {"EMBEDDING": self._embed(model, texts, max(1, len(texts))).astype(np.float32)}

    serves_onnx = True

    def serve_onnx(self, model: OnnxModel, inputs: Mapping[str, Array]) -> dict[str, Array]:
        return {"EMBEDDING": model.run(texts_of(inputs["TEXT"]))["EMBEDDING"].astype(np.float32)}
