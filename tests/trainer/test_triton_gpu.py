"""A KIND_GPU Triton instance runs the student on its GPU: model.py reads the instance's kind and device from
the python backend's arguments, ONNX Runtime gets the CUDA provider first (the CPU one behind it), and an
onnxruntime without CUDA refuses instead of serving on the CPU."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from kubestill_trainer.tasks.onnx_model import execution_providers

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


@pytest.mark.parametrize(("device", "available", "expected"), [
    ("cpu", [CPU], [CPU]),
    ("cpu", [CUDA, CPU], [CPU]),
    ("cuda:0", [CUDA, CPU], [(CUDA, {"device_id": 0}), CPU]),
    ("cuda:3", ["TensorrtExecutionProvider", CUDA, CPU], [(CUDA, {"device_id": 3}), CPU]),
])
def test_execution_providers(device: str, available: list[str], expected: list[Any]) -> None:
    assert execution_providers(device, available) == expected


def test_gpu_instance_without_cuda_provider_refuses() -> None:
    with pytest.raises(RuntimeError, match="onnxruntime-gpu"):
        execution_providers("cuda:0", ["AzureExecutionProvider", CPU])
    with pytest.raises(ValueError, match="cpu or cuda"):
        execution_providers("tpu:0", [CPU])


@pytest.mark.parametrize(("args", "device"), [
    ({}, "cpu"),
    ({"model_instance_kind": "CPU", "model_instance_device_id": "0"}, "cpu"),
    ({"model_instance_kind": "GPU", "model_instance_device_id": "2"}, "cuda:2"),
])
def test_instance_device(monkeypatch: pytest.MonkeyPatch, args: dict[str, str], device: str) -> None:
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", types.ModuleType("triton_python_backend_utils"))
    from kubestill_trainer.serving.triton_model import instance_device

    assert instance_device(args) == device
