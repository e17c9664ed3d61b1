"""A teacher that is a model directory on local disk (file://, pvc://, pkg://), run in-process."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..outputs import Array
from ..tasks.base import Row, TaskModel
from ..tasks.teacher import ClassScores, Teacher


class LocalTeacher(Teacher):
    kind = "local model"

    def __init__(self, path: Path, model: TaskModel, max_length: int, device: str = "cpu") -> None:
        self.path = path
        self.model = model.to(device).eval()
        self.max_length = max_length
        self.device = device

    @property
    def local_dir(self) -> Path:
        return self.path

    @torch.no_grad()
    def _forward(self, texts: Sequence[str]) -> tuple[Array | None, Array | None]:
        rows = [Row(str(i), t) for i, t in enumerate(texts)]
        feats = {k: v.to(self.device) for k, v in self.model.encode(rows, self.max_length).items()}
        out = self.model(feats)
        logits = None if out.logits is None else out.logits.float().cpu().numpy()
        emb = None if out.embedding is None else out.embedding.float().cpu().numpy()
        return logits, emb

    def classify(self, texts: Sequence[str]) -> ClassScores:
        logits, _ = self._forward(texts)
        labels = getattr(self.model, "labels", None)
        if logits is None or labels is None:
            return super().classify(texts)
        return ClassScores(logits=logits.astype(np.float32), labels=list(labels))

    def embed(self, texts: Sequence[str]) -> Array:
        _, emb = self._forward(texts)
        if emb is None:
            return super().embed(texts)
        return emb.astype(np.float32)
