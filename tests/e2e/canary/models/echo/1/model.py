"""A tiny Triton python-backend model for the canary tests: answers LABEL = "ok:<text>", and can be told to
fail or slow down through a control file, so Prometheus sees real nv_inference_request_failure and latency.

The control file (config parameter `control_file`) holds one word: `ok`, `fail`, `slow:<milliseconds>`, `wrong`
(answers LABEL = "wrong:<text>": a model that serves fine but disagrees with the baseline on every row), or
`wrong:<fraction>` (wrong on that fraction of distinct texts, e.g. `wrong:0.1`: chosen by a CRC-32 of the text, so
a given text always gets the same answer, as a deterministic model's would).
It is re-read at most every 100 ms, so flipping it changes behaviour within a fraction of a second.
"""

from __future__ import annotations

import json
import time
import zlib
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by Triton's python backend at run time


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        params = config.get("parameters", {})
        self.control_file = params.get("control_file", {}).get("string_value", "")
        self.mode = "ok"
        self.read_at = 0.0

    def _current_mode(self) -> str:
        now = time.monotonic()
        if self.control_file and now - self.read_at > 0.1:
            self.read_at = now
            try:
                with open(self.control_file) as f:
                    self.mode = f.read().strip() or "ok"
            except OSError:
                self.mode = "ok"
        return self.mode

    def execute(self, requests: list[Any]) -> list[Any]:
        mode = self._current_mode()
        if mode.startswith("slow:"):
            time.sleep(float(mode.split(":", 1)[1]) / 1000.0)
        if mode == "fail":
            # Raising (rather than returning error responses) is what Triton counts in
            # nv_inference_request_failure{reason="BACKEND"}.
            raise pb_utils.TritonModelException("injected failure")
        responses = []
        for request in requests:
            text = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
            labels = np.array([[_prefix(mode, row[0]) + row[0]] for row in text], dtype=np.object_)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("LABEL", labels)]))
        return responses


def _prefix(mode: str, text: bytes) -> bytes:
    """b"wrong:" for every text in mode `wrong`, for `fraction` of the texts in mode `wrong:<fraction>`."""
    if mode == "wrong":
        return b"wrong:"
    if mode.startswith("wrong:"):
        # CRC-32 spreads the load generator's "request <n>" over 2**32: at 0.1, 113 of "request 0..999" are wrong.
        return b"wrong:" if zlib.crc32(text) < float(mode.split(":", 1)[1]) * 2**32 else b"ok:"
    return b"ok:"
