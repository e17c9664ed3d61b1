"""metrics.json, the evaluate stage's report: the contract between the trainer, which writes it, and the operator,
which reads it from the report ConfigMap to judge the gates and fill the DistillationJob's status and the
StudentModel. Both sides go through `EvaluationReport`, so neither can write or expect a shape the other lacks.

Versioning. `schemaVersion` is bumped for any change an older reader would misread (a renamed or re-typed
key); a reader meets a newer version with a clear `ReportError` ("upgrade the operator"), never a guess. A
report without `schemaVersion` is a version-0 report, written by trainers before this model existed (they
are still in users' artifact buckets and in the report ConfigMaps of running jobs): it is migrated on load
(`_from_v0`). Keys this version does not know are ignored rather than rejected: an added, optional figure
must not fail a job judged by an older operator (as Kubernetes clients ignore unknown fields); everything
the gates read is typed and required where the gates need it. The one strict part is `gate`: it is the
DistillationJob status's GateVerdict, which the same judge produces on both sides, so an unknown key there
means a judge of another release, and the operator must not copy a verdict it cannot read.

Units: latency in milliseconds of wall-clock time per call, end to end from text (tokenizer included);
sizes in parameters and MB (10^6 bytes) on disk; metrics as the task computes them, all higher-is-better.

Wire shape (version 1), camelCase:

    {"schemaVersion": 1, "primaryMetric": "accuracy", "testRows": 240, "labels": ["a", "b"],
     "teacher": {"accuracy": 0.91, ...}, "student": {"accuracy": 0.88, ...},
     "qualityRatio": 0.967, "speedup": 3.1,
     "segments": {"sport": {"support": 51, "teacher": {...}, "student": {...}}},
     "latency": {"device": "cpu", "batchedSpeedup": 2.8,
                 "student": {"unit": "ms", "batchSize": 1, "samples": 100, "p50": 4.1, "p95": 5.0, "p99": 6.2,
                             "throughputRowsPerSecond": 830.0, "throughputBatchSize": 32},
                 "teacher": {...}},
     "models": {"student": {"params": 11000000, "sizeMb": 44.1}, "teacher": {...}},
     "gate": {"passed": true, "reasons": ["qualityRatio 0.9670 ..."]},
     "rowSets": {"test": {"rows": 240, "goldRows": 238, "teacher": {...}, "student": {...}},
                 "unfiltered": {"rows": 260, "goldRows": 258, ...}},
     "data": {"totalRows": 2400, "badRowsSkipped": 0, "dropped": {"low confidence": 200}, "droppedShare": 0.083,
              "missingLabels": 12, "unknownLabels": 3,
              "truncation": {"maxSeqLength": 128, "rows": 2400, "truncatedRows": 40, "truncatedShare": 0.017},
              "training": {"student": "2 layers cut from the teacher", "trainRows": 1600, "recommendedRows": 1000,
                           "classes": 5, "recommendedClassRows": 16, "sparseClasses": {}, "sparseClassCount": 0}}}
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from .v1alpha1.distillationjob import GateVerdict

SCHEMA_VERSION: Literal[1] = 1



def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


# A measured figure; NaN and infinity (what a failed measurement or 0/0 gives) become None, because JSON has
# neither and a reader must see "not measured", not a number.
Figure = Annotated[float | None, AfterValidator(_finite)]
# metric name -> value; None where the task could not compute it (e.g. a retrieval metric on one row).
Metrics = dict[str, Figure]


class ReportError(ValueError):
    """metrics.json cannot be read as an EvaluationReport; the message says why, for a condition."""


class _ReportModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def to_wire(self) -> dict[str, Any]:
        """camelCase keys, unset optional figures left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class LatencyFigures(_ReportModel):
    """One model's latency: percentiles of single calls of `batchSize` rows, and batched throughput."""

    unit: Literal["ms"] = Field(default="ms", description="Unit of p50, p95 and p99.")
    batch_size: int = Field(default=1, ge=1, description="Rows per timed call the percentiles are taken over.")
    samples: int | None = Field(default=None, ge=1, description="Timed calls (None in version-0 reports).")
    p50: float = Field(ge=0, description="Median latency of a call.")
    p95: float = Field(ge=0, description="95th percentile latency of a call: what latencyBudgetMs bounds.")
    p99: float = Field(ge=0, description="99th percentile latency of a call.")
    throughput_rows_per_second: float | None = Field(default=None, ge=0, description="Rows/s in batches.")
    throughput_batch_size: int | None = Field(default=None, ge=1, description="Batch size of the throughput.")


