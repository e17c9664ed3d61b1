"""Types shared by more than one kind: scheduling, serving and resources."""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import Field

from ._base import KubeModel, ResourceName, Rule, nested

QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$"
MEMORY_UNIT_PATTERN = r"^[0-9]+([.][0-9]+)?(k|M|G|T|Ki|Mi|Gi|Ti)$"  # [.]: no backslash to escape in CEL
MAX_TOLERATION_SECONDS = 30 * 86400
MAX_QUEUE_DELAY_MICROSECONDS = 1_000_000


class Task(StrEnum):
    CLASSIFICATION = "classification"
    EMBEDDING = "embedding"
    RERANKING = "reranking"
    GENERATION = "generation"


class TolerationOperator(StrEnum):
    EXISTS = "Exists"
    EQUAL = "Equal"


class TaintEffect(StrEnum):
    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class Toleration(KubeModel):
    """A Pod toleration, as in corev1.Toleration."""

    rules = (
        Rule(
            cel="self.operator != 'Exists' || !has(self.value)",
            message="a toleration with operator Exists must not set value",
            check=lambda t: t.operator != "Exists" or t.value is None,
            field="value",
        ),
    )

    key: str | None = Field(default=None, description="Taint key to tolerate; empty with Exists matches all.")
    operator: TolerationOperator = Field(default=TolerationOperator.EQUAL, description="Exists or Equal.")
    value: str | None = Field(default=None, description="Taint value to match when operator is Equal.")
    effect: TaintEffect | None = Field(default=None, description="Taint effect to match; empty matches all.")
    # Ceiling: tolerating a taint for over a month is tolerating it for good (leave this empty for that), and
    # far larger values overflow the taint manager's nanosecond arithmetic into an immediate eviction.
    toleration_seconds: int | None = Field(
        default=None, ge=0, le=MAX_TOLERATION_SECONDS,
        description="How long a NoExecute taint is tolerated before eviction, 0 to 2592000 (30 days); "
        "empty: for good.",
    )


class ComputeResources(KubeModel):
    """What one container gets. Quantities use Kubernetes notation ("500m", "16Gi")."""

    rules = (
        # Kubernetes reads a bare number as bytes and `m` as thousandths of a byte: `memory: 24` or `512m` is a
        # valid quantity no container can run in, found only when the Pod fails.
        Rule(
            cel=f"!has(self.memory) || self.memory.matches('{MEMORY_UNIT_PATTERN}')",
            message="memory needs a byte unit (Ki, Mi, Gi, Ti, or k, M, G, T), e.g. 512Mi or 24Gi: a bare number "
            "is bytes and m is thousandths of a byte",
            check=lambda r: r.memory is None or re.match(MEMORY_UNIT_PATTERN, r.memory) is not None,
            field="memory",
        ),
    )

    cpu: str | None = Field(default=None, pattern=QUANTITY_PATTERN, description="CPU request and limit.")
    memory: str | None = Field(
        default=None, pattern=QUANTITY_PATTERN, description="Memory request and limit."
    )
    gpus: int = Field(default=0, ge=0, le=16, description="Number of nvidia.com/gpu to request.")


class Placement(KubeModel):
    """Where a workload's Pods may run."""

    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels the Pods must match (corev1 nodeSelector)."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=32, description="Taints the Pods tolerate."
    )


class StageResources(ComputeResources, Placement):
    """Resources and placement of one pipeline stage's Job."""


class InstanceKind(StrEnum):
    CPU = "KIND_CPU"
    GPU = "KIND_GPU"


class ServingRuntime(StrEnum):
    AUTO = "auto"
    TORCH = "torch"


class DynamicBatching(KubeModel):
    """Triton's dynamic batcher: requests arriving close together are served as one batch."""

    enabled: bool = Field(default=True, description="Turn Triton's dynamic batcher on.")
    # 0 is Triton's own default (batch only what is already queued); the ceiling is added to every request's
    # latency, and a wait of seconds is a stalled server, not batching.
    # The default, measured (bench/serving.py's model and load, the static classification student through ONNX
    # Runtime, closed loop, 2 shared cores): 0 and 100 us serve alike (~1,300-1,500 req/s at 8 clients, within
    # the run-to-run noise); 500 us costs ~15%, 2,000 us halves the throughput and doubles p50, and preferred
    # sizes [4, 8, 16, 32] with 1,000 us do the same: the batcher then holds requests the instance could have
    # served. Hence no preferred sizes by default (Triton's advice too, outside TensorRT profiles).
    max_queue_delay_microseconds: int = Field(
        default=100, ge=0, le=MAX_QUEUE_DELAY_MICROSECONDS,
        description="How long a request may wait for others to batch with, 0 to 1000000 (1 s).",
    )
    preferred_batch_sizes: list[int] = Field(
        default_factory=list, max_length=16, description="Batch sizes the batcher tries to form first."
    )


