"""StudentModel: a deployable student, served by Triton Inference Server.

The operator renders the Triton model repository (config.pbtxt), a Deployment running `tritonserver` and a
Service (HTTP 8000, gRPC 8001, metrics 8002). A DistillationJob creates one when its gates pass; one can also
be written by hand for a model trained elsewhere.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from ._base import ArtifactURI, Condition, Duration, KubeModel, ResourceName, RootModel, Rule, duration_rule, nested
from .common import ServingSpec, Task
from .storage import StorageSecretRef

KIND = "StudentModel"
PLURAL = "studentmodels"
SHORT_NAMES = ["sm"]

HTTP_PORT = 8000
GRPC_PORT = 8001
METRICS_PORT = 8002


class ModelFormat(StrEnum):
    HF = "hf"
    ONNX = "onnx"
    QUANTIZED = "quantized"


# Bounds of spec.servingCheck. A check runs for duration + warm-up against the model users call, so its ceiling
# keeps that load short; 256 workers is 32x the default and more than one check Pod's client threads keep busy.
MAX_CHECK_CONCURRENCY = 256
MAX_CHECK_TEXTS = 64
MAX_CHECK_TEXT_LENGTH = 2048
MAX_P95_MS = 3_600_000.0  # one hour, as latencyBudgetMs


class ServingCheckSpec(KubeModel):
    """The served-latency check: once the StudentModel is Ready, a short closed-loop HTTP load on its own Service
    (as users call it) measures p50/p95/p99 and throughput, and optionally gates the served p95."""

    rules = (
        duration_rule("duration", timedelta(seconds=1), timedelta(minutes=10)),
        duration_rule("warmup", timedelta(0), timedelta(minutes=5)),
        Rule(
            cel="!has(self.maxP95Ms) || self.enabled",
            message="maxP95Ms gates the served check's p95: it needs enabled: true",
            check=lambda c: c.max_p95_ms is None or c.enabled,
            field="maxP95Ms",
        ),
    )

    enabled: bool = Field(
        default=True, description="Run the check after each new generation becomes Ready; false: never load the "
        "model (status.served and the ServedLatency condition are then left out).")
    concurrency: int = Field(
        default=8, ge=1, le=MAX_CHECK_CONCURRENCY,
        description="Requests in flight at once (closed loop: each worker sends the next request when its last "
        "is answered), 1 to 256.")
    duration: Duration = Field(default="10s", description="How long the measured load runs, 1s to 10m.")
    warmup: Duration = Field(
        default="2s", description="Unmeasured load before it (first calls load kernels, fill caches), 0s to 5m.")
    max_p95_ms: float | None = Field(
        default=None, gt=0, le=MAX_P95_MS,
        description="Gate: the served p95 in milliseconds must not exceed this, else ServedLatency is False "
        "(reason AboveMaxP95) and a CanaryRollout does not start on this model; empty: measured, not gated.")
    texts: list[Annotated[str, Field(min_length=1, max_length=MAX_CHECK_TEXT_LENGTH)]] = Field(
        default_factory=list, max_length=MAX_CHECK_TEXTS,
        description="Input texts the requests cycle through, one row per request (reranking: each text is a "
        "query paired with the next as its passage); empty: kubestill's built-in sample of short English "
        "sentences. Use texts like your traffic: latency depends on their length.")


class StudentModelSpec(KubeModel):
    """The artifact to serve and how to serve it."""

    artifact_uri: ArtifactURI = Field(
        description="Exported model directory (file://, pvc://claim/path, s3://bucket/prefix, pkg://)."
    )
    format: ModelFormat = Field(default=ModelFormat.HF, description="hf (safetensors), onnx or quantized.")
    task: Task = Field(description="What the model does; decides its Triton inputs and outputs.")
    labels: list[str] = Field(
        default_factory=list, max_length=10_000,
        description="Class names in the artifact's order (its kubestill.json \"labels\", the order of "
        "PROBABILITIES), published in the Triton config for clients and Triton teachers (classification). "
        "Another order or other names: the model refuses to load (Ready=False, reason LabelsMismatch). "
        "Empty: the artifact's own order is served, and none is published.",
    )
    metrics: dict[str, float] = Field(
        default_factory=dict, description="Evaluation metrics, copied from the DistillationJob."
    )
    source_job: ResourceName | None = Field(default=None, description="DistillationJob that produced it.")
    serving: ServingSpec = nested(ServingSpec, "Triton image, replicas, resources and batching.")
    storage_secret_ref: StorageSecretRef | None = Field(
        default=None,
        description="Secret with the S3 credentials and endpoint of an s3:// artifactUri (KServe's key names); "
        "empty: the Pods' default AWS credential chain.",
    )
    serving_check: ServingCheckSpec = nested(
        ServingCheckSpec, "The served-latency check once Ready (on by default) and its optional p95 gate.")


class StudentModelPhase(StrEnum):
    PENDING = "Pending"
    DEPLOYING = "Deploying"
    READY = "Ready"
    FAILED = "Failed"


class Endpoint(KubeModel):
    """Where the served model answers inside the cluster."""

    http: str = Field(description="Triton HTTP/REST base URL.")
    grpc: str = Field(description="Triton gRPC address host:port.")
    metrics: str = Field(description="Prometheus metrics URL.")
    model_name: str = Field(description="Model name in Triton's repository.")


class InProcessLatency(KubeModel):
    """The evaluate stage's in-process latency of the same student (single-row calls from Python, tokenizer
    included), from spec.metrics (latencyP50Ms, latencyP95Ms, latencyP99Ms: the DistillationJob copies them
    from its report), so served and in-process figures sit side by side."""

    p50_ms: float | None = Field(default=None, ge=0, description="Median in-process latency, ms.")
    p95_ms: float | None = Field(default=None, ge=0, description="95th percentile in-process latency, ms.")
    p99_ms: float | None = Field(default=None, ge=0, description="99th percentile in-process latency, ms.")


class ServedFigures(KubeModel):
    """The last served-latency check: a closed loop of `concurrency` workers over HTTP on the model's Service,
    one row per request; latency is each request's round trip as the client sees it (serialisation, HTTP,
    Triton's queue and dynamic batcher, the model)."""

    p50_ms: float = Field(ge=0, description="Median served latency, ms.")
    p95_ms: float = Field(ge=0, description="95th percentile served latency, ms (what maxP95Ms gates).")
    p99_ms: float = Field(ge=0, description="99th percentile served latency, ms.")
    throughput_rps: float = Field(ge=0, description="Answered requests per second of wall time.")
    concurrency: int = Field(ge=1, description="Requests in flight at once.")
    requests: int = Field(ge=0, description="Requests answered during the measured load.")
    errors: int = Field(ge=0, description="Requests that failed during the measured load.")
    duration_seconds: float = Field(ge=0, description="Wall time of the measured load, s.")
    measured_at: datetime | None = Field(default=None, description="When the check's Job finished.")
    observed_generation: int | None = Field(default=None, description="Generation of the spec it measured.")
    job_name: str = Field(default="", description="The check's Job.")
    in_process: InProcessLatency | None = Field(
        default=None, description="The in-process figures of the same student, when spec.metrics has them.")


