"""Text classification: the teacher's class logits are the targets (logit-kl, cross-entropy on hard labels,
hidden-mse / attention-mse with a local teacher).

Models: `EncoderClassifier` (a transformer encoder, mean pooling, a linear head: our own format, also the
shape of a teacher made by fitting a head on a frozen sentence encoder) and `HFClassifier` (any Hugging
Face *ForSequenceClassification directory). A student cut from the teacher keeps the teacher's kind.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, PreTrainedModel, PreTrainedTokenizerBase

from kubestill.api.v1alpha1.common import Task
from kubestill.api.v1alpha1.distillationjob import StaticInit, StudentArchitecture

from ..outputs import Array, ModelOutputs
from .base import (
    EXPORT_EXAMPLE_ROWS,
    MODEL_CARD,
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
from .linear_probe import fit_linear_head, pooled_states
from .metrics import classification_metrics, softmax
from .onnx_model import OnnxModel
from .static_init import model2vec_init
from .teacher import Teacher

ENCODER_CLASSIFIER_FORMAT = "kubestill-encoder-classifier"  # kubestill.json of our own classifiers
# Rows a static student's head is fitted on (init_head): L-BFGS over all of them at once, so a bound keeps memory
# and time small on large data (50k x 384 float32 features: 77 MB).
HEAD_FIT_ROWS = 50_000

class EncoderClassifier(TaskModel):
    """encoder -> pooling -> linear head over `labels`."""

    task = Task.CLASSIFICATION

    def __init__(
        self, encoder: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, labels: list[str],
        pooling: str = "mean", max_length: int = 128,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.labels = list(labels)
        self.pooling = pooling
        self.max_length = max_length
        self.head = nn.Linear(int(encoder.config.hidden_size), len(labels))
        self.head_is_fresh = True  # randomly initialised: False once loaded or copied from a teacher

    def encode(self, rows: Sequence[Row], max_length: int) -> Features:
        return tokenize(self.tokenizer, [r.text for r in rows], max_length)

    def forward(
        self, features: Features, *, output_hidden_states: bool = False, output_attentions: bool = False
    ) -> ModelOutputs:
        out = self.encoder(**encoder_inputs(self.encoder, features), output_hidden_states=output_hidden_states,
                           output_attentions=output_attentions)
        pooled = pool(out.last_hidden_state, features["attention_mask"], self.pooling)
        return ModelOutputs(logits=self.head(pooled), hidden_states=out.hidden_states,
                            attentions=out.attentions)

    def save(self, path: Path) -> None:
        save_model_dir(path, self, self.encoder, self.tokenizer, {
            "task": "classification", "format": ENCODER_CLASSIFIER_FORMAT, "labels": self.labels,
            "pooling": self.pooling, "maxSeqLength": self.max_length,
        })

    @property
    def hidden_size(self) -> int:
        return int(self.encoder.config.hidden_size)

    @property
    def num_layers(self) -> int:
        return int(self.encoder.config.num_hidden_layers)


class HFClassifier(TaskModel):
    """A Hugging Face sequence-classification model (its own pooler and head)."""

    task = Task.CLASSIFICATION

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, max_length: int = 128):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        id2label: dict[Any, Any] = dict(model.config.id2label or {})
        self.labels = [str(id2label.get(i, id2label.get(str(i), i))) for i in range(len(id2label))]

    def encode(self, rows: Sequence[Row], max_length: int) -> Features:
        return tokenize(self.tokenizer, [r.text for r in rows], max_length)

    def forward(
        self, features: Features, *, output_hidden_states: bool = False, output_attentions: bool = False
    ) -> ModelOutputs:
        out = self.model(**encoder_inputs(self.model, features), output_hidden_states=output_hidden_states,
                         output_attentions=output_attentions)
        return ModelOutputs(logits=out.logits, hidden_states=out.hidden_states, attentions=out.attentions)

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(path))
        self.tokenizer.save_pretrained(str(path))
        (path / MODEL_CARD).write_text(json.dumps({
            "task": "classification", "format": "hf-sequence-classification", "labels": self.labels,
            "maxSeqLength": self.max_length}, indent=2) + "\n")

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)


def load_classifier(path: Path, max_length: int = 128) -> EncoderClassifier | HFClassifier:
    """A classifier directory: ours (kubestill.json) or a Hugging Face *ForSequenceClassification one."""
    card = read_card(path)
    if card and card.get("format") == ENCODER_CLASSIFIER_FORMAT:
        model = EncoderClassifier(encoder_from_config(path), load_tokenizer(path), card["labels"],
                                  card.get("pooling", "mean"), int(card.get("maxSeqLength", max_length)))
        load_state(model, path)
        model.head_is_fresh = False
        return model.eval()
    hf = AutoModelForSequenceClassification.from_pretrained(str(path), attn_implementation="sdpa")
    return HFClassifier(hf, load_tokenizer(path), int((card or {}).get("maxSeqLength", max_length))).eval()


def _cut_hf_classifier(teacher: HFClassifier, arch: StudentArchitecture, max_len: int) -> HFClassifier:
    """A student cut from an HF classifier teacher: its layers and its own pooler and head."""
    if arch.init == StaticInit.MODEL2VEC:
        raise ValueError("student.architecture.init model2vec needs a sentence-encoder teacher (an HF "
                         "classifier pools with its own head); use init teacher-embeddings")
    if arch.hidden_size is not None:
        raise ValueError("student.architecture.hiddenSize is only supported for sentence-encoder "
                         "classifiers; use baseModelUri for a narrower HF model")
    layers = arch.from_teacher_layers or evenly_spaced(arch.num_layers, teacher.num_layers)
    return HFClassifier(cut_from_teacher(teacher.model, layers), teacher.tokenizer, max_len)


def _cut_encoder_classifier(
    teacher: EncoderClassifier, arch: StudentArchitecture, labels: list[str], max_len: int
) -> EncoderClassifier:
    """A student of a sentence-encoder classifier teacher: its layers (or a narrower random encoder), a static
    student's table from Model2Vec unless init says otherwise."""
    if arch.hidden_size is not None:
        enc = smaller_encoder(teacher.encoder, arch.num_layers, arch.hidden_size)
    else:
        enc = cut_from_teacher(teacher.encoder, arch.from_teacher_layers
                               or evenly_spaced(arch.num_layers, teacher.num_layers))
    model = EncoderClassifier(enc, teacher.tokenizer, labels, teacher.pooling, max_len)
    if arch.static_init == StaticInit.MODEL2VEC:
        # The head is fresh (below): it reads the PCA coordinates as well as any.
        model2vec_init(enc, teacher.encoder, teacher.tokenizer)
    # Start from the teacher's head when the student keeps a top teacher layer: it already reads pooled
    # states like these. A static (0-layer) student pools raw token embeddings, which that head
    # misreads with large logits (measured: 0.45 accuracy after 4 epochs vs 0.87 from a fresh head).
    if teacher.labels == labels and arch.num_layers > 0:
        model.head.load_state_dict(teacher.head.state_dict())
        model.head_is_fresh = False
    return model


