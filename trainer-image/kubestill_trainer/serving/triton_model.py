"""Triton python-backend model for any kubestill student (copied to <repo>/<name>/1/model.py).

The `artifact_dir` parameter of config.pbtxt names the exported model directory; its kubestill.json says
which task it is. All requests of one execute() call are answered as one batch. The `runtime` parameter
(StudentModel spec.serving.runtime): auto runs the artifact's model.onnx with ONNX Runtime where the task
serves from it (also when the parameter is absent), torch always runs the torch model. A KIND_GPU instance
runs it on its GPU (ONNX Runtime's CUDA provider, or torch on CUDA), and refuses to load where it cannot.

A `labels` parameter (StudentModel spec.labels, published for clients and Triton teachers as the class order
of PROBABILITIES) must be the artifact's own order (kubestill.json "labels"): otherwise initialize() refuses
before loading anything, and leaves the reason in the container's termination log for the operator.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by Triton's python backend

from kubestill.api.triton import LABELS_MISMATCH, MODEL_CARD, MODEL_LOAD_FAILED, TENSORS, LoadFailure, labels_mismatch
from kubestill_trainer.termination import report_failure


def check_labels(params: dict[str, str], artifact_dir: Path) -> None:
    """Refuse a `labels` parameter that is not the artifact's class order (see the module docstring)."""
    given = json.loads(params["labels"]) if params.get("labels") else []
    card_file = artifact_dir / MODEL_CARD
    card = json.loads(card_file.read_text()) if card_file.exists() else {}
    problem = labels_mismatch([str(x) for x in given], card.get("labels"))
    if problem:
        report_failure(LoadFailure(LABELS_MISMATCH, problem).to_text())
        raise ValueError(problem)


def instance_device(args: dict[str, Any]) -> str:
    """Where Triton placed this instance: "cuda:<id>" for a KIND_GPU instance group, "cpu" otherwise (the
    python backend's `model_instance_kind` and `model_instance_device_id` arguments)."""
    if str(args.get("model_instance_kind", "CPU")).upper() == "GPU":
        return f"cuda:{int(args.get('model_instance_device_id') or 0)}"
    return "cpu"


def cpu_options(params: dict[str, str], load: Callable[..., Any]) -> dict[str, Any]:
    """The `intra_op_threads` and `allow_spinning` parameters (ServingSpec.onnxRuntime) as `load`'s keyword
    arguments; none where `load` (an older image's load_servable) has no such parameters, or the config.pbtxt
    (rendered by an older operator) does not give them.

    >>> def load(path, runtime="auto", device="cpu", threads=0, spinning=True): ...
    >>> cpu_options({"intra_op_threads": "2", "allow_spinning": "0"}, load)
    {'threads': 2, 'spinning': False}
    >>> cpu_options({"intra_op_threads": "2"}, lambda path, runtime: None), cpu_options({}, load)
    ({}, {})
    """
    accepted = inspect.signature(load).parameters
    out: dict[str, Any] = {}
    if params.get("intra_op_threads") and "threads" in accepted:
        out["threads"] = int(params["intra_op_threads"])
    if params.get("allow_spinning") and "spinning" in accepted:
        out["spinning"] = params["allow_spinning"] == "1"
    return out


def describe(servable: Any) -> str:
    """What runs the model, for the log: runtime, graph, device and CPU threads (an older image's Servable
    has fewer fields).

    >>> from types import SimpleNamespace as S
    >>> describe(S(runtime="onnxruntime", graph="model.onnx", device="cpu", threads=2, spinning=False))
    'onnxruntime (model.onnx) on cpu, intra-op threads 2, spinning off'
    >>> describe(S(runtime="torch", graph=None, device="cuda:0", threads=0, spinning=None))
    'torch on cuda:0, intra-op threads: the default'
    """
    graph = getattr(servable, "graph", None)
    threads = getattr(servable, "threads", 0)
    spinning = getattr(servable, "spinning", None)
    parts = [f"{servable.runtime}{f' ({graph})' if graph else ''} on {getattr(servable, 'device', 'cpu')}",
             f"intra-op threads {threads}" if threads else "intra-op threads: the default"]
    if spinning is not None:
        parts.append(f"spinning {'on' if spinning else 'off'}")
    return ", ".join(parts)


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        if not params.get("artifact_dir"):
            raise ValueError("config.pbtxt needs parameters { key: \"artifact_dir\" ... }")
        check_labels(params, Path(params["artifact_dir"]))
        try:
            # Imported here: torch and transformers take seconds, and a refusal above needs neither.
            from kubestill_trainer.serving.loader import load_servable

            device = instance_device(args)
            # The device only when it is a GPU, the CPU options only where load_servable takes them: an artifact
            # exported by this trainer stays servable on CPU by an older serving image.
            extra = (device,) if device != "cpu" else ()
            self.servable = load_servable(Path(params["artifact_dir"]), params.get("runtime") or "auto", *extra,
                                          **cpu_options(params, load_servable))
        except Exception as err:  # any reason the model cannot load reaches the StudentModel, not only the log
            report_failure(LoadFailure(MODEL_LOAD_FAILED, f"{params['artifact_dir']}: {type(err).__name__}: "
                                                          f"{err}").to_text())
            raise
        print(f"kubestill: {params['artifact_dir']} served by {describe(self.servable)}", flush=True)
        tensors = TENSORS[self.servable.task.task]
        self.inputs = [t.name for t in tensors.inputs]
        self.outputs = [t.name for t in tensors.outputs]

    def execute(self, requests: list[Any]) -> list[Any]:
        arrays: dict[str, list[np.ndarray[Any, Any]]] = {name: [] for name in self.inputs}
        sizes = []
        for request in requests:
            for name in self.inputs:
                arrays[name].append(pb_utils.get_input_tensor_by_name(request, name).as_numpy())
            sizes.append(len(arrays[self.inputs[0]][-1]))
        batch = {name: np.concatenate(parts) for name, parts in arrays.items()}
        result = self.servable.answer(batch)
        responses = []
        start = 0
        for n in sizes:
            tensors = [pb_utils.Tensor(name, result[name][start : start + n]) for name in self.outputs]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += n
        return responses

    def finalize(self) -> None:
        del self.servable