class LatencyReport(_ReportModel):
    """Latency of the student and, when it runs locally, the teacher, on the same device and rows."""

    device: str | None = Field(default=None, description="Where it was measured: cpu, cuda, ...")
    student: LatencyFigures | None = Field(default=None, description="The student; None: not measured.")
    teacher: LatencyFigures | None = Field(default=None, description="The teacher; None: remote or not measured.")
    batched_speedup: Figure = Field(default=None, description="Student / teacher batched throughput.")
    speedup_interval: list[float] | None = Field(
        default=None, min_length=2, max_length=2, description="95% bootstrap interval [low, high] of the speedup "
        "(teacher / student median latency), from single-row calls timed interleaved; None: not measured so.")
    speedup_distinguishable: bool | None = Field(
        default=None, description="False when speedupInterval contains 1: the student is not measurably faster "
        "or slower on this machine, whatever the point estimate says.")
    load_average: float | None = Field(
        default=None, ge=0, description="The machine's 1-minute load average when the timings were taken.")


class ModelSize(_ReportModel):
    """How big a model is."""

    params: int | None = Field(default=None, ge=0, description="Parameters.")
    size_mb: float | None = Field(default=None, ge=0, description="Size of its directory on disk, MB (1e6 B).")


class SegmentReport(_ReportModel):
    """Teacher and student on the test rows of one segment (data.fields.segment)."""

    support: int = Field(ge=0, description="Test rows in the segment: how much the segment's figures weigh.")
    teacher: Metrics = Field(default_factory=dict, description="The teacher's metrics on the segment.")
    student: Metrics = Field(default_factory=dict, description="The student's metrics on the segment.")


class RowSetReport(_ReportModel):
    """Teacher and student on one set of test rows, with the rows each reference covers: metrics against gold
    labels (accuracy, macro F1, ...) are computed on the `goldRows` rows that have one; `agreement` (with the
    teacher) on all `rows`. Without any gold label there is no accuracy, only agreement."""

    rows: int = Field(ge=0, description="Rows in the set.")
    gold_rows: int = Field(default=0, ge=0, description="Rows with a gold label: what gold metrics are over.")
    teacher: Metrics = Field(default_factory=dict, description="The teacher's metrics on the set.")
    student: Metrics = Field(default_factory=dict, description="The student's metrics on the set.")


class TruncationReport(_ReportModel):
    """Inputs longer than training.maxSeqLength, which every model of the job only sees cut."""

    max_seq_length: int = Field(ge=1, description="The length inputs are cut at, in tokens.")
    rows: int = Field(ge=0, description="Rows measured.")
    truncated_rows: int = Field(ge=0, description="Rows longer than maxSeqLength.")
    truncated_share: Figure = Field(default=None, description="truncatedRows / rows.")
    max_tokens: int | None = Field(default=None, ge=0, description="Length of the longest row, in tokens.")
    p95_tokens: int | None = Field(default=None, ge=0, description="95th percentile row length, in tokens.")


