"""Triton python-backend model for any kubestill student (copied to <repo>/<name>/1/model.py).

The `artifact_dir` parameter of config.pbtxt names the exported model directory; its kubestill.json says
which task it is. All requests of one execute() call are answered as one batch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by Triton's python backend

from kubestill.api.triton import TENSORS
from kubestill_trainer.serving.loader import load_for_serving


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        if not params.get("artifact_dir"):
            raise ValueError("config.pbtxt needs parameters { key: \"artifact_dir\" ... }")
        self.task, self.model = load_for_serving(Path(params["artifact_dir"]))
        tensors = TENSORS[self.task.task]
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
        result = self.task.serve(self.model, batch)
        responses = []
        start = 0
        for n in sizes:
            tensors = [pb_utils.Tensor(name, result[name][start : start + n]) for name in self.outputs]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += n
        return responses

    def finalize(self) -> None:
        del self.model