@register_task(Task.CLASSIFICATION)
class Classification(DistillTask):
    primary_metric = "accuracy"

    def primary(self, meta: Mapping[str, Any]) -> str:
        """accuracy against gold labels when data.fields.label names them, else agreement with the teacher:
        the reference is chosen by the spec, never switched by the rows."""
        if self.spec.evaluation.primary_metric:
            return self.spec.evaluation.primary_metric
        return self.primary_metric if self.spec.data.fields.label else "agreement"

    # --- label -----------------------------------------------------------------------------------------

    def label_meta(self, teacher: Teacher, rows: Sequence[Row]) -> dict[str, Any]:
        probe = teacher.classify([r.text for r in rows[:2]] or ["probe"])
        return {"labels": probe.labels, "confidenceTemperature": self.spec.labeling.temperature}

    def label(self, teacher: Teacher, rows: Sequence[Row], meta: Mapping[str, Any]) -> LabelBatch:
        scores = teacher.classify([r.text for r in rows])
        if scores.labels != list(meta["labels"]):
            raise ValueError(f"the teacher's classes changed during labeling: {scores.labels} vs {meta['labels']}")
        logits = scores.logits.astype(np.float32)
        probs = softmax(logits, float(meta.get("confidenceTemperature", 1.0)))  # confidence only: logits are stored
        invalid = scores.invalid or [None] * len(rows)
        invalid = [r if r else (None if np.isfinite(row).all() else "non-finite logits")
                   for r, row in zip(invalid, logits, strict=True)]
        return LabelBatch(targets={"logits": np.nan_to_num(logits)}, confidence=probs.max(axis=-1),
                          invalid=invalid)

    # --- models ----------------------------------------------------------------------------------------

    def build_student(self, meta: Mapping[str, Any], teacher_dir: Path | None) -> TaskModel:
        labels = list(meta["labels"])
        student = self.spec.student
        max_len = self.spec.training.max_seq_length
        if student.architecture is not None:
            if teacher_dir is None:
                raise ValueError("student.architecture needs a local teacher (teacher.modelUri)")
            teacher = load_classifier(teacher_dir, max_len)
            arch = student.architecture
            if isinstance(teacher, HFClassifier):
                return _cut_hf_classifier(teacher, arch, max_len)
            return _cut_encoder_classifier(teacher, arch, labels, max_len)
        assert student.base_model_uri is not None
        from ..storage import resolve_uri

        base = resolve_uri(student.base_model_uri)
        card = read_card(base)
        if card is not None and card.get("task") == "classification":
            loaded = load_classifier(base, max_len)
            if loaded.labels == labels:
                return loaded.train()
            if isinstance(loaded, EncoderClassifier):
                return EncoderClassifier(loaded.encoder, loaded.tokenizer, labels, loaded.pooling, max_len)
            raise ValueError(f"student.baseModelUri classes {loaded.labels} differ from the teacher's {labels}")
        return EncoderClassifier(load_encoder(base), load_tokenizer(base), labels, "mean", max_len)

    def load_model(self, path: Path) -> TaskModel:
        return load_classifier(path, self.spec.training.max_seq_length)

    # --- train -----------------------------------------------------------------------------------------

    def teacher_outputs(self, targets: Mapping[str, torch.Tensor]) -> ModelOutputs:
        return ModelOutputs(logits=targets["logits"])

    def init_head(self, model: TaskModel, rows: Sequence[Row], targets: Mapping[str, Array],
                  meta: Mapping[str, Any]) -> dict[str, Any] | None:
        """A static (0-layer) student's fresh head, fitted by logistic regression (`fit_linear_head`) on its
        pooled states of at most HEAD_FIT_ROWS training rows (evenly spaced) against `hard_labels`: gold where
        a row has one, else the teacher's top class, the labels of the cross-entropy term. Why: its pooled
        states are already useful features (Model2Vec or the teacher's embeddings), and SGD moves a random
        head there slowly: on the FAQ bench (402 train rows, 39 classes) 4 epochs left a static student at
        0.43 accuracy, while logistic regression on the same kind of vectors reaches 0.91 in seconds. KD then
        trains head and table together from there (LP-FT, Kumar et al., ICLR 2022). Students with layers
        keep their head as built (the teacher's, or a fresh one whose features are not yet trained). The train
        stage calls this only below the student's data need (see train_setup.build_models)."""
        if not isinstance(model, EncoderClassifier) or not model.head_is_fresh or model.num_layers > 0 or not rows:
            return None
        take = np.unique(np.linspace(0, len(rows) - 1, min(len(rows), HEAD_FIT_ROWS)).round().astype(int))
        picked = [rows[int(i)] for i in take]
        tgt = {k: torch.from_numpy(np.ascontiguousarray(v[take])) for k, v in targets.items()}
        labels = self.hard_labels(picked, tgt, meta)
        feats = pooled_states(model, [r.text for r in picked])
        fitted = fit_linear_head(feats, labels, len(model.labels))
        with torch.no_grad():
            model.head.load_state_dict(fitted.state_dict())
            fit_accuracy = float((model.head(feats).argmax(-1) == labels).float().mean())
        model.head_is_fresh = False
        return {"method": "logistic-regression", "rows": len(picked), "trainAccuracy": round(fit_accuracy, 4)}

    def hard_labels(
        self, rows: Sequence[Row], targets: Mapping[str, torch.Tensor], meta: Mapping[str, Any]
    ) -> torch.Tensor:
        # A row without a gold label, or with one the teacher lacks, gets the teacher's top class: counted and
        # reported by the label stage (labels/report.json, metrics.json's data), never silently.
        index = {name: i for i, name in enumerate(meta["labels"])}
        teacher_top = targets["logits"].argmax(dim=-1)
        return torch.tensor([index.get(r.label, int(t)) if r.label is not None else int(t)
                             for r, t in zip(rows, teacher_top, strict=True)], dtype=torch.long)

    # --- evaluate --------------------------------------------------------------------------------------

    @torch.no_grad()
    def predict(self, model: TaskModel, rows: Sequence[Row], batch_size: int) -> Predictions:
        model.eval()
        device = next(model.parameters()).device
        out = []
        for i in range(0, len(rows), batch_size):
            feats = {k: v.to(device) for k, v in model.encode(rows[i : i + batch_size],
                                                               self.spec.training.max_seq_length).items()}
            logits = model(feats).logits
            assert logits is not None
            out.append(logits.float().cpu().numpy())
        return {"logits": np.concatenate(out) if out else np.zeros((0, 0), np.float32)}

    def teacher_predictions(self, targets: Mapping[str, Array]) -> Predictions:
        return {"logits": targets["logits"]}

    def metrics(
        self, predictions: Predictions, teacher: Predictions, rows: Sequence[Row], meta: Mapping[str, Any]
    ) -> dict[str, float]:
        labels = list(meta["labels"])
        pred = predictions["logits"].argmax(axis=-1).astype(np.int64)
        teacher_pred = teacher["logits"].argmax(axis=-1).astype(np.int64)
        index = {name: i for i, name in enumerate(labels)}
        # Gold metrics only on rows with a gold label, never against the teacher in their place: the reference
        # of "accuracy" must not depend on whether some row lacks a label. A label the teacher does not know
        # stays in, as -1, which no prediction matches. Imitation of the teacher is `agreement`, on every row.
        has_gold = np.array([r.label is not None for r in rows], dtype=bool)
        gold = np.array([index.get(r.label, -1) for r in rows if r.label is not None], dtype=np.int64)
        out = classification_metrics(pred[has_gold], gold, len(labels)) if has_gold.any() else {}
        out["agreement"] = float(np.mean(pred == teacher_pred)) if len(rows) else float("nan")
        out["gold_labels"] = float(np.mean(has_gold)) if len(rows) else 0.0  # share of rows with a gold label
        return out

    def gold_rows(self, rows: Sequence[Row], meta: Mapping[str, Any]) -> int:
        return sum(1 for r in rows if r.label is not None)

    # --- export and serve ------------------------------------------------------------------------------

    def onnx_example(self, model: TaskModel) -> tuple[Features, list[str]]:
        # Output names in upper case: a lower-case "embedding" clashes with a node name inside the graph.
        rows = [Row(str(i), text) for i, text in enumerate(EXPORT_EXAMPLE_ROWS)]
        return model.encode(rows, self.spec.training.max_seq_length), ["LOGITS"]

    def onnx_forward(self, model: TaskModel, features: Features) -> tuple[torch.Tensor, ...]:
        logits = model(features).logits
        assert logits is not None
        return (logits,)

    @torch.no_grad()
    def serve(self, model: TaskModel, inputs: Mapping[str, Array]) -> dict[str, Array]:
        texts = texts_of(inputs["TEXT"])
        rows = [Row(str(i), t) for i, t in enumerate(texts)]
        logits = self.predict(model, rows, max(1, len(rows)))["logits"]
        return _answer(logits, getattr(model, "labels", []))

    serves_onnx = True

    def serve_onnx(self, model: OnnxModel, inputs: Mapping[str, Array]) -> dict[str, Array]:
        return _answer(model.run(texts_of(inputs["TEXT"]))["LOGITS"], model.labels)


def _answer(logits: Array, labels: Sequence[str]) -> dict[str, Array]:
    """LABEL (the top class's name, bytes) and PROBABILITIES ([B, C] float32) from logits."""
    probs = softmax(logits).astype(np.float32)
    names = np.array([[labels[i].encode()] for i in probs.argmax(axis=-1)], dtype=np.object_)
    return {"LABEL": names, "PROBABILITIES": probs}