class TrainingDataReport(_ReportModel):
    """Whether the train split is large enough for the chosen student (the label stage's data-size check,
    kubestill_trainer.data_checks.training_data_check, which documents the thresholds and their sources)."""

    student: str = Field(min_length=1, description="The student kind the threshold is for, in words.")
    train_rows: int = Field(ge=0, description="Rows in the train split after the quality filter.")
    recommended_rows: int = Field(ge=1, description="Fewest train rows this student kind is known to learn from.")
    classes: int | None = Field(default=None, ge=0, description="Teacher classes (classification); None otherwise.")
    recommended_class_rows: int | None = Field(
        default=None, ge=1, description="Fewest train rows per class (by the teacher's label) recommended.")
    sparse_classes: dict[str, int] = Field(
        default_factory=dict, description="Classes under recommendedClassRows: label -> train rows (the 10 "
        "smallest; sparseClassCount has them all).")
    sparse_class_count: int = Field(default=0, ge=0, description="Classes under recommendedClassRows.")
    advice: str = Field(default="", description="What to do when the check warns.")

    @property
    def sufficient(self) -> bool:
        """True when neither the rows nor any class fall short."""
        return self.train_rows >= self.recommended_rows and not self.sparse_class_count

    def summary(self) -> str:
        """The check in one line, whatever its verdict.

        >>> TrainingDataReport(student="a static student", train_rows=1149, recommended_rows=1000,
        ...                    classes=4).summary()
        '1149 training rows (4 classes) for a static student (known to learn from 1000 or more)'
        """
        classes = f" ({self.classes} classes)" if self.classes is not None else ""
        rows = f"{self.train_rows} training row{'' if self.train_rows == 1 else 's'}"
        return f"{rows}{classes} for {self.student} (known to learn from {self.recommended_rows} or more)"

    def warnings(self) -> list[str]:
        """One line per shortfall, with what to do (empty: enough data).

        >>> TrainingDataReport(student="a static student", train_rows=200, recommended_rows=250,
        ...                    advice="add text").warnings()
        ['200 training rows for a static student, fewer than the 250 it is known to learn from: add text']
        """
        out = []
        if self.train_rows < self.recommended_rows:
            rows = f"{self.train_rows} training row{'' if self.train_rows == 1 else 's'}"
            out.append(f"{rows} for {self.student}, fewer than the {self.recommended_rows} it is known to learn "
                       f"from: {self.advice}")
        if self.sparse_class_count:
            smallest = ", ".join(f"{k!r} {v}" if not k.strip() else f"{k} {v}" for k, v in self.sparse_classes.items())
            verb = "has" if self.sparse_class_count == 1 else "have"
            out.append(f"{self.sparse_class_count} of {self.classes} classes {verb} fewer than "
                       f"{self.recommended_class_rows} training rows by the teacher's label ({smallest}"
                       f"{', ...' if self.sparse_class_count > len(self.sparse_classes) else ''}): the student "
                       "sees too few examples of them; add text for them or merge rare classes")
        return out


class DataReport(_ReportModel):
    """What the label stage did with the input rows: nothing is dropped or replaced without a count here."""

    total_rows: int = Field(ge=0, description="Rows read (bad rows not included).")
    bad_rows_skipped: int = Field(default=0, ge=0, description="Unreadable rows left out (data.onBadRows skip).")
    dropped: dict[str, int] = Field(default_factory=dict, description="Rows dropped by the quality filter, by reason.")
    dropped_share: Figure = Field(default=None, description="Dropped rows / totalRows (labeling.maxDroppedShare).")
    missing_labels: int = Field(default=0, ge=0, description="Rows without a gold label (data.fields.label set).")
    unknown_labels: int = Field(default=0, ge=0, description="Rows whose gold label is not a teacher class.")
    truncation: TruncationReport | None = Field(default=None, description="Inputs cut at maxSeqLength.")
    training: TrainingDataReport | None = Field(
        default=None, description="The train split's size against the student kind's needs (a warning, not a "
        "gate: the evaluation's gates judge the result).")

    def warnings(self) -> list[str]:
        """One line per count that changes what the student learns from or is judged on (empty: none), as the
        trainer logs them and the DistillationJob's DataComplete condition says them.

        >>> DataReport(total_rows=10, bad_rows_skipped=1, missing_labels=2).warnings()[0]
        '1 unreadable rows skipped (data.onBadRows skip)'
        """
        out = []
        if self.bad_rows_skipped:
            out.append(f"{self.bad_rows_skipped} unreadable rows skipped (data.onBadRows skip)")
        if self.missing_labels:
            out.append(f"{self.missing_labels} of {self.total_rows} rows have no gold label: hard-label losses use "
                       "the teacher's top class for them, gold metrics leave them out")
        if self.unknown_labels:
            out.append(f"{self.unknown_labels} of {self.total_rows} rows have a gold label that is not a teacher "
                       "class: hard-label losses use the teacher's top class for them, gold metrics count them wrong")
        t = self.truncation
        if t is not None and t.truncated_rows:
            out.append(f"{t.truncated_rows} of {t.rows} rows ({t.truncated_share or 0:.1%}) are longer than "
                       f"training.maxSeqLength {t.max_seq_length} tokens (longest {t.max_tokens}) and are cut")
        return out