class StudentModelStatus(KubeModel):
    """Observed state, written only by the operator."""

    phase: StudentModelPhase = Field(default=StudentModelPhase.PENDING, description="Serving state.")
    observed_generation: int | None = Field(default=None, description="Generation the status reflects.")
    conditions: list[Condition] = Field(default_factory=list, description="Ready and friends.")
    endpoint: Endpoint | None = Field(default=None, description="Service endpoints once deployed.")
    ready_replicas: int = Field(default=0, ge=0, description="Triton Pods passing /v2/health/ready.")
    deployment_name: str | None = Field(default=None, description="The Triton Deployment.")
    service_name: str | None = Field(default=None, description="The Service in front of it.")
    ready_at: datetime | None = Field(default=None, description="When it first became Ready.")
    served: ServedFigures | None = Field(
        default=None, description="Served latency and throughput from the last serving check (spec.servingCheck).")
    message: str = Field(default="", description="Human summary of the current state.")


class StudentModel(RootModel):
    """A deployable student model."""

    kind: Literal["StudentModel"] = Field(default="StudentModel", description="StudentModel.")
    spec: StudentModelSpec = Field(description="Artifact and serving settings.")
    status: StudentModelStatus | None = Field(default=None, description="Observed state.")


PRINTER_COLUMNS = [
    {"name": "Task", "type": "string", "jsonPath": ".spec.task"},
    {"name": "Format", "type": "string", "jsonPath": ".spec.format"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"},
    {"name": "Served p95", "type": "number", "jsonPath": ".status.served.p95Ms", "description": "ms",
     "priority": 1},
    {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint.http", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
