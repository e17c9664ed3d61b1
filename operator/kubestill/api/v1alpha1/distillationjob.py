"""DistillationJob: a teacher labels data, a student learns from it, is evaluated, gated and exported.

The stages run as separate Kubernetes Jobs from the trainer image: label -> train -> evaluate -> export.
The trainer parses the same spec with these models, so the CRD and the trainer cannot disagree.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from ._base import (
    ArtifactURI,
    Condition,
    KubeModel,
    ObjectReference,
    ResourceName,
    RootModel,
    Rule,
    SecretKeyRef,
    nested,
)
from .common import ServingSpec, StageResources, Task
from .storage import StorageSecretRef
from .studentmodel import ServingCheckSpec

KIND = "DistillationJob"
PLURAL = "distillationjobs"
SHORT_NAMES = ["dj"]


# --- teacher -------------------------------------------------------------------------------------------


class TritonTeacher(KubeModel):
    """A teacher already served by Triton Inference Server."""

    url: str = Field(pattern=r"^https?://.+", description="Triton HTTP endpoint, e.g. http://teacher:8000.")
    model_name: str = Field(min_length=1, description="Model name in Triton's repository.")
    model_version: str = Field(default="", description="Model version; empty means Triton's latest.")


class OpenAITeacher(KubeModel):
    """A teacher behind an OpenAI-compatible HTTP API (chat completions, embeddings)."""

    base_url: str = Field(pattern=r"^https?://.+", description="API base URL, e.g. https://api.example/v1.")
    model: str = Field(min_length=1, description="Model name sent with each request.")
    api_key_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding the API key; fed to the trainer as an env variable."
    )


class TeacherSpec(KubeModel):
    """Where the teacher comes from: exactly one of modelUri, triton, openai."""

    rules = (
        Rule(
            cel="[has(self.modelUri), has(self.triton), has(self.openai)].filter(x, x).size() == 1",
            message="set exactly one teacher source: modelUri, triton or openai",
            check=lambda t: [t.model_uri is not None, t.triton is not None, t.openai is not None].count(True)
            == 1,
        ),
    )

    model_uri: ArtifactURI | None = Field(
        default=None,
        description="A Hugging Face model directory: file://, pvc://claim/path, s3://bucket/prefix, or "
        "pkg://<python-package>.",
    )
    triton: TritonTeacher | None = Field(default=None, description="A teacher served by Triton.")
    openai: OpenAITeacher | None = Field(default=None, description="An OpenAI-compatible teacher.")


# --- student -------------------------------------------------------------------------------------------


class StaticInit(StrEnum):
    """Where a static-embedding student's token table starts."""

    MODEL2VEC = "model2vec"
    TEACHER_EMBEDDINGS = "teacher-embeddings"


class StudentArchitecture(KubeModel):
    """A student built as a smaller copy of the teacher, initialised from some of its layers."""

    num_layers: int = Field(
        ge=0, le=96,
        description="Transformer layers of the student. 0 makes a static-embedding student for encoder tasks: "
        "the teacher's token embeddings, pooled, then the head (no attention: tens of times faster on a CPU, "
        "good for topic-like classification and first-stage retrieval).",
    )
    from_teacher_layers: list[int] = Field(
        default_factory=list,
        max_length=96,
        description="Teacher layer indices copied into the student, in order (as DistilBERT did); "
        "empty means evenly spaced layers.",
    )
    hidden_size: int | None = Field(
        default=None, ge=8, le=16384, description="Hidden width; empty keeps the teacher's (required to copy)."
    )
    init: StaticInit | None = Field(
        default=None,
        description="Start of a static student's (numLayers 0) token table; empty means model2vec (teacher-"
        "embeddings for a Hugging Face *ForSequenceClassification teacher, which pools with its own head). model2vec: "
        "the teacher's vocabulary "
        "passed through the teacher, reduced by PCA and weighted by token rank (Model2Vec, MinishLab), which "
        "needs no data and keeps far more of the teacher than its raw input embeddings; teacher-embeddings: "
        "the teacher's input embeddings as they are. Knowledge distillation on the data follows either way.",
    )

    @property
    def static_init(self) -> StaticInit | None:
        """How a static student's token table starts (None for a student with layers)."""
        return (self.init or StaticInit.MODEL2VEC) if self.num_layers == 0 else None

    rules = (
        Rule(
            cel="!has(self.fromTeacherLayers) || size(self.fromTeacherLayers) == 0 || "
            "size(self.fromTeacherLayers) == self.numLayers",
            message="fromTeacherLayers must list exactly numLayers layer indices",
            check=lambda a: not a.from_teacher_layers or len(a.from_teacher_layers) == a.num_layers,
            field="fromTeacherLayers",
        ),
        Rule(
            cel="!has(self.init) || self.init == 'teacher-embeddings' || self.numLayers == 0",
            message="init model2vec builds a static student: it needs numLayers 0",
            check=lambda a: a.init in (None, StaticInit.TEACHER_EMBEDDINGS) or a.num_layers == 0,
            field="init",
        ),
        Rule(
            cel="!has(self.fromTeacherLayers) || size(self.fromTeacherLayers) == 0 || !has(self.hiddenSize)",
            message="copying teacher layers keeps the teacher's width: leave hiddenSize empty",
            check=lambda a: not a.from_teacher_layers or a.hidden_size is None,
            field="hiddenSize",
        ),
    )