class EvaluationReport(_ReportModel):
    """The evaluate stage's result on the held-out test split (metrics.json)."""

    schema_version: Literal[1] = Field(default=SCHEMA_VERSION, description="Version of this shape.")
    primary_metric: str = Field(min_length=1, description="The metric the quality ratio and segment drops use.")
    test_rows: int | None = Field(default=None, ge=0, description="Rows of the test split.")
    labels: list[str] = Field(default_factory=list, description="Class labels in model output order.")
    teacher: Metrics = Field(description="The teacher's metrics on the test split.")
    student: Metrics = Field(description="The student's metrics on the test split.")
    quality_ratio: Figure = Field(
        default=None, description="Student / teacher primary metric (kubestill.api.gates.quality_ratio)."
    )
    speedup: Figure = Field(default=None, description="Teacher / student median latency at batch 1.")
    segments: dict[str, SegmentReport] = Field(default_factory=dict, description="Per segment, by name.")
    latency: LatencyReport = Field(default_factory=LatencyReport, description="Latency per model.")
    models: dict[str, ModelSize] = Field(default_factory=dict, description="Sizes by model: student, teacher.")
    gate: GateVerdict | None = Field(default=None, description="The trainer's gate verdict.")
    row_sets: dict[str, RowSetReport] = Field(
        default_factory=dict,
        description="Metrics per set of test rows, with counts: 'test' (after the confidence filter, what the "
        "gates judge) and 'unfiltered' (every test row the teacher answered, low-confidence ones included).",
    )
    data: DataReport | None = Field(default=None, description="What the label stage did with the input rows.")

    @model_validator(mode="before")
    @classmethod
    def _check_version(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        version = data.get("schemaVersion", data.get("schema_version"))
        if version is None or version == 0:
            return _from_v0(data)
        if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
            raise ValueError(f"schemaVersion {version} is newer than this kubestill reads ({SCHEMA_VERSION}): "
                             "upgrade the operator, or run the trainer image of the same release")
        return data

    def to_json(self) -> str:
        """The text of metrics.json (compact; JSON has no NaN, so unmeasurable figures are left out or null)."""
        return json.dumps(self.to_wire(), allow_nan=False)


def load_report(data: Mapping[str, Any] | str | bytes) -> EvaluationReport:
    """Parse metrics.json (text or the parsed mapping), migrating a version-0 report.

    Raises ReportError with one line naming the first bad key ("metrics.json: student: field required")."""
    try:
        parsed = json.loads(data) if isinstance(data, str | bytes) else data
    except ValueError as exc:
        raise ReportError(f"metrics.json is not JSON: {exc}") from exc
    if not isinstance(parsed, Mapping):
        raise ReportError(f"metrics.json is a JSON {type(parsed).__name__}, not an object")
    try:
        return EvaluationReport.model_validate(parsed)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        message = str(first["msg"]).removeprefix("Value error, ")
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ReportError(f"metrics.json: {where}: {message}{more}") from exc


# --- version 0: what trainers wrote before this model --------------------------------------------------------
# latency.<model> = {batch1_p50_ms, batch1_p95_ms, batch1_p99_ms, throughput_rows_per_s, throughput_batch_size}
# and segments.<name>.count = {"rows": n}; everything else had the shape of version 1.


def _latency_from_v0(figures: Any) -> Any:
    if not isinstance(figures, Mapping) or not figures:
        return None  # version 0 wrote {} when it measured nothing
    if "batch1_p95_ms" not in figures:
        return figures  # let validation name what is missing
    out: dict[str, Any] = {"unit": "ms", "batchSize": 1, "p50": figures.get("batch1_p50_ms"),
                           "p95": figures.get("batch1_p95_ms"), "p99": figures.get("batch1_p99_ms")}
    if figures.get("throughput_rows_per_s") is not None:
        out["throughputRowsPerSecond"] = figures["throughput_rows_per_s"]
    if figures.get("throughput_batch_size") is not None:
        out["throughputBatchSize"] = int(figures["throughput_batch_size"])
    return out


def _segment_from_v0(segment: Any) -> Any:
    if not isinstance(segment, Mapping) or "support" in segment:
        return segment
    count = segment.get("count")
    rows = count.get("rows") if isinstance(count, Mapping) else None
    return {**segment, "support": int(rows) if isinstance(rows, int | float) else None}


def _from_v0(data: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(data)
    latency = data.get("latency")
    if isinstance(latency, Mapping):
        out["latency"] = {**latency, "student": _latency_from_v0(latency.get("student")),
                          "teacher": _latency_from_v0(latency.get("teacher"))}
    segments = data.get("segments")
    if isinstance(segments, Mapping):
        out["segments"] = {name: _segment_from_v0(seg) for name, seg in segments.items()}
    out["schemaVersion"] = SCHEMA_VERSION
    return out
