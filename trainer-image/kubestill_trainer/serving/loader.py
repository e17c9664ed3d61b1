"""Load an exported model directory (export/model or export/int8) together with the task that calls it.

The directory's kubestill.json carries the job spec the model was trained with, so serving needs nothing
else: `load_for_serving(path)` -> (task, model) and `task.serve(model, inputs)` answers Triton requests.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from kubestill.api.v1alpha1 import DistillationJobSpec

from ..tasks import task_class
from ..tasks.base import MODEL_CARD, DistillTask, TaskModel

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


def load_for_serving(path: Path, device: str = "cpu") -> tuple[DistillTask, TaskModel]:
    card = json.loads((path / MODEL_CARD).read_text())
    if "spec" not in card:
        raise ValueError(f"{path / MODEL_CARD} has no spec: export the model with the kubestill trainer")
    spec = DistillationJobSpec.model_validate(card["spec"])
    task = task_class(spec.task)(spec)
    if card.get("quantization") == INT8:
        model = quantize_int8(task.load_model(path))  # a skeleton: the int8 weights are loaded next
        model.load_state_dict(torch.load(path / INT8_WEIGHTS, map_location="cpu", weights_only=False))
        return task, model.eval()
    return task, task.load_model(path).to(device).eval()
