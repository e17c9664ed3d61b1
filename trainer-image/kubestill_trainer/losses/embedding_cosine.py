"""embedding-cosine: 1 - cosine(student, teacher) per row, batch mean, over the full vector and each
Matryoshka prefix. Insensitive to the embedding's norm (use embedding-mse to match norms too)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kubestill.api.v1alpha1.distillationjob import LossName

from ..outputs import LossInputs, require
from .matryoshka import over_dims
from .registry import DistillLoss, register


def cosine_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return (1.0 - F.cosine_similarity(student, teacher.to(student.dtype), dim=-1)).mean()


def embedding_cosine(
    student: torch.Tensor, teacher: torch.Tensor, dims: list[int] | None = None
) -> torch.Tensor:
    if student.shape != teacher.shape:
        raise ValueError(f"embedding-cosine: student {tuple(student.shape)} vs teacher "
                         f"{tuple(teacher.shape)}; set outputDim to the teacher's width")
    return over_dims(cosine_distance, student, teacher, dims or [])


@register(LossName.EMBEDDING_COSINE)
class EmbeddingCosine(DistillLoss):
    def forward(self, inputs: LossInputs) -> torch.Tensor:
        return embedding_cosine(
            require(inputs.student.embedding, "student embeddings", self.name),
            require(inputs.teacher.embedding, "teacher embeddings", self.name),
            self.term.matryoshka_dims,
        )
