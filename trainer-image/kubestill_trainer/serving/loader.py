"""Load an exported model directory (export/model or export/int8) together with the task that calls it.

The directory's kubestill.json carries the job spec the model was trained with, so serving needs nothing
else: `load_for_serving(path)` -> (task, model) and `task.serve(model, inputs)` answers Triton requests;
`load_servable(path, runtime)` picks ONNX Runtime (model.onnx, when the task serves from it) or torch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

from kubestill.api.triton import ALLOW_SPINNING_ENV, INTRA_OP_THREADS_ENV
from kubestill.api.v1alpha1 import DistillationJobSpec
from kubestill.api.v1alpha1.common import ServingRuntime

from ..outputs import Array
from ..tasks import task_class
from ..tasks.base import MODEL_CARD, DistillTask, TaskModel
from ..tasks.onnx_model import ONNX_FILE, OnnxModel

INT8 = "int8-dynamic"
INT8_WEIGHTS = "model_int8.pt"


# Task heads stay in fp32: they are tiny, and a head fitted on standardised features has a weight range
# that int8 cannot hold without wrecking the small weights (measured: agreement with fp32 fell to 0.2).
# Matched by position, not by a bare name: BERT's own feed-forward layers are called "dense" too.
_TOP_LEVEL_FP32 = ("head", "dense")
_LAST_FP32 = ("classifier", "score", "lm_head")


def _keep_fp32(name: str) -> bool:
    return name in _TOP_LEVEL_FP32 or name.rsplit(".", 1)[-1] in _LAST_FP32


def quantize_int8(model: TaskModel) -> TaskModel:
    """Dynamic int8 quantization of the encoder's Linear layers: weights int8 per output channel,
    activations quantized at run time."""
    from torch.ao.quantization import per_channel_dynamic_qconfig

    spec = {name: per_channel_dynamic_qconfig for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and not _keep_fp32(name)}
    quantized: TaskModel = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
        model.cpu().eval(), spec, dtype=torch.qint8
    )
    return quantized


def _task(path: Path) -> tuple[DistillTask, dict[str, object]]:
    card = json.loads((path / MODEL_CARD).read_text())
    if "spec" not in card:
        raise ValueError(f"{path / MODEL_CARD} has no spec: export the model with the kubestill trainer")
    spec = DistillationJobSpec.model_validate(card["spec"])
    return task_class(spec.task)(spec), card


def load_for_serving(path: Path, device: str = "cpu") -> tuple[DistillTask, TaskModel]:
    """The torch model of an exported directory (int8 ones quantized again, then loaded) and its task."""
    task, card = _task(path)
    if card.get("quantization") == INT8:
        model = quantize_int8(task.load_model(path))  # a skeleton: the int8 weights are loaded next
        model.load_state_dict(torch.load(path / INT8_WEIGHTS, map_location="cpu", weights_only=False))
        return task, model.eval()
    return task, task.load_model(path).to(device).eval()


@dataclass(frozen=True)
class Servable:
    """What Triton's model.py calls: `answer(inputs)` answers one batch (`DistillTask.serve`'s contract);
    `runtime` says what runs the model ("onnxruntime" or "torch"), `graph` which ONNX file (model.onnx or
    model_int8.onnx; None for torch), `device` where ("cpu", "cuda:<id>"), `threads` its intra-op CPU threads
    (0: the runtime's default), `spinning` whether ONNX Runtime's idle threads spin (None for torch)."""

    task: DistillTask
    runtime: str
    answer: Callable[[Mapping[str, Array]], dict[str, Array]]
    graph: str | None = None
    device: str = "cpu"
    threads: int = 0
    spinning: bool | None = None


def load_servable(path: Path, runtime: ServingRuntime | str = ServingRuntime.AUTO, device: str = "cpu",
                  threads: int | None = None, spinning: bool | None = None) -> Servable:
    """ONNX Runtime on `path`/model.onnx (or the model_int8.onnx the export kept) when `runtime` is auto, the
    task serves from ONNX and the file is there; the torch model otherwise. `device`: "cpu" or "cuda:<id>"
    (a Triton KIND_GPU instance; ONNX Runtime's CUDA provider, torch on that GPU). `threads`: intra-op CPU
    threads (ONNX Runtime's session, or torch's for the process; 0: the runtime's default); `spinning`: ONNX
    Runtime's `session.intra_op.allow_spinning` (see ServingSpec.onnxRuntime). Either left None comes from
    the Triton container's environment (kubestill.api.triton.runtime_env), else 0 and off. Raises ValueError
    on an unknown runtime or environment value, RuntimeError for a GPU device that the runtime cannot use."""
    if threads is None:
        threads = int(os.environ.get(INTRA_OP_THREADS_ENV) or 0)
    if spinning is None:
        spinning = os.environ.get(ALLOW_SPINNING_ENV, "0") == "1"
    mode = ServingRuntime(runtime)
    task, _ = _task(path)
    if mode == ServingRuntime.AUTO and task.serves_onnx and (path / ONNX_FILE).exists():
        onnx = OnnxModel(path, task.spec.training.max_seq_length, threads=threads, device=device, spinning=spinning)
        return Servable(task, "onnxruntime", partial(task.serve_onnx, onnx), onnx.graph, device, threads, spinning)
    if device != "cpu" and not torch.cuda.is_available():
        raise RuntimeError(f"a GPU instance ({device}) but torch sees no CUDA device")
    if threads:
        torch.set_num_threads(threads)  # per process: one python-backend stub runs one instance
    _, model = load_for_serving(path, device)
    return Servable(task, "torch", partial(task.serve, model), None, device, threads)