class LoRASpec(KubeModel):
    """Low-rank adapters (peft) on a base-model student; qlora loads the base in 4 bits (bitsandbytes)."""

    r: int = Field(default=16, ge=1, le=1024, description="Rank of the adapters.")
    alpha: int = Field(default=32, ge=1, le=4096, description="LoRA scaling numerator (alpha / r).")
    dropout: float = Field(default=0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] = Field(
        default_factory=list, max_length=64, description="Module names to adapt; empty picks per architecture."
    )
    qlora: bool = Field(default=False, description="Load the frozen base in 4-bit NF4 (QLoRA).")
    merge: bool = Field(default=True, description="Merge the adapters into the base weights at export.")


class QuantizationMethod(StrEnum):
    INT8 = "int8"
    GPTQ = "gptq"


class QuantizationSpec(KubeModel):
    """Post-training (or quantization-aware) quantization of the exported student."""

    method: QuantizationMethod = Field(description="int8 (dynamic, per channel) or gptq.")
    bits: int | None = Field(default=None, description="Bits per weight: 8 for int8; 2, 3, 4 or 8 for gptq.")
    group_size: int = Field(default=128, ge=-1, le=4096, description="GPTQ group size (-1: per column).")
    aware: bool = Field(default=False, description="Fake-quantize while training (quantization-aware).")

    rules = (
        Rule(
            cel="!has(self.bits) || (self.method == 'int8' ? self.bits == 8 : self.bits in [2, 3, 4, 8])",
            message="bits must be 8 for int8 and one of 2, 3, 4, 8 for gptq",
            check=lambda q: q.bits is None or (q.bits == 8 if q.method == "int8" else q.bits in (2, 3, 4, 8)),
            field="bits",
        ),
    )


class StudentSpec(KubeModel):
    """The student: a base model to fine-tune, or an architecture cut from the teacher."""

    rules = (
        Rule(
            cel="has(self.baseModelUri) != has(self.architecture)",
            message="set exactly one of baseModelUri and architecture",
            check=lambda s: (s.base_model_uri is None) != (s.architecture is None),
        ),
        Rule(
            cel="!has(self.lora) || has(self.baseModelUri)",
            message="lora needs a baseModelUri to adapt",
            check=lambda s: s.lora is None or s.base_model_uri is not None,
            field="lora",
        ),
    )

    base_model_uri: ArtifactURI | None = Field(
        default=None, description="A Hugging Face model directory to start from (file://, pvc://, s3://, pkg://)."
    )
    architecture: StudentArchitecture | None = Field(
        default=None, description="A smaller copy of the teacher, initialised from its layers."
    )
    lora: LoRASpec | None = Field(default=None, description="Train LoRA/QLoRA adapters instead of all weights.")
    quantization: QuantizationSpec | None = Field(default=None, description="Quantize the exported student.")


# --- data and labeling ---------------------------------------------------------------------------------


