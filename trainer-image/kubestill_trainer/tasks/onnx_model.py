"""A model directory's model.onnx run by ONNX Runtime: what Triton's python backend serves instead of the torch
model when the artifact has one (ServingSpec.runtime auto).

Texts are tokenised once per batch by the directory's own tokenizer, with the arguments `encoder.tokenize`
gives the torch model (padding to the longest row, truncation at the job's maxSeqLength), straight to numpy;
the graph's outputs come back as numpy. No torch on this path.

The graph served is model_int8.onnx when the export stage kept its int8 quantisation (kubestill.json
`onnx.int8.kept`: it agreed with model.onnx on held-out rows, see stages/export_onnx_int8), model.onnx
otherwise. On a GPU instance the CUDA execution provider runs it (`execution_providers`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kubestill.api.triton import MODEL_CARD

from .encoder import load_tokenizer

ONNX_FILE = "model.onnx"
INT8_ONNX_FILE = "model_int8.onnx"
CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
Provider = str | tuple[str, dict[str, Any]]


def execution_providers(device: str, available: Sequence[str]) -> list[Provider]:
    """ONNX Runtime's providers for a Triton instance on `device` ("cpu", or "cuda:<id>" for a KIND_GPU
    instance on GPU <id>), CUDA first with the CPU provider behind it for the ops CUDA lacks. Raises
    RuntimeError for a GPU instance when this onnxruntime has no CUDA provider (the CPU-only `onnxruntime`
    package, not `onnxruntime-gpu`): a GPU asked for and silently not used would pass for GPU serving.

    >>> execution_providers("cpu", ["CUDAExecutionProvider", "CPUExecutionProvider"])
    ['CPUExecutionProvider']
    >>> execution_providers("cuda:1", ["CUDAExecutionProvider", "CPUExecutionProvider"])
    [('CUDAExecutionProvider', {'device_id': 1}), 'CPUExecutionProvider']
    """
    if device == "cpu":
        return [CPU_PROVIDER]
    kind, _, index = device.partition(":")
    if kind != "cuda":
        raise ValueError(f"device {device!r}: expected cpu or cuda:<id>")
    if CUDA_PROVIDER not in available:
        raise RuntimeError(f"a GPU instance ({device}) but this onnxruntime has no {CUDA_PROVIDER} (providers: "
                           f"{', '.join(available)}): serve it with an image that has onnxruntime-gpu")
    return [(CUDA_PROVIDER, {"device_id": int(index or 0)}), CPU_PROVIDER]


def served_graph(card: dict[str, Any]) -> str:
    """The file to serve from a model card: the int8 graph when the export kept it, else the float one.

    >>> served_graph({"onnx": {"int8": {"kept": True, "file": "model_int8.onnx"}}})
    'model_int8.onnx'
    >>> served_graph({"onnx": {"int8": {"kept": False}}}), served_graph({})
    ('model.onnx', 'model.onnx')
    """
    int8 = (card.get("onnx") or {}).get("int8") or {}
    return str(int8.get("file") or INT8_ONNX_FILE) if int8.get("kept") else ONNX_FILE


class OnnxModel:
    """`run(texts)` -> {output name: array with the batch as leading dimension}.

    `path`: a model directory holding model.onnx, its tokenizer and kubestill.json (whose "labels" are the
    class order of a classifier's LOGITS); `max_length`: tokens kept per text (the job's maxSeqLength);
    `graph`: the file to run (default: `served_graph` of the card); `device`: see `execution_providers`;
    `threads`: intra-op threads (0: ONNX Runtime's default); `spinning`: whether idle intra-op threads busy-wait
    (ONNX Runtime's `session.intra_op.allow_spinning`, on by default there). Raises FileNotFoundError without
    the graph, RuntimeError for a GPU device without the CUDA provider.
    """

    def __init__(self, path: Path, max_length: int, threads: int = 0, graph: str | None = None,
                 device: str = "cpu", spinning: bool = True) -> None:
        import onnxruntime as ort

        card: dict[str, Any] = json.loads((path / MODEL_CARD).read_text()) if (path / MODEL_CARD).exists() else {}
        self.graph = graph or served_graph(card)
        if not (path / self.graph).exists():
            raise FileNotFoundError(f"{path / self.graph} is missing")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: ONNX Runtime's default, one per physical core
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        providers = execution_providers(device, ort.get_available_providers())
        self.session = ort.InferenceSession(str(path / self.graph), options, providers=providers)
        self.tokenizer = load_tokenizer(path)
        self.max_length = max_length
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.labels: list[str] = list(card.get("labels") or [])

    def run(self, texts: Sequence[str]) -> dict[str, np.ndarray[Any, Any]]:
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="np")
        feeds = {name: np.asarray(enc[name], dtype=np.int64) for name in self.input_names}
        return dict(zip(self.output_names, self.session.run(self.output_names, feeds), strict=True))