class InstanceGroup(KubeModel):
    """How many copies of the model Triton runs, and on what."""

    kind: InstanceKind | None = Field(
        default=None, description="KIND_CPU or KIND_GPU; empty: KIND_GPU when the Triton container asks for GPUs "
        "(resources.gpus > 0, i.e. nvidia.com/gpu), KIND_CPU otherwise.")
    count: int | None = Field(
        default=None, ge=1, le=64,
        description="Model instances per server (on KIND_GPU: per GPU). Empty: for a classification or embedding "
        "student served through ONNX Runtime (runtime auto) on KIND_CPU, one per onnxRuntime.intraOpThreads "
        "(default 1) whole cores of resources.cpu, no more than one per GiB of resources.memory and at most 8 "
        "(each instance is a process holding its own copy of the model and runtime: ~0.6 GiB measured for a small "
        "student; set count, or more memory, for a bigger one); otherwise 1, with the cores as its threads.",
    )


class OnnxRuntimeOptions(KubeModel):
    """ONNX Runtime's CPU threads in each model instance (runtime auto, where the artifact has model.onnx)."""

    intra_op_threads: int = Field(
        default=0, ge=0, le=256,
        description="Threads one instance's ONNX Runtime session (or torch, on the torch path) uses inside an "
        "operator. 0: the container's CPU (resources.cpu) shared among the instances (instanceGroup.count, per "
        "GPU on KIND_GPU), rounded down, at least 1; with no resources.cpu, the runtime's own default (one per "
        "physical core of the node, whatever the Pod's limit).",
    )
    # Off by default, measured with one instance (bench/serving.py, 2 shared cores, Triton's Python client):
    # without spinning the static student cost the server 0.26-0.28 ms of CPU a request at 8 clients instead of
    # 0.34-0.35, 0.15-0.16 instead of 0.23-0.26 at 32 clients, where it served 5,550-6,730 req/s instead of
    # 4,160-4,340; a spinning pool burns the Pod's CPU limit while it waits for work, and Kubernetes throttles
    # it. Spinning still served the 6-layer teacher ~25% faster at 8 clients: turn it on for large models on
    # cores of their own.
    allow_spinning: bool = Field(
        default=False,
        description="Let ONNX Runtime's idle intra-op threads spin (busy-wait) for the next operator instead of "
        "sleeping: lower latency for large models on cores of their own, CPU burnt (and throttled under a CPU "
        "limit) otherwise.",
    )


class ServingSpec(KubeModel):
    """How a student is served on Triton Inference Server."""

    rules = (
        Rule(
            cel="!has(self.dynamicBatching) || !has(self.dynamicBatching.preferredBatchSizes) || "
            "self.dynamicBatching.preferredBatchSizes.all(b, b <= self.maxBatchSize)",
            message="dynamicBatching.preferredBatchSizes must not exceed maxBatchSize",
            check=lambda s: all(b <= s.max_batch_size for b in s.dynamic_batching.preferred_batch_sizes),
            field="dynamicBatching",
        ),
        Rule(
            cel="!has(self.instanceGroup) || !has(self.instanceGroup.kind) || self.instanceGroup.kind != 'KIND_GPU' || "
            "(has(self.resources) && has(self.resources.gpus) && self.resources.gpus > 0)",
            message="instanceGroup.kind KIND_GPU needs resources.gpus > 0",
            check=lambda s: s.resources.gpus > 0 or s.instance_group.kind != InstanceKind.GPU,
            field="instanceGroup",
        ),
    )

    image: str | None = Field(
        default=None, description="Triton server image; the operator's configured default when empty."
    )
    replicas: int = Field(default=1, ge=0, le=100, description="Number of Triton server Pods.")
    resources: ComputeResources = nested(ComputeResources, "Resources of each Triton container.")
    placement: Placement = nested(Placement, "Node selector and tolerations.")
    max_batch_size: int = Field(default=32, ge=1, le=4096, description="Largest batch Triton will form.")
    dynamic_batching: DynamicBatching = nested(DynamicBatching, "Triton dynamic batcher settings.")
    instance_group: InstanceGroup = nested(InstanceGroup, "Model instances per server and their device kind.")
    runtime: ServingRuntime = Field(
        default=ServingRuntime.AUTO,
        description="What runs the model inside Triton's python backend. auto: ONNX Runtime where the artifact "
        "has model/model.onnx (classification and embedding students export one), torch otherwise; torch: "
        "always the torch model (the fallback, e.g. to compare).",
    )
    onnx_runtime: OnnxRuntimeOptions = nested(OnnxRuntimeOptions, "ONNX Runtime's CPU threads per model instance.")
    service_account_name: ResourceName | None = Field(
        default=None, description="ServiceAccount the Triton Pods run as."
    )
