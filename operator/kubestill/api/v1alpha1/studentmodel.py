"""StudentModel: a deployable student, served by Triton Inference Server.

The operator renders the Triton model repository (config.pbtxt), a Deployment running `tritonserver` and a
Service (HTTP 8000, gRPC 8001, metrics 8002). A DistillationJob creates one when its gates pass; one can also
be written by hand for a model trained elsewhere.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import Field

from ._base import ArtifactURI, Condition, KubeModel, ResourceName, RootModel, nested
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
    {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint.http", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
