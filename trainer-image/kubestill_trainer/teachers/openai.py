"""A teacher behind an OpenAI-compatible HTTP API (requests).

- embed: POST {base}/embeddings {"model", "input": [...]}.
- classify: POST {base}/chat/completions asking for one of the candidate labels; the answer must be exactly
  one label (case-insensitive), else the row is marked invalid. With `logprobs` the answer's probability is
  its confidence; without, the chosen class gets probability 1 (logit 0, others log 1e-6).
The API key is read from env `KUBESTILL_TEACHER_API_KEY` (fed from the Secret by the operator).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from kubestill.api.names import TEACHER_API_KEY_ENV
from kubestill.api.v1alpha1.distillationjob import OpenAITeacher as OpenAITeacherSpec

from ..outputs import Array
from ..tasks.teacher import ClassScores, Generated, Teacher, TeacherError

API_KEY_ENV = TEACHER_API_KEY_ENV
_FLOOR = math.log(1e-6)


class OpenAITeacher(Teacher):
    kind = "OpenAI-compatible"

    def __init__(self, spec: OpenAITeacherSpec, labels: Sequence[str] = (), timeout_s: float = 120.0) -> None:
        import requests

        self.spec = spec
        self.base = spec.base_url.rstrip("/")
        self.labels = list(labels)
        self.timeout = timeout_s
        self.session = requests.Session()
        key = os.environ.get(API_KEY_ENV)
        if key:
            self.session.headers["Authorization"] = f"Bearer {key}"

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        import requests

        try:
            resp = self.session.post(f"{self.base}/{path}", json=body, timeout=self.timeout)
        except requests.RequestException as e:
            raise TeacherError(f"OpenAI teacher {self.base}/{path}: {e}") from None
        if resp.status_code != 200:
            raise TeacherError(f"OpenAI teacher {self.base}/{path}: HTTP {resp.status_code}: {resp.text[:300]}")
        data: dict[str, Any] = resp.json()
        return data

    def embed(self, texts: Sequence[str]) -> Array:
        data = self._post("embeddings", {"model": self.spec.model, "input": list(texts)})
        items = sorted(data.get("data", []), key=lambda d: int(d.get("index", 0)))
        if len(items) != len(texts):
            raise TeacherError(f"OpenAI teacher returned {len(items)} embeddings for {len(texts)} inputs")
        return np.array([d["embedding"] for d in items], dtype=np.float32)

    def _chat(self, prompt: str, max_tokens: int, logprobs: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.spec.model, "temperature": 0, "max_tokens": max_tokens,
                                "messages": [{"role": "user", "content": prompt}]}
        if logprobs:
            body["logprobs"] = True
        choices = self._post("chat/completions", body).get("choices") or [{}]
        return dict(choices[0])

    def classify(self, texts: Sequence[str]) -> ClassScores:
        if not self.labels:
            raise TeacherError("an OpenAI teacher classifies into the gold labels of the data: set "
                               "data.fields.label so the candidate classes are known")
        index = {name.lower(): i for i, name in enumerate(self.labels)}
        logits = np.full((len(texts), len(self.labels)), _FLOOR, dtype=np.float32)
        invalid: list[str | None] = []
        for row, text in enumerate(texts):
            prompt = (f"Classify the text into exactly one of these labels: {', '.join(self.labels)}.\n"
                      f"Answer with the label only.\n\nText: {text}")
            choice = self._chat(prompt, 16, logprobs=True)
            answer = str((choice.get("message") or {}).get("content") or "").strip().strip(".").lower()
            if answer not in index:
                invalid.append(f"invalid output: {answer[:40]!r} is not a label")
                continue
            tokens = ((choice.get("logprobs") or {}).get("content")) or []
            logp = sum(float(t.get("logprob", 0.0)) for t in tokens) if tokens else 0.0
            logits[row, index[answer]] = logp
            invalid.append(None)
        return ClassScores(logits=logits, labels=self.labels, invalid=invalid)

    def generate(self, prompts: Sequence[str], max_new_tokens: int, top_k: int) -> list[Generated]:
        out = []
        for prompt in prompts:
            choice = self._chat(prompt, max_new_tokens, logprobs=False)
            out.append(Generated(text=str((choice.get("message") or {}).get("content") or "")))
        return out

    def close(self) -> None:
        self.session.close()
