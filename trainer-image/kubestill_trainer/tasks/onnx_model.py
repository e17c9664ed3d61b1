"""A model directory's model.onnx run by ONNX Runtime: what Triton's python backend serves instead of the torch
model when the artifact has one (ServingSpec.runtime auto).

Texts are tokenised once per batch by the directory's own tokenizer, with the arguments `encoder.tokenize`
gives the torch model (padding to the longest row, truncation at the job's maxSeqLength), straight to numpy;
the graph's outputs come back as numpy. No torch on this path.
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


class OnnxModel:
    """`run(texts)` -> {output name: array with the batch as leading dimension}.

    `path`: a model directory holding model.onnx, its tokenizer and kubestill.json (whose "labels" are the
    class order of a classifier's LOGITS); `max_length`: tokens kept per text (the job's maxSeqLength).
    Raises FileNotFoundError without model.onnx.
    """

    def __init__(self, path: Path, max_length: int, threads: int = 0) -> None:
        import onnxruntime as ort

        if not (path / ONNX_FILE).exists():
            raise FileNotFoundError(f"{path / ONNX_FILE} is missing")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: ONNX Runtime's default, one per physical core
        self.session = ort.InferenceSession(str(path / ONNX_FILE), options, providers=["CPUExecutionProvider"])
        self.tokenizer = load_tokenizer(path)
        self.max_length = max_length
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        card: dict[str, Any] = json.loads((path / MODEL_CARD).read_text()) if (path / MODEL_CARD).exists() else {}
        self.labels: list[str] = list(card.get("labels") or [])

    def run(self, texts: Sequence[str]) -> dict[str, np.ndarray[Any, Any]]:
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="np")
        feeds = {name: np.asarray(enc[name], dtype=np.int64) for name in self.input_names}
        return dict(zip(self.output_names, self.session.run(self.output_names, feeds), strict=True))