class DataFormat(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"
    TEXT_DIR = "text-dir"


class DataFields(KubeModel):
    """Which input fields hold what."""

    text: str = Field(default="text", min_length=1, description="The input text (query for reranking).")
    pair: str | None = Field(default=None, description="Second text: passage (reranking), positive (embedding).")
    label: str | None = Field(default=None, description="Gold label, used for hard-label losses and metrics.")
    segment: str | None = Field(default=None, description="Field grouping rows for per-segment gates.")


class DataSplits(KubeModel):
    """Deterministic split fractions of the labelled data; they must sum to 1."""

    rules = (
        Rule(
            cel="self.train + self.validation + self.test > 0.999 && self.train + self.validation + self.test < 1.001",
            message="train + validation + test must sum to 1",
            check=lambda s: abs(s.train + s.validation + s.test - 1) < 1e-3,
        ),
    )

    train: float = Field(default=0.8, gt=0, le=1, description="Fraction used to train.")
    validation: float = Field(
        default=0.1, ge=0, lt=1,
        description="Fraction for the per-epoch validation loss (learning curve, keepBest, early stopping).",
    )
    test: float = Field(default=0.1, gt=0, lt=1, description="Held-out fraction the gates are computed on.")


class BadRowPolicy(StrEnum):
    """What the label stage does with a row it cannot read (a byte that is not UTF-8, a line that is not JSON)."""

    FAIL = "fail"
    SKIP = "skip"


DEFAULT_MAX_BAD_ROW_SHARE = 0.01


class DataSpec(KubeModel):
    """The unlabelled (or labelled) inputs."""

    rules = (
        Rule(
            cel="!has(self.maxBadRowShare) || self.onBadRows == 'skip'",
            message="maxBadRowShare caps the rows onBadRows 'skip' leaves out; with 'fail' the first bad row fails",
            check=lambda d: d.max_bad_row_share is None or d.on_bad_rows == BadRowPolicy.SKIP,
            field="maxBadRowShare",
        ),
    )

    uri: ArtifactURI = Field(
        description="Input data: a .jsonl/.csv file or a text directory (file://, pvc://, s3://, pkg://)."
    )
    format: DataFormat | None = Field(default=None, description="jsonl, csv or text-dir; empty: by extension.")
    fields: DataFields = nested(DataFields, "Which input fields hold the text, pair, label and segment.")
    splits: DataSplits = nested(DataSplits, "Train / validation / test fractions (sum 1).")
    max_samples: int | None = Field(default=None, ge=1, description="Use at most this many rows.")
    seed: int = Field(default=13, ge=0, description="Seed of the deterministic split.")
    on_bad_rows: BadRowPolicy = Field(
        default=BadRowPolicy.FAIL,
        description="A row that cannot be read (not UTF-8, not JSON): fail (the label stage stops, naming the "
        "file and line) or skip (left out, counted in the label report; refused above maxBadRowShare).",
    )
    max_bad_row_share: float | None = Field(
        default=None, ge=0, le=1,
        description=f"With onBadRows skip: the largest share of rows that may be unreadable before the label "
        f"stage refuses the data; empty: {DEFAULT_MAX_BAD_ROW_SHARE}.",
    )


class LabelingSpec(KubeModel):
    """How the teacher labels the data."""

    batch_size: int = Field(default=32, ge=1, le=4096, description="Teacher inference batch size.")
    temperature: float = Field(
        default=1.0, gt=0, le=100,
        description="Temperature of the teacher confidence that minConfidence and training.curriculum "
        "'confidence' read (top class probability, top candidate's share, the teacher's own tokens' "
        "probability). Stored targets are always raw (logits, scores, log-probabilities at temperature 1): "
        "soften them for the loss with loss.terms[].temperature, applied once.",
    )
    top_k: int = Field(default=20, ge=1, le=1000, description="Logits kept per position (generation).")
    min_confidence: float = Field(
        default=0.0, ge=0, le=1,
        description="Drop rows whose top teacher probability is below this. An absolute probability: with many "
        "classes most confidences are low, so prefer minRelativeConfidence for classification.",
    )
    min_relative_confidence: float | None = Field(
        default=None, ge=0, le=1,
        description="Classification: drop rows whose top class probability p, relative to chance 1/C over C "
        "classes, is below this: log(C*p)/log(C), 0 at chance, 1 at certainty, the same scale for 5 or 500 "
        "classes (e.g. 0.3 keeps p >= 0.32 with 5 classes, p >= 0.033 with 130).",
    )
    max_dropped_share: float = Field(
        default=0.5, ge=0, le=1,
        description="Refuse the data (the label stage fails with exit code 3) when the quality filter drops "
        "more than this share of the rows (empty input, invalid teacher output, low confidence).",
    )
    max_new_tokens: int = Field(default=64, ge=1, le=8192, description="Generation length of teacher outputs.")
    drop_empty: bool = Field(default=True, description="Drop rows with empty input or empty teacher output.")


# --- loss ----------------------------------------------------------------------------------------------


class LossName(StrEnum):
    LOGIT_KL = "logit-kl"
    CROSS_ENTROPY = "cross-entropy"
    HIDDEN_MSE = "hidden-mse"
    ATTENTION_MSE = "attention-mse"
    INFONCE = "infonce"
    EMBEDDING_MSE = "embedding-mse"
    EMBEDDING_COSINE = "embedding-cosine"
    MARGIN_MSE = "margin-mse"
    LISTWISE_KL = "listwise-kl"
    TOKEN_KL = "token-kl"
    SEQUENCE_KD = "sequence-kd"


# What the trainer's evaluate stage measures for each task (kubestill_trainer/tasks/metrics.py,
# reranking_metrics.py, generation_metrics.py; tests/trainer/test_metric_names.py checks this table against what
# they return): the names evaluation.primaryMetric and evaluation.metrics may use, checked at admission rather than
# after training. Case matters, as in the trainer's reports (rougeL).
METRICS_BY_TASK: dict[Task, tuple[str, ...]] = {
    Task.CLASSIFICATION: ("accuracy", "macro_precision", "macro_recall", "macro_f1", "agreement"),
    Task.EMBEDDING: ("cosine", "recall@1", "recall@10", "mrr@10", "ndcg@10"),
    Task.RERANKING: ("mrr@10", "ndcg@10", "map", "recall@1", "recall@5", "recall@10", "top1_agreement",
                     "kendall_tau"),
    Task.GENERATION: ("exact_match", "first_token", "token_f1", "rougeL"),
}
# Classification metrics against gold labels: without data.fields.label only `agreement` can be measured.
GOLD_CLASSIFICATION_METRICS = ("accuracy", "macro_precision", "macro_recall", "macro_f1")
MAX_METRIC_NAME = 64

# Which losses make sense for which task; checked by CEL on the spec and by the trainer's registry.
LOSSES_BY_TASK: dict[Task, tuple[LossName, ...]] = {
    Task.CLASSIFICATION: (
        LossName.LOGIT_KL, LossName.CROSS_ENTROPY, LossName.HIDDEN_MSE, LossName.ATTENTION_MSE,
    ),
    Task.EMBEDDING: (
        LossName.EMBEDDING_MSE, LossName.EMBEDDING_COSINE, LossName.INFONCE, LossName.HIDDEN_MSE,
        LossName.ATTENTION_MSE,
    ),
    Task.RERANKING: (
        LossName.MARGIN_MSE, LossName.LISTWISE_KL, LossName.CROSS_ENTROPY, LossName.HIDDEN_MSE,
    ),
    Task.GENERATION: (
        LossName.TOKEN_KL, LossName.SEQUENCE_KD, LossName.HIDDEN_MSE, LossName.ATTENTION_MSE,
    ),
}


class LossTerm(KubeModel):
    """One weighted loss from the registry, with its parameters."""

    rules = (
        Rule(
            cel="!has(self.alpha) || self.name == 'logit-kl'",
            message="alpha only applies to logit-kl",
            check=lambda t: t.alpha is None or t.name == "logit-kl",
            field="alpha",
        ),
        Rule(
            cel="!has(self.temperature) || self.name in ['logit-kl', 'token-kl', 'listwise-kl', 'infonce']",
            message="temperature only applies to logit-kl, token-kl, listwise-kl and infonce",
            check=lambda t: t.temperature is None or t.name in ("logit-kl", "token-kl", "listwise-kl", "infonce"),
            field="temperature",
        ),
        Rule(
            cel="!has(self.matryoshkaDims) || size(self.matryoshkaDims) == 0 || "
            "self.name in ['embedding-mse', 'embedding-cosine', 'infonce']",
            message="matryoshkaDims only applies to embedding-mse, embedding-cosine and infonce",
            check=lambda t: not t.matryoshka_dims
            or t.name in ("embedding-mse", "embedding-cosine", "infonce"),
            field="matryoshkaDims",
        ),
        Rule(
            cel="!has(self.outputDim) || self.name in ['embedding-mse', 'embedding-cosine', 'infonce']",
            message="outputDim only applies to embedding-mse, embedding-cosine and infonce",
            check=lambda t: t.output_dim is None or t.name in ("embedding-mse", "embedding-cosine", "infonce"),
            field="outputDim",
        ),
        Rule(
            cel="!has(self.layerMap) || size(self.layerMap) == 0 || self.name in ['hidden-mse', 'attention-mse']",
            message="layerMap only applies to hidden-mse and attention-mse",
            check=lambda t: not t.layer_map or t.name in ("hidden-mse", "attention-mse"),
            field="layerMap",
        ),
        Rule(
            cel="!has(self.scale) || self.name == 'infonce'",
            message="scale only applies to infonce",
            check=lambda t: t.scale is None or t.name == "infonce",
            field="scale",
        ),
        # A prefix longer than the projected embedding cannot be taken (without outputDim the width is the
        # student's, known only when it is built: the trainer checks it then).
        Rule(
            cel="!has(self.outputDim) || !has(self.matryoshkaDims) || "
            "self.matryoshkaDims.all(d, d <= self.outputDim)",
            message="matryoshkaDims must not exceed outputDim",
            check=lambda t: t.output_dim is None or all(d <= t.output_dim for d in t.matryoshka_dims),
            field="matryoshkaDims",
        ),
        # infonce reads its logit scale from scale, else 1 / temperature: with both, temperature would be ignored.
        Rule(
            cel="!has(self.scale) || !has(self.temperature)",
            message="set scale or temperature, not both (infonce's scale is 1 / temperature)",
            check=lambda t: t.scale is None or t.temperature is None,
            field="scale",
        ),
    )

    name: LossName = Field(description="Registered loss name.")
    weight: float = Field(default=1.0, ge=0, le=1e6, description="Multiplier of this term in the total.")
    temperature: float | None = Field(
        default=None, gt=0, le=100,
        description="Softening temperature T (KL losses are scaled by T^2), applied to teacher and student alike: "
        "the only temperature the stored targets see.",
    )
    alpha: float | None = Field(
        default=None, ge=0, le=1, description="logit-kl: alpha * KD + (1 - alpha) * hard-label CE."
    )
    matryoshka_dims: list[int] = Field(
        default_factory=list, max_length=16, description="Also match truncated embeddings of these sizes."
    )
    output_dim: int | None = Field(
        default=None, ge=2, le=16384, description="Dense projection of the student embedding to this size."
    )
    layer_map: list[int] = Field(
        default_factory=list,
        max_length=96,
        description="hidden-mse / attention-mse: teacher layer matched by each student layer.",
    )
    scale: float | None = Field(
        default=None, gt=0, description="infonce: logit scale (1 / temperature); default 20."
    )


class LossSpec(KubeModel):
    """The weighted sum of registered losses the student minimises."""

    rules = (
        Rule(
            cel="self.terms.all(a, self.terms.exists_one(b, b.name == a.name))",
            message="each loss name may appear once",
            check=lambda s: len({t.name for t in s.terms}) == len(s.terms),
            field="terms",
        ),
        # The student has one projection layer: every embedding term must ask for the same size.
        Rule(
            cel="self.terms.all(a, !has(a.outputDim) || "
            "self.terms.all(b, !has(b.outputDim) || b.outputDim == a.outputDim))",
            message="loss terms ask for different outputDim values (the student has one projection)",
            check=lambda s: len({t.output_dim for t in s.terms if t.output_dim is not None}) <= 1,
            field="terms",
        ),
        Rule(
            cel="self.terms.exists(t, t.weight > 0)",
            message="at least one loss term needs a weight > 0",
            check=lambda s: any(t.weight > 0 for t in s.terms),
            field="terms",
        ),
    )

    terms: list[LossTerm] = Field(min_length=1, max_length=16, description="Loss terms and their weights.")


# --- training, evaluation, output, cost ----------------------------------------------------------------

MIN_LATENCY_BUDGET_MS = 0.01
MAX_LATENCY_BUDGET_MS = 3_600_000


class Curriculum(StrEnum):
    NONE = "none"
    CONFIDENCE = "confidence"


class TrainingSpec(KubeModel):
    """Optimisation settings of the train stage."""

    epochs: int = Field(default=3, ge=1, le=1000, description="Passes over the training split.")
    max_steps: int | None = Field(default=None, ge=1, description="Stop after this many optimiser steps.")
    learning_rate: float = Field(default=5e-5, gt=0, le=1, description="Peak learning rate (AdamW).")
    batch_size: int = Field(default=32, ge=1, le=8192, description="Examples per device per step.")
    gradient_accumulation: int = Field(default=1, ge=1, le=1024, description="Micro-batches per step.")
    warmup_ratio: float = Field(default=0.06, ge=0, lt=1, description="Fraction of steps warming up linearly.")
    weight_decay: float = Field(default=0.01, ge=0, le=1, description="AdamW weight decay.")
    max_seq_length: int = Field(default=128, ge=8, le=32768, description="Truncate inputs to this many tokens.")
    seed: int = Field(default=42, ge=0, description="Seed of initialisation and data order.")
    curriculum: Curriculum = Field(
        default=Curriculum.NONE, description="none, or confidence: easy (confident teacher) to hard."
    )
    checkpoint_every_steps: int = Field(
        default=200, ge=1, description="Save a resumable checkpoint this often."
    )
    keep_best: bool = Field(
        default=False,
        description="Keep the weights of the epoch with the lowest validation loss instead of the last "
        "(needs a validation split).",
    )
    early_stopping_patience: int | None = Field(
        default=None, ge=1, le=1000,
        description="Stop after this many epochs without a lower validation loss, keeping the best epoch's "
        "weights (needs a validation split); empty: run every epoch.",
    )


class EvaluationSpec(KubeModel):
    """Held-out evaluation and the gates a student must pass to be published."""

    rules = (
        # Floor: no model answers one request in under 10 µs, so a smaller budget can only fail. A rule, not a
        # schema minimum: the API server truncates a fractional minimum for an integer value (0 >= int(0.01)).
        Rule(
            cel="!has(self.minSegmentSupport) || self.minSegmentSupport == 1 || has(self.maxSegmentDrop)",
            message="minSegmentSupport only applies with maxSegmentDrop (it is the support that gate needs)",
            check=lambda e: e.min_segment_support == 1 or e.max_segment_drop is not None,
            field="minSegmentSupport",
        ),
        Rule(
            cel=f"!has(self.latencyBudgetMs) || self.latencyBudgetMs >= {MIN_LATENCY_BUDGET_MS}",
            message=f"latencyBudgetMs must be between {MIN_LATENCY_BUDGET_MS} and {MAX_LATENCY_BUDGET_MS} ms",
            check=lambda e: e.latency_budget_ms is None or e.latency_budget_ms >= MIN_LATENCY_BUDGET_MS,
            field="latencyBudgetMs",
        ),
    )

    metrics: list[Annotated[str, Field(min_length=1, max_length=MAX_METRIC_NAME)]] = Field(
        default_factory=list, max_length=32,
        description="Metrics to report, from those the task measures (see primaryMetric); empty: all of them.",
    )
    primary_metric: str | None = Field(
        default=None, min_length=1, max_length=MAX_METRIC_NAME,
        description="Metric the quality ratio and the gate are computed on; empty: the task's default "
        "(classification: accuracy, or agreement without data.fields.label; embedding: ndcg@10, or cosine without "
        "data.fields.pair; reranking: ndcg@10; generation: rougeL). What each task measures: " + "; ".join(
            f"{task.value}: {', '.join(names)}" for task, names in METRICS_BY_TASK.items()) + ".",
    )
    min_quality_ratio: float = Field(
        default=0.95, gt=0, le=2, description="Student / teacher primary metric must be at least this."
    )
    max_segment_drop: float | None = Field(
        default=None, ge=0, le=1,
        description="Largest allowed absolute drop vs the teacher of the primary metric in any segment of "
        "data.fields.segment with at least minSegmentSupport test rows. Fails when no segment can be judged.",
    )
    min_segment_support: int = Field(
        default=1, ge=1, le=1_000_000,
        description="Test rows a segment needs for maxSegmentDrop to judge it; smaller segments are skipped "
        "(and named in the gate's reason): on a handful of rows one answer moves the metric a lot. Default 1: "
        "every segment counts.",
    )
    # Ceiling: an hour per request is no budget (leave it empty for none). The floor is in `rules`.
    latency_budget_ms: float | None = Field(
        default=None, le=MAX_LATENCY_BUDGET_MS,
        description="Student p95 latency at batch 1 must be under this (CPU or GPU), 0.01 ms to 3600000 ms "
        "(1 hour).",
    )


class ExportFormat(StrEnum):
    SAFETENSORS = "safetensors"
    ONNX = "onnx"


class OutputSpec(KubeModel):
    """What the job produces."""

    student_model_name: ResourceName = Field(description="Name of the StudentModel created when gates pass.")
    artifact_uri: ArtifactURI = Field(
        description="Where stage outputs and the final model are written (file://, pvc://claim/path, "
        "s3://bucket/prefix)."
    )
    formats: list[ExportFormat] = Field(
        default_factory=lambda: [ExportFormat.SAFETENSORS],
        max_length=4,
        description="Exported formats; safetensors is always written.",
    )
    serving: ServingSpec = nested(ServingSpec, "Serving settings copied into the StudentModel.")
    serving_check: ServingCheckSpec = nested(
        ServingCheckSpec, "The StudentModel's served-latency check once Ready and its optional p95 gate "
        "(maxP95Ms), copied into its spec.servingCheck.")


class CostSpec(KubeModel):
    """Prices for the ROI report: what distillation cost and what the student saves per day."""

    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$", description="ISO 4217 currency code.")
    gpu_hour_price: float = Field(ge=0, description="Price of one GPU hour for labeling and training.")
    teacher_cost_per_million: float = Field(ge=0, description="Serving cost of 1M teacher requests.")
    student_cost_per_million: float | None = Field(
        default=None, ge=0, description="Serving cost of 1M student requests; empty: teacher's / speedup."
    )
    daily_requests: int = Field(ge=0, description="Requests per day the student would take over.")


class RunSpec(KubeModel):
    """How stage Jobs run."""

    image: str | None = Field(default=None, description="Trainer image; the operator's default when empty.")
    service_account_name: ResourceName | None = Field(default=None, description="ServiceAccount of the Jobs.")
    backoff_limit: int = Field(default=1, ge=0, le=10, description="Retries of a failed stage Job.")
    # Floor: a stage needs a minute to pull its model and start. Ceiling: a deadline over a month is none
    # (leave it empty for none).
    active_deadline_seconds: int | None = Field(
        default=None, ge=60, le=30 * 86400,
        description="Kill a stage Job that runs longer than this, 60 to 2592000 seconds (30 days); empty: never.",
    )


class StagesResources(KubeModel):
    """Resources and placement per stage."""

    label: StageResources = nested(StageResources, "The label stage (teacher inference).")
    train: StageResources = nested(StageResources, "The train stage.")
    evaluate: StageResources = nested(StageResources, "The evaluate stage.")
    export: StageResources = nested(StageResources, "The export stage.")


def _losses_fit_task(spec: DistillationJobSpec) -> bool:
    allowed = LOSSES_BY_TASK[Task(spec.task)]
    return all(LossName(t.name) in allowed for t in spec.loss.terms)


def _metric_cel(var: str) -> str:
    """CEL: `var` is a metric the spec's task measures (METRICS_BY_TASK)."""
    branches = [f"self.task == '{task.value}' ? {var} in {list(names)}" for task, names in METRICS_BY_TASK.items()]
    return "(" + " : ".join(branches) + " : false)"


def _measured_cel() -> str:
    """CEL: what the spec's task measures, as one literal ("classification measures accuracy, ..."): literals
    only, since the API server prices a message by the longest strings it could join (task has no maxLength)."""
    branches = [f"self.task == '{task.value}' ? '{task.value} measures {', '.join(names)}'"
                for task, names in METRICS_BY_TASK.items()]
    return "(" + " : ".join(branches) + " : '')"


def _unmeasured(spec: DistillationJobSpec, names: list[str]) -> list[str]:
    return [m for m in names if m not in METRICS_BY_TASK[Task(spec.task)]]


PRIMARY_NOT_MEASURED = "evaluation.primaryMetric is not a metric the task measures (names are case-sensitive)"
METRICS_NOT_MEASURED = "evaluation.metrics names metrics the task does not measure (names are case-sensitive)"


def _not_measured(spec: DistillationJobSpec, message: str, names: list[str]) -> str:
    """`message`, then the names and what the task measures (the CEL messageExpressions say the same)."""
    task = Task(spec.task)
    return f"{message}: {', '.join(names)}; {task.value} measures {', '.join(METRICS_BY_TASK[task])}"


def _not_measured_cel(message: str, names: str) -> str:
    """CEL for _not_measured's text, `names` a CEL string expression."""
    return f"'{message}: ' + {names} + '; ' + {_measured_cel()}"


def _loss_task_cel() -> str:
    branches = [
        f"self.task == '{task.value}' ? self.loss.terms.all(t, t.name in {[n.value for n in names]})"
        for task, names in LOSSES_BY_TASK.items()
    ]
    return " : ".join(branches) + " : false"


class DistillationJobSpec(KubeModel):
    """What to distil, from which teacher into which student, and how to judge the result."""

    rules = (
        Rule(
            cel=_loss_task_cel(),
            message="a loss term does not apply to this task (classification: logit-kl, cross-entropy, "
            "hidden-mse, attention-mse; embedding: embedding-mse, embedding-cosine, infonce, hidden-mse, "
            "attention-mse; reranking: margin-mse, listwise-kl, cross-entropy, hidden-mse; generation: "
            "token-kl, sequence-kd, hidden-mse, attention-mse)",
            check=_losses_fit_task,
            field="loss",
        ),
        Rule(
            cel="self.task != 'reranking' || has(self.data.fields.pair)",
            message="reranking needs data.fields.pair (the passage field)",
            check=lambda s: s.task != "reranking" or s.data.fields.pair is not None,
            field="data",
        ),
        # An unknown metric would only be found after training (the gate: "was not measured"), or be dropped from
        # the report without a word.
        Rule(
            cel=f"!has(self.evaluation.primaryMetric) || {_metric_cel('self.evaluation.primaryMetric')}",
            message=PRIMARY_NOT_MEASURED,
            message_expression=_not_measured_cel(PRIMARY_NOT_MEASURED, "self.evaluation.primaryMetric"),
            check=lambda s: not s.evaluation.primary_metric or not _unmeasured(s, [s.evaluation.primary_metric]),
            explain=lambda s: _not_measured(s, PRIMARY_NOT_MEASURED, [str(s.evaluation.primary_metric)]),
            field="evaluation.primaryMetric",
        ),
        Rule(
            cel=f"!has(self.evaluation.metrics) || self.evaluation.metrics.all(m, {_metric_cel('m')})",
            message=METRICS_NOT_MEASURED,
            # Not the names themselves: filtering the list in a messageExpression is over the API server's cost
            # budget (measured), so it says what the task measures; Python names them too.
            message_expression=f"'{METRICS_NOT_MEASURED}; ' + {_measured_cel()}",
            check=lambda s: not _unmeasured(s, list(s.evaluation.metrics)),
            explain=lambda s: _not_measured(s, METRICS_NOT_MEASURED, _unmeasured(s, list(s.evaluation.metrics))),
            field="evaluation.metrics",
        ),
        Rule(
            cel="self.task != 'classification' || !has(self.evaluation.primaryMetric) || "
            f"!(self.evaluation.primaryMetric in {list(GOLD_CLASSIFICATION_METRICS)}) || has(self.data.fields.label)",
            message="evaluation.primaryMetric accuracy, macro_precision, macro_recall and macro_f1 compare with gold "
            "labels: set data.fields.label (or use agreement, with the teacher's labels)",
            check=lambda s: s.task != Task.CLASSIFICATION or s.evaluation.primary_metric
            not in GOLD_CLASSIFICATION_METRICS or s.data.fields.label is not None,
            field="evaluation.primaryMetric",
        ),
        # Otherwise dropped from the report without a word (evaluate keeps only what was measured).
        Rule(
            cel="self.task != 'classification' || !has(self.evaluation.metrics) || has(self.data.fields.label) || "
            f"!self.evaluation.metrics.exists(m, m in {list(GOLD_CLASSIFICATION_METRICS)})",
            message="evaluation.metrics accuracy, macro_precision, macro_recall and macro_f1 compare with gold "
            "labels: set data.fields.label (or list agreement, with the teacher's labels)",
            check=lambda s: s.task != Task.CLASSIFICATION or s.data.fields.label is not None
            or not set(s.evaluation.metrics) & set(GOLD_CLASSIFICATION_METRICS),
            field="evaluation.metrics",
        ),
        # Retrieval metrics rank each text's pair among the held-out pairs: without pairs there is nothing to rank.
        Rule(
            cel="self.task != 'embedding' || !has(self.evaluation.primaryMetric) || "
            "!self.evaluation.primaryMetric.matches('^(recall|mrr|ndcg)@') || has(self.data.fields.pair)",
            message="evaluation.primaryMetric recall@k, mrr@k and ndcg@k rank each text's pair: set "
            "data.fields.pair (or use cosine, agreement with the teacher's embeddings)",
            check=lambda s: s.task != Task.EMBEDDING or not s.evaluation.primary_metric
            or not re.match(r"^(recall|mrr|ndcg)@", s.evaluation.primary_metric) or s.data.fields.pair is not None,
            field="evaluation.primaryMetric",
        ),
        Rule(
            cel="self.task != 'embedding' || !has(self.evaluation.metrics) || has(self.data.fields.pair) || "
            "!self.evaluation.metrics.exists(m, m.startsWith('recall@') || m.startsWith('mrr@') || "
            "m.startsWith('ndcg@'))",
            message="evaluation.metrics recall@k, mrr@k and ndcg@k rank each text's pair: set data.fields.pair "
            "(or list cosine, agreement with the teacher's embeddings)",
            check=lambda s: s.task != Task.EMBEDDING or s.data.fields.pair is not None
            or not any(re.match(r"^(recall|mrr|ndcg)@", m) for m in s.evaluation.metrics),
            field="evaluation.metrics",
        ),
        Rule(
            cel="!has(self.student.architecture) || !has(self.teacher.triton) && !has(self.teacher.openai)",
            message="student.architecture copies teacher layers and needs teacher.modelUri",
            check=lambda s: s.student.architecture is None or s.teacher.model_uri is not None,
            field="student",
        ),
        Rule(
            cel="!has(self.student.architecture) || self.student.architecture.numLayers > 0 || "
            "self.task in ['classification', 'embedding']",
            message="student.architecture.numLayers 0 (a static-embedding student) is for classification and "
            "embedding only",
            check=lambda s: s.student.architecture is None or s.student.architecture.num_layers > 0
            or s.task in (Task.CLASSIFICATION, Task.EMBEDDING),
            field="student",
        ),
        # An embedding teacher gives vectors, no confidence: nothing would read these (defaults are allowed).
        Rule(
            cel="self.task != 'embedding' || "
            "self.labeling.minConfidence == 0.0 && self.labeling.temperature == 1.0",
            message="labeling.minConfidence and labeling.temperature set the teacher confidence, which an "
            "embedding teacher does not give",
            check=lambda s: s.task != Task.EMBEDDING
            or (s.labeling.min_confidence == 0 and s.labeling.temperature == 1.0),
            field="labeling",
        ),
        Rule(
            cel="self.task == 'classification' || !has(self.labeling.minRelativeConfidence)",
            message="labeling.minRelativeConfidence is relative to the number of classes: classification only",
            check=lambda s: s.task == Task.CLASSIFICATION or s.labeling.min_relative_confidence is None,
            field="labeling.minRelativeConfidence",
        ),
        Rule(
            cel="self.task != 'embedding' || self.training.curriculum == 'none'",
            message="training.curriculum 'confidence' orders rows by teacher confidence, which an embedding "
            "teacher does not give",
            check=lambda s: s.task != Task.EMBEDDING or s.training.curriculum == Curriculum.NONE,
            field="training.curriculum",
        ),
        Rule(
            cel="self.task == 'generation' || self.labeling.topK == 20 && self.labeling.maxNewTokens == 64",
            message="labeling.topK and labeling.maxNewTokens apply to generation only",
            check=lambda s: s.task == Task.GENERATION
            or (s.labeling.top_k == 20 and s.labeling.max_new_tokens == 64),
            field="labeling",
        ),
        Rule(
            cel="!self.training.keepBest && !has(self.training.earlyStoppingPatience) || "
            "self.data.splits.validation > 0.0",
            message="training.keepBest and training.earlyStoppingPatience need a validation split "
            "(data.splits.validation > 0)",
            check=lambda s: not (s.training.keep_best or s.training.early_stopping_patience)
            or s.data.splits.validation > 0,
            field="training",
        ),
    )

    task: Task = Field(description="classification, embedding, reranking or generation.")
    teacher: TeacherSpec = Field(description="The model whose behaviour the student learns.")
    student: StudentSpec = Field(description="The model being trained.")
    data: DataSpec = Field(description="Inputs the teacher labels and the student trains on.")
    labeling: LabelingSpec = nested(LabelingSpec, "How the teacher labels the data.")
    loss: LossSpec = Field(description="Weighted registered losses.")
    training: TrainingSpec = nested(TrainingSpec, "Optimiser, schedule and curriculum.")
    evaluation: EvaluationSpec = nested(EvaluationSpec, "Held-out metrics and quality gates.")
    output: OutputSpec = Field(description="Artifact location and the StudentModel to create.")
    resources: StagesResources = nested(StagesResources, "Resources and placement per stage.")
    run: RunSpec = nested(RunSpec, "Image, service account and retries of the stage Jobs.")
    cost: CostSpec | None = Field(default=None, description="Prices for the ROI report (optional).")
    storage_secret_ref: StorageSecretRef | None = Field(
        default=None,
        description="Secret with the S3 credentials and endpoint of every s3:// URI of this job (KServe's key "
        "names); empty: the Pods' default AWS credential chain (e.g. IRSA).",
    )


# --- status --------------------------------------------------------------------------------------------


class Phase(StrEnum):
    PENDING = "Pending"
    LABELING = "Labeling"
    TRAINING = "Training"
    EVALUATING = "Evaluating"
    EXPORTING = "Exporting"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class Stage(StrEnum):
    LABEL = "label"
    TRAIN = "train"
    EVALUATE = "evaluate"
    EXPORT = "export"


STAGES: tuple[Stage, ...] = (Stage.LABEL, Stage.TRAIN, Stage.EVALUATE, Stage.EXPORT)
TERMINAL_PHASES = frozenset({Phase.SUCCEEDED, Phase.FAILED})


class StageState(StrEnum):
    """Where a stage's Job is, read the way `kubectl` and the Job controller read it."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


FINISHED_STATES = frozenset({StageState.SUCCEEDED, StageState.FAILED})


class StageStatus(KubeModel):
    """One stage's Job."""

    job_name: str | None = Field(default=None, description="Name of the stage's Job.")
    state: StageState = Field(default=StageState.PENDING, description="Pending, Running, Succeeded or Failed.")
    started_at: datetime | None = Field(default=None, description="When the Job started.")
    finished_at: datetime | None = Field(default=None, description="When the Job finished.")
    attempts: int = Field(default=0, ge=0, description="Pods the Job has run.")
    message: str = Field(default="", description="Last message: failure reason or log tail.")


class Progress(KubeModel):
    """Training progress written by the trainer and picked up by the operator."""

    percent: float = Field(default=0, ge=0, le=100, description="Share of training steps done.")
    step: int = Field(default=0, ge=0, description="Optimiser steps done.")
    total_steps: int = Field(default=0, ge=0, description="Optimiser steps planned.")
    epoch: float = Field(default=0, ge=0, description="Epochs done (fractional).")
    loss: float | None = Field(default=None, description="Latest training loss.")
    eta: datetime | None = Field(default=None, description="Estimated end of training.")
    updated_at: datetime | None = Field(default=None, description="When the trainer last reported.")


class GateVerdict(KubeModel):
    """Whether the student may be published, and why."""

    passed: bool = Field(description="True when every gate passed.")
    reasons: list[str] = Field(default_factory=list, description="One line per gate: value vs threshold.")


class RoiReport(KubeModel):
    """Cost and savings, from spec.cost and the measured speedup."""

    distillation_cost: float = Field(description="GPU hours used times gpuHourPrice.")
    daily_savings: float = Field(description="Teacher minus student serving cost per day.")
    break_even_days: float | None = Field(default=None, description="Days until savings repay the cost.")
    currency: str = Field(default="USD", description="Currency of the figures.")


class DistillationJobStatus(KubeModel):
    """Observed state, written only by the operator (status subresource)."""

    phase: Phase = Field(default=Phase.PENDING, description="Where the pipeline is.")
    observed_generation: int | None = Field(default=None, description="Generation the status reflects.")
    conditions: list[Condition] = Field(default_factory=list, description="Ready, Progressing, GatePassed ...")
    stages: dict[str, StageStatus] = Field(default_factory=dict, description="Per-stage Job state by stage.")
    progress: Progress | None = Field(default=None, description="Training progress, % and ETA.")
    teacher_metrics: dict[str, float] = Field(default_factory=dict, description="Teacher on the test split.")
    student_metrics: dict[str, float] = Field(default_factory=dict, description="Student on the test split.")
    quality_ratio: float | None = Field(default=None, description="Student / teacher primary metric.")
    speedup: float | None = Field(default=None, description="Teacher / student latency at batch 1.")
    gate: GateVerdict | None = Field(default=None, description="The gate verdict with its reasons.")
    student_model: ObjectReference | None = Field(default=None, description="The StudentModel produced.")
    roi: RoiReport | None = Field(default=None, description="Cost and savings report.")
    started_at: datetime | None = Field(default=None, description="When the first stage started.")
    completed_at: datetime | None = Field(default=None, description="When the job succeeded or failed.")
    message: str = Field(default="", description="Human summary of the current state.")


class DistillationJob(RootModel):
    """A knowledge-distillation pipeline run."""

    kind: Literal["DistillationJob"] = Field(default="DistillationJob", description="DistillationJob.")
    spec: DistillationJobSpec = Field(description="Desired pipeline.")
    status: DistillationJobStatus | None = Field(default=None, description="Observed state.")


PRINTER_COLUMNS = [
    {"name": "Task", "type": "string", "jsonPath": ".spec.task"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Progress", "type": "number", "jsonPath": ".status.progress.percent", "description": "% trained"},
    {"name": "Quality", "type": "number", "jsonPath": ".status.qualityRatio", "description": "student/teacher"},
    {"name": "Speedup", "type": "number", "jsonPath": ".status.speedup"},
    {"name": "Student", "type": "string", "jsonPath": ".status.studentModel.name"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
