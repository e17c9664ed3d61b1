"""The task interface: what differs between classification, embedding, reranking and generation.

The stages (label, train, evaluate, export, serve) are generic and call a `DistillTask` for everything
task-specific. A task module subclasses `DistillTask`, decorates it with `@register_task(Task.X)` and is
imported by `kubestill_trainer.tasks` (its `__init__` lists every task module explicitly).

Data flow, per stage:
- label:    rows -> `label(teacher, rows)` -> `LabelBatch` (per-row targets, confidence, invalid reasons);
            `label_meta(teacher, rows)` once -> `labels/meta.json` (e.g. class names).
- train:    `build_student(meta, teacher_dir)` -> `TaskModel`; per batch `model.encode(rows)` gives features,
            `model(features, ...)` gives student `ModelOutputs`, `teacher_outputs(targets)` turns the stored
            targets into teacher `ModelOutputs`, `hard_labels(rows, targets, meta)` gives CE labels; the
            registered losses compare them.
- evaluate: `predict(model, rows)` (student, and teacher when local) and `teacher_predictions(targets)`
            (stored labels: works for remote teachers too) -> `metrics(...)` -> quality figures; latency is
            measured by the stage on `model.encode` + `model(...)` at batch 1 and batched.
- export:   `model.save(dir)` writes safetensors + tokenizer + `kubestill.json`; `onnx_example(model)` drives
            `torch.onnx.export(dynamo=True)`; `serve(model, inputs)` is what the Triton python backend calls.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from kubestill.api.triton import MODEL_CARD as MODEL_CARD  # kubestill.json; the trainer imports it from here
from kubestill.api.v1alpha1.common import Task
from kubestill.api.v1alpha1.distillationjob import DistillationJobSpec

from ..outputs import Array, ModelOutputs
from .encoder import load_tokenizer
from .onnx_model import OnnxModel
from .teacher import Teacher


def texts_of(tensor: Any) -> list[str]:
    """The strings of a Triton TYPE_STRING input (bytes, or str from in-process callers), flattened."""
    return [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in tensor.reshape(-1)]


EXPORT_EXAMPLE_ROWS = ("An example sentence for export.", "Another, longer example for the export.")


@dataclass
class Row:
    """One input example. `id` is stable across stages (the split and the targets are keyed by it)."""

    id: str
    text: str
    pair: str | None = None
    label: str | None = None
    segment: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Row:
        def opt(key: str) -> str | None:
            value = data.get(key)
            return None if value is None else str(value)

        return cls(str(data["id"]), str(data["text"]), opt("pair"), opt("label"), opt("segment"))


@dataclass
class LabelBatch:
    """The teacher's answer for a batch of rows.

    `targets`: arrays with the batch as leading dimension (e.g. "logits" [B, C], "embedding" [B, D]),
    stored in `labels/targets.safetensors` row-aligned with `labels/rows.jsonl`.
    `confidence`: [B] in [0, 1] (top class probability; 1 where the notion does not apply); used by the
    min-confidence filter and curriculum ordering. `invalid`: per row a reason the output is unusable, or
    None. Rows with an invalid output still need placeholder targets of the right shape (they are dropped).
    """

    targets: dict[str, Array]
    confidence: Array
    invalid: list[str | None] = field(default_factory=list)


Features = dict[str, torch.Tensor]
Predictions = dict[str, Array]


class TaskModel(nn.Module, ABC):
    """A student (or local teacher) wrapped for one task: tokenizer + network + head.

    `forward` returns `ModelOutputs`; hidden states and attentions only when asked (they cost memory).
    """

    task: ClassVar[Task]

    @abstractmethod
    def encode(self, rows: Sequence[Row], max_length: int) -> Features:
        """Tokenize rows into model features (on the CPU; the caller moves them to the device)."""

    @abstractmethod
    def forward(
        self, features: Features, *, output_hidden_states: bool = False, output_attentions: bool = False
    ) -> ModelOutputs: ...

    @abstractmethod
    def save(self, path: Path) -> None:
        """Write safetensors weights, the tokenizer and `kubestill.json` into `path`."""

    @property
    @abstractmethod
    def hidden_size(self) -> int: ...

    @property
    @abstractmethod
    def num_layers(self) -> int: ...

    @property
    def embedding_dim(self) -> int:
        """Width of the pooled output (embedding task); the hidden size unless a Dense layer changes it."""
        return self.hidden_size


class DistillTask(ABC):
    """Task-specific behaviour of every stage; one instance per run, built from the job spec."""

    task: ClassVar[Task]
    # The metric the quality ratio and the segment gate are computed on, unless the spec names another.
    primary_metric: ClassVar[str]
    # The stored targets hold the teacher's token ids, which the student reads as its own (generation):
    # a baseModelUri student must then have the teacher's tokenizer (see `tokenizer_check`).
    reads_teacher_token_ids: ClassVar[bool] = False

    def __init__(self, spec: DistillationJobSpec) -> None:
        self.spec = spec

    def primary(self, meta: Mapping[str, Any]) -> str:
        """The metric gated on: the spec's `evaluation.primaryMetric`, else the task's default."""
        return self.spec.evaluation.primary_metric or self.primary_metric

    # --- label -----------------------------------------------------------------------------------------

    def label_meta(self, teacher: Teacher, rows: Sequence[Row]) -> dict[str, Any]:
        """JSON-able facts fixed for the run (e.g. class names), stored as `labels/meta.json`."""
        return {}

    @abstractmethod
    def label(self, teacher: Teacher, rows: Sequence[Row], meta: Mapping[str, Any]) -> LabelBatch:
        """Teacher outputs for one batch of rows."""

    # --- models ----------------------------------------------------------------------------------------

    @abstractmethod
    def build_student(self, meta: Mapping[str, Any], teacher_dir: Path | None) -> TaskModel:
        """The untrained student from `spec.student` (architecture cut from the teacher, or a base model)."""

    @abstractmethod
    def load_model(self, path: Path) -> TaskModel:
        """A model saved by `TaskModel.save` (a student), or a local teacher directory."""

    def load_tokenizer(self, path: Path) -> PreTrainedTokenizerBase:
        """The tokenizer `load_model(path)` would use, without the model (cheap: checks run before loading)."""
        return load_tokenizer(path)

    # --- train -----------------------------------------------------------------------------------------

    def training_examples(
        self, rows: Sequence[Row], targets: Mapping[str, Array]
    ) -> tuple[list[Row], dict[str, Array]]:
        """The rows and row-aligned targets the student trains on (default: the labelled train split as is;
        the embedding task adds each pair as a sentence of its own)."""
        return list(rows), dict(targets)

    def read_targets(self, meta: Mapping[str, Any], targets: dict[str, Array], spec_temperature: float
                     ) -> dict[str, Array]:
        """Stored targets as this trainer reads them: labels of an older format converted (default: as is).
        `spec_temperature` is the spec's labeling.temperature."""
        return targets

    @abstractmethod
    def teacher_outputs(self, targets: Mapping[str, torch.Tensor]) -> ModelOutputs:
        """Stored label-stage targets of a batch as teacher `ModelOutputs` for the losses."""

    def hard_labels(
        self, rows: Sequence[Row], targets: Mapping[str, torch.Tensor], meta: Mapping[str, Any]
    ) -> torch.Tensor | None:
        """Hard labels for CE terms (gold when present, else the teacher's argmax); None if not applicable."""
        return None

    def init_head(self, model: TaskModel, rows: Sequence[Row], targets: Mapping[str, Array],
                  meta: Mapping[str, Any]) -> dict[str, Any] | None:
        """Before the first step: fit the student's fresh output head on its own frozen features where the
        task and the student call for it (`rows`, `targets`: the training examples). Returns what was done,
        for train/done.json, or None (default: nothing to do)."""
        return None

    # --- evaluate --------------------------------------------------------------------------------------

    @abstractmethod
    def predict(self, model: TaskModel, rows: Sequence[Row], batch_size: int) -> Predictions:
        """The model's outputs on rows, in the same form as `teacher_predictions`."""

    @abstractmethod
    def teacher_predictions(self, targets: Mapping[str, Array]) -> Predictions:
        """The teacher's outputs on rows, from its stored label-stage targets."""

    @abstractmethod
    def metrics(
        self, predictions: Predictions, teacher: Predictions, rows: Sequence[Row], meta: Mapping[str, Any]
    ) -> dict[str, float]:
        """Quality metrics of `predictions` on `rows` (for the teacher itself, pass its predictions twice)."""

    def gold_rows(self, rows: Sequence[Row], meta: Mapping[str, Any]) -> int:
        """How many of `rows` the gold-label metrics are computed on (0: the task has none)."""
        return 0

    # --- export and serve ------------------------------------------------------------------------------

    def onnx_example(self, model: TaskModel) -> tuple[Features, list[str]]:
        """Example features for the ONNX export and the names of the outputs it produces, in order."""
        raise NotImplementedError(f"ONNX export is not implemented for {self.task}")

    def onnx_forward(self, model: TaskModel, features: Features) -> tuple[torch.Tensor, ...]:
        """What the exported ONNX graph computes from features (plain tensors, no dataclass)."""
        raise NotImplementedError(f"ONNX export is not implemented for {self.task}")

    @abstractmethod
    def serve(self, model: TaskModel, inputs: Mapping[str, Array]) -> dict[str, Array]:
        """Answer one Triton request: inputs and outputs by the tensor names of `kubestill.api.triton`
        (byte strings for TYPE_STRING, leading batch dimension)."""

    # Tasks whose `serve_onnx` answers from the exported graph (ServingSpec.runtime auto uses it when the
    # artifact has model.onnx); the others are served by torch.
    serves_onnx: ClassVar[bool] = False

    def serve_onnx(self, model: OnnxModel, inputs: Mapping[str, Array]) -> dict[str, Array]:
        """`serve`, answered by ONNX Runtime from the artifact's model.onnx (same tensors, same values within
        the export's checked tolerance)."""
        raise NotImplementedError(f"serving {self.task} through ONNX Runtime is not implemented")


_T = TypeVar("_T", bound=type[DistillTask])
_TASKS: dict[Task, type[DistillTask]] = {}


def register_task(task: Task) -> Callable[[_T], _T]:
    """Class decorator: register a `DistillTask` for `task` (once)."""

    def wrap(cls: _T) -> _T:
        key = Task(task)
        if key in _TASKS and _TASKS[key] is not cls:
            raise RuntimeError(f"task {key} registered twice: {_TASKS[key].__name__} and {cls.__name__}")
        cls.task = key
        _TASKS[key] = cls
        return cls

    return wrap


def task_class(task: Task | str) -> type[DistillTask]:
    """The class registered for `task`; a clear error when this trainer does not implement it."""
    key = Task(task)
    try:
        return _TASKS[key]
    except KeyError:
        known = ", ".join(sorted(_TASKS)) or "none"
        raise KeyError(f"task {key} is not implemented by this trainer (registered: {known})") from None
