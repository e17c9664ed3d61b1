"""The Triton tensor contract and config.pbtxt rendering, shared by the trainer (export) and the operator
(the `<name>-triton` ConfigMap). Pure: no I/O, no torch.

Every model uses Triton's python backend with a leading batch dimension (max_batch_size > 0); the generic
`model.py` exported with each student reads `kubestill.json` from the directory in the `artifact_dir`
parameter and answers with these tensors.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .v1alpha1.common import InstanceKind, ServingRuntime, ServingSpec, Task

# The file in every exported model directory that says how to load and call it (task, format, class labels).
MODEL_CARD = "kubestill.json"


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: name, Triton data type and dims (without the batch dimension)."""

    name: str
    data_type: str
    dims: tuple[int, ...]


@dataclass(frozen=True)
class TaskTensors:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


_TEXT = TensorSpec("TEXT", "TYPE_STRING", (1,))

TENSORS: dict[Task, TaskTensors] = {
    Task.CLASSIFICATION: TaskTensors(
        inputs=(_TEXT,),
        outputs=(TensorSpec("LABEL", "TYPE_STRING", (1,)), TensorSpec("PROBABILITIES", "TYPE_FP32", (-1,))),
    ),
    Task.EMBEDDING: TaskTensors(inputs=(_TEXT,), outputs=(TensorSpec("EMBEDDING", "TYPE_FP32", (-1,)),)),
    Task.RERANKING: TaskTensors(
        inputs=(TensorSpec("QUERY", "TYPE_STRING", (1,)), TensorSpec("PASSAGE", "TYPE_STRING", (1,))),
        outputs=(TensorSpec("SCORE", "TYPE_FP32", (1,)),),
    ),
    Task.GENERATION: TaskTensors(
        inputs=(TensorSpec("PROMPT", "TYPE_STRING", (1,)),), outputs=(TensorSpec("TEXT", "TYPE_STRING", (1,)),)
    ),
}


def _quote(value: str) -> str:
    return json.dumps(value)  # protobuf text format accepts JSON-style escaped strings


def _tensor_block(kind: str, tensors: Sequence[TensorSpec]) -> list[str]:
    lines = [f"{kind} ["]
    for i, t in enumerate(tensors):
        dims = ", ".join(str(d) for d in t.dims)
        sep = "," if i < len(tensors) - 1 else ""
        lines.append(f"  {{ name: {_quote(t.name)} data_type: {t.data_type} dims: [ {dims} ] }}{sep}")
    lines.append("]")
    return lines


def instance_kind(serving: ServingSpec) -> InstanceKind:
    """The instance group's kind: as given, else KIND_GPU for a container that asks for GPUs (Triton then
    places the instances on them and model.py runs ONNX Runtime's CUDA provider), KIND_CPU otherwise.

    >>> from .v1alpha1.common import ComputeResources, InstanceGroup
    >>> str(instance_kind(ServingSpec())), str(instance_kind(ServingSpec(resources=ComputeResources(gpus=1))))
    ('KIND_CPU', 'KIND_GPU')
    >>> str(instance_kind(ServingSpec(resources=ComputeResources(gpus=1),
    ...                               instance_group=InstanceGroup(kind=InstanceKind.CPU))))
    'KIND_CPU'
    """
    if serving.instance_group.kind is not None:
        return serving.instance_group.kind
    return InstanceKind.GPU if serving.resources.gpus > 0 else InstanceKind.CPU


