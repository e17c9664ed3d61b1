"""A teacher served by Triton Inference Server, called over HTTP with tritonclient.

Tensor names follow `kubestill.api.triton` (a kubestill student served by Triton can teach the next one).
Classification needs the class names in column order: they come from the model config's `labels`
parameter (JSON list; `render_config_pbtxt` writes it); without it the class order is unknown: an error.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from kubestill.api.triton import TENSORS
from kubestill.api.v1alpha1.common import Task
from kubestill.api.v1alpha1.distillationjob import TritonTeacher as TritonTeacherSpec

from ..outputs import Array
from ..tasks.teacher import ClassScores, Teacher, TeacherError


class TritonTeacher(Teacher):
    kind = "Triton"

    def __init__(self, spec: TritonTeacherSpec, timeout_s: float = 120.0) -> None:
        import tritonclient.http as httpclient

        self.spec = spec
        url = spec.url.removeprefix("http://").removeprefix("https://")
        self.client = httpclient.InferenceServerClient(
            url=url, ssl=spec.url.startswith("https://"), connection_timeout=timeout_s, network_timeout=timeout_s
        )
        self._labels: list[str] | None = None
        self._config: dict[str, Any] | None = None

    def _model_config(self) -> dict[str, Any]:
        if self._config is None:
            try:
                self._config = dict(self.client.get_model_config(self.spec.model_name, self.spec.model_version))
            except Exception as e:
                raise TeacherError(f"Triton teacher {self.spec.url}: cannot read the config of model "
                                   f"{self.spec.model_name}: {e}") from None
        return self._config

    def _infer(self, inputs: dict[str, list[str]], outputs: Sequence[str]) -> dict[str, Array]:
        """Split the batch to the server's max_batch_size and join the answers."""
        limit = int(self._model_config().get("max_batch_size") or 0) or len(next(iter(inputs.values())))
        n = len(next(iter(inputs.values())))
        parts = [self._infer_once({k: v[i : i + limit] for k, v in inputs.items()}, outputs)
                 for i in range(0, n, limit)]
        return {o: np.concatenate([p[o] for p in parts]) for o in outputs}

    def _infer_once(self, inputs: dict[str, list[str]], outputs: Sequence[str]) -> dict[str, Array]:
        import tritonclient.http as httpclient
        from tritonclient.utils import InferenceServerException

        tensors = []
        for name, values in inputs.items():
            arr = np.array([[v.encode()] for v in values], dtype=np.object_)
            t = httpclient.InferInput(name, list(arr.shape), "BYTES")
            t.set_data_from_numpy(arr)
            tensors.append(t)
        requested = [httpclient.InferRequestedOutput(o) for o in outputs]
        try:
            result = self.client.infer(self.spec.model_name, tensors, model_version=self.spec.model_version,
                                       outputs=requested)
        except InferenceServerException as e:
            raise TeacherError(f"Triton teacher {self.spec.url} model {self.spec.model_name}: {e}") from None
        return {o: result.as_numpy(o) for o in outputs}

    def _config_labels(self) -> list[str] | None:
        raw = self._model_config().get("parameters", {}).get("labels", {}).get("string_value")
        return [str(x) for x in json.loads(raw)] if raw else None

    def classify(self, texts: Sequence[str]) -> ClassScores:
        spec = TENSORS[Task.CLASSIFICATION]
        out = self._infer({spec.inputs[0].name: list(texts)}, [o.name for o in spec.outputs])
        probs = np.asarray(out["PROBABILITIES"], dtype=np.float32)
        if self._labels is None:
            self._labels = self._config_labels()
        if self._labels is None:
            raise TeacherError(f"Triton teacher {self.spec.model_name}: its config has no 'labels' parameter, "
                               "so the class order of PROBABILITIES is unknown")
        if probs.shape[-1] != len(self._labels):
            raise TeacherError(f"Triton teacher returned {probs.shape[-1]} probabilities for "
                               f"{len(self._labels)} labels")
        invalid: list[str | None] = [
            None if np.isfinite(p).all() and abs(float(p.sum()) - 1) < 1e-3 else "probabilities do not sum to 1"
            for p in probs
        ]
        return ClassScores(logits=np.log(np.clip(probs, 1e-12, None)), labels=self._labels, invalid=invalid)

    def embed(self, texts: Sequence[str]) -> Array:
        spec = TENSORS[Task.EMBEDDING]
        out = self._infer({spec.inputs[0].name: list(texts)}, ["EMBEDDING"])
        return np.asarray(out["EMBEDDING"], dtype=np.float32)

    def score(self, queries: Sequence[str], passages: Sequence[str]) -> Array:
        out = self._infer({"QUERY": list(queries), "PASSAGE": list(passages)}, ["SCORE"])
        return np.asarray(out["SCORE"], dtype=np.float32).reshape(-1)

    def close(self) -> None:
        self.client.close()