# Kubernetes quantity suffixes (apimachinery resource.Quantity): decimal SI and binary. A CPU is usually "2" or
# "500m"; the others are valid quantities the CRD's pattern lets through. The kubernetes client's parse_quantity
# is not used here: this module is imported by the trainer and the serving image, where the API layer stays pure.
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
_SUFFIX = {None: 1.0, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
           "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40}


def quantity_value(quantity: str) -> float:
    """A Kubernetes quantity as a number: cores for a CPU, bytes for memory. Raises ValueError on anything else.

    >>> quantity_value("500m"), quantity_value("2"), quantity_value("1.5"), quantity_value("3Gi") / 2**30
    (0.5, 2.0, 1.5, 3.0)
    """
    match = _QUANTITY.match(quantity)
    if not match:
        raise ValueError(f"{quantity!r} is not a Kubernetes quantity")
    return float(match.group(1)) * _SUFFIX[match.group(2)]


# What one CPU instance may need (measured: a static student's python-backend process holds ~0.6 GiB of private
# memory, torch and the tokenizer included, before its batches), and the most instances a default gives.
INSTANCE_MEMORY_BYTES = 2**30
MAX_DEFAULT_INSTANCES = 8
# The tasks whose students runtime auto serves through ONNX Runtime (kubestill_trainer's `serves_onnx`, checked
# equal by a test): small graphs, one batch at a time per instance. Reranking and generation serve torch, whose
# models (a causal LM above all) are too big to copy once per core.
ONNX_SERVED_TASKS = frozenset({Task.CLASSIFICATION, Task.EMBEDDING})
# The same options as the Triton container's environment, for a model.py that predates its config parameters
# (model.py is copied from the artifact, exported by whichever trainer made it): the serving image's
# load_servable takes its defaults from them.
INTRA_OP_THREADS_ENV = "KUBESTILL_INTRA_OP_THREADS"
ALLOW_SPINNING_ENV = "KUBESTILL_ALLOW_SPINNING"


def instance_count(serving: ServingSpec, task: Task | str) -> int:
    """Model instances (ServingSpec.instanceGroup.count): as given; else, for a student served through ONNX
    Runtime (runtime auto, ONNX_SERVED_TASKS) on KIND_CPU, one per `intraOpThreads` (default 1) whole cores of
    resources.cpu, at most one per GiB of resources.memory and MAX_DEFAULT_INSTANCES, at least 1; else 1 (with
    the cores as threads: `intra_op_threads`). Each CPU instance is a python-backend process serving one batch
    at a time, so instances, not threads, are what let a small model use more than one core.

    >>> from .v1alpha1.common import ComputeResources as R, InstanceGroup, OnnxRuntimeOptions, ServingRuntime
    >>> instance_count(ServingSpec(), "embedding"), instance_count(ServingSpec(resources=R(cpu="2500m")), "embedding")
    (1, 2)
    >>> instance_count(ServingSpec(resources=R(cpu="16", memory="3Gi")), "classification")  # memory bounds it
    3
    >>> instance_count(ServingSpec(resources=R(cpu="64")), "classification")
    8
    >>> instance_count(ServingSpec(resources=R(cpu="8"), onnx_runtime=OnnxRuntimeOptions(intra_op_threads=3)),
    ...                "classification")  # 3 threads each: 2 instances on 8 cores
    2
    >>> instance_count(ServingSpec(resources=R(cpu="4", gpus=1)), "classification")  # KIND_GPU: one per GPU
    1
    >>> instance_count(ServingSpec(resources=R(cpu="4")), "generation")  # served by torch: one
    1
    >>> instance_count(ServingSpec(resources=R(cpu="4"), runtime=ServingRuntime.TORCH), "embedding")
    1
    >>> instance_count(ServingSpec(resources=R(cpu="4"), instance_group=InstanceGroup(count=1)), "embedding")
    1
    """
    if serving.instance_group.count is not None:
        return serving.instance_group.count
    if (instance_kind(serving) != InstanceKind.CPU or not serving.resources.cpu
            or serving.runtime != ServingRuntime.AUTO or Task(task) not in ONNX_SERVED_TASKS):
        return 1
    cores = int(quantity_value(serving.resources.cpu))
    count = min(cores // (serving.onnx_runtime.intra_op_threads or 1), MAX_DEFAULT_INSTANCES)
    if serving.resources.memory:
        count = min(count, int(quantity_value(serving.resources.memory) // INSTANCE_MEMORY_BYTES))
    return max(1, count)


def intra_op_threads(serving: ServingSpec, task: Task | str) -> int:
    """Threads per model instance (ServingSpec.onnxRuntime.intraOpThreads): as given, else the container's CPU
    shared among its instances (`instance_count`, times the GPUs for KIND_GPU: Triton starts `count` on each),
    rounded down, at least 1; 0 (the runtime's own default) without resources.cpu.

    >>> from .v1alpha1.common import ComputeResources as R, InstanceGroup, OnnxRuntimeOptions
    >>> intra_op_threads(ServingSpec(), "embedding")
    0
    >>> intra_op_threads(ServingSpec(resources=R(cpu="500m")), "reranking")
    1
    >>> intra_op_threads(ServingSpec(resources=R(cpu="4"), instance_group=InstanceGroup(count=3)), "embedding")
    1
    >>> intra_op_threads(ServingSpec(resources=R(cpu="4")), "generation")  # one instance: every core
    4
    >>> intra_op_threads(ServingSpec(resources=R(cpu="8", gpus=2), instance_group=InstanceGroup(count=2)),
    ...                  "embedding")  # 2 instances on each of 2 GPUs
    2
    >>> intra_op_threads(ServingSpec(resources=R(cpu="4"), onnx_runtime=OnnxRuntimeOptions(intra_op_threads=3)),
    ...                  "embedding")
    3
    """
    if serving.onnx_runtime.intra_op_threads:
        return serving.onnx_runtime.intra_op_threads
    if not serving.resources.cpu:
        return 0
    instances = instance_count(serving, task)
    if instance_kind(serving) == InstanceKind.GPU:
        instances *= max(1, serving.resources.gpus)
    return max(1, int(quantity_value(serving.resources.cpu) // instances))


def runtime_env(serving: ServingSpec, task: Task | str) -> dict[str, str]:
    """The Triton container's INTRA_OP_THREADS_ENV and ALLOW_SPINNING_ENV (see there), and the tokenizer's
    threads: Hugging Face tokenizers tokenizes a batch on a rayon pool as wide as the cores it sees, beside
    the instances that already use them. With one thread per instance, TOKENIZERS_PARALLELISM=false (measured
    on the real tritonserver, static classification student, 2 instances on 2 cores, wrk at 8 clients, two
    rounds each: 4,629 and 4,921 -> 5,368 and 6,337 req/s, server CPU 0.34 and 0.32 -> 0.29 and 0.24 ms a
    request; at 32 clients within the run-to-run spread); with more, RAYON_NUM_THREADS bounds the pool to the
    instance's threads; with threads 0 (no resources.cpu nor intraOpThreads: the runtime's defaults, the whole
    node) neither.

    >>> from .v1alpha1.common import ComputeResources as R
    >>> runtime_env(ServingSpec(resources=R(cpu="2")), "embedding")  # doctest: +NORMALIZE_WHITESPACE
    {'KUBESTILL_INTRA_OP_THREADS': '1', 'KUBESTILL_ALLOW_SPINNING': '0', 'TOKENIZERS_PARALLELISM': 'false'}
    >>> runtime_env(ServingSpec(resources=R(cpu="4")), "reranking")  # one torch instance, 4 threads
    {'KUBESTILL_INTRA_OP_THREADS': '4', 'KUBESTILL_ALLOW_SPINNING': '0', 'RAYON_NUM_THREADS': '4'}
    >>> runtime_env(ServingSpec(), "embedding")
    {'KUBESTILL_INTRA_OP_THREADS': '0', 'KUBESTILL_ALLOW_SPINNING': '0'}
    """
    threads = intra_op_threads(serving, task)
    env = {INTRA_OP_THREADS_ENV: str(threads), ALLOW_SPINNING_ENV: "1" if serving.onnx_runtime.allow_spinning else "0"}
    if threads == 1:
        env["TOKENIZERS_PARALLELISM"] = "false"
    elif threads > 1:
        env["RAYON_NUM_THREADS"] = str(threads)
    return env


def render_config_pbtxt(
    model_name: str,
    task: Task | str,
    serving: ServingSpec,
    artifact_dir: str,
    labels: Sequence[str] = (),
) -> str:
    """config.pbtxt for a student served by the python backend.

    `artifact_dir` is where the exported model lives inside the Triton container (the `artifact_dir`
    parameter model.py reads); `runtime` (ServingSpec.runtime) says whether model.py may run the artifact's
    model.onnx with ONNX Runtime (auto) or must run the torch model (torch); `labels` (classification) are
    published as a JSON `labels` parameter so a client, or a Triton teacher of a later job, knows the class
    order of PROBABILITIES. `intra_op_threads` and `allow_spinning` (ServingSpec.onnxRuntime, threads resolved
    by `intra_op_threads`) set the runtime's CPU threads.
    """
    tensors = TENSORS[Task(task)]
    lines = [
        f"name: {_quote(model_name)}",
        'backend: "python"',
        f"max_batch_size: {serving.max_batch_size}",
        *_tensor_block("input", tensors.inputs),
        *_tensor_block("output", tensors.outputs),
        f"instance_group [ {{ kind: {instance_kind(serving)} count: {instance_count(serving, task)} }} ]",
    ]
    batching = serving.dynamic_batching
    if batching.enabled:
        preferred = ""
        if batching.preferred_batch_sizes:
            preferred = f" preferred_batch_size: [ {', '.join(str(b) for b in batching.preferred_batch_sizes)} ]"
        lines.append(
            f"dynamic_batching {{{preferred} max_queue_delay_microseconds: "
            f"{batching.max_queue_delay_microseconds} }}"
        )
    env = runtime_env(serving, task)
    params = {"artifact_dir": artifact_dir, "task": str(Task(task)), "runtime": str(serving.runtime),
              "intra_op_threads": env[INTRA_OP_THREADS_ENV], "allow_spinning": env[ALLOW_SPINNING_ENV]}
    if labels:
        params["labels"] = json.dumps(list(labels))
    for key, value in params.items():
        lines.append(f"parameters {{ key: {_quote(key)} value: {{ string_value: {_quote(value)} }} }}")
    return "\n".join(lines) + "\n"


# --- refusing to serve --------------------------------------------------------------------------------------
# model.py checks what the StudentModel says against the artifact before loading it. A refusal ends the
# tritonserver container (it exits when a model fails to load) with a `LoadFailure` in its termination log,
# which the kubelet copies into the Pod's status and the operator into the StudentModel's Ready condition.

LABELS_MISMATCH = "LabelsMismatch"
MODEL_LOAD_FAILED = "ModelLoadFailed"
_FAILURE = re.compile(r"([A-Z][A-Za-z]{2,63}): (.+)", re.DOTALL)


@dataclass(frozen=True)
class LoadFailure:
    """Why model.py refused to load, as `Reason: message` on one line (the termination-log text)."""

    reason: str
    message: str

    def to_text(self) -> str:
        return f"{self.reason}: {self.message}"

    @classmethod
    def from_text(cls, text: str) -> LoadFailure | None:
        """The failure model.py wrote, or None for any other text (e.g. a log tail)."""
        match = _FAILURE.fullmatch(text.strip())
        return cls(match[1], match[2]) if match else None


def labels_mismatch(given: Sequence[str], artifact: Sequence[str] | None) -> str | None:
    """Why the `labels` parameter (StudentModel spec.labels) cannot be served with an artifact whose
    kubestill.json lists `artifact` (the order of its PROBABILITIES), or None when it can. Empty `given`
    always can: the artifact's own order is served (LABEL) and no order is published in the config.

    >>> labels_mismatch(["a", "b"], ["a", "b"]) is None and labels_mismatch([], ["b", "a"]) is None
    True
    >>> labels_mismatch(["b", "a"], ["a", "b"])[:70]
    "StudentModel spec.labels ['b', 'a'] are not the artifact's class order"
    """
    given = list(given)
    if not given or (artifact is not None and given == list(artifact)):
        return None
    if artifact is None:
        return (f"StudentModel spec.labels {given}: the artifact lists no classes (kubestill.json has no "
                '"labels"); leave spec.labels empty')
    artifact = list(artifact)
    how = ("the same classes in another order" if sorted(given) == sorted(artifact) else
           f"classes differ: only in spec.labels {sorted(set(given) - set(artifact))}, only in the artifact "
           f"{sorted(set(artifact) - set(given))}")
    return (f"StudentModel spec.labels {given} are not the artifact's class order {artifact} (kubestill.json "
            f'"labels", the order of PROBABILITIES): {how}. List them in the artifact\'s order, or leave '
            "spec.labels empty to serve the artifact's own")
