"""embedding-mse: the student's sentence embedding regresses onto the teacher's (Reimers & Gurevych 2020).

Value: batch mean of the squared L2 distance (= D x per-element MSE, so the scale does not shrink with the
width), averaged over the full vector and each Matryoshka prefix. A width mismatch is fixed by the
student's Dense projection (`outputDim`), which the embedding task adds and exports.
"""

from __future__ import annotations

import torch

from kubestill.api.v1alpha1.distillationjob import LossName

from ..outputs import LossInputs, require
from .matryoshka import over_dims
from .registry import DistillLoss, register


def squared_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return (student - teacher.to(student.dtype)).pow(2).sum(dim=-1).mean()


def embedding_mse(
    student: torch.Tensor, teacher: torch.Tensor, dims: list[int] | None = None
) -> torch.Tensor:
    if student.shape != teacher.shape:
        raise ValueError(f"embedding-mse: student {tuple(student.shape)} vs teacher {tuple(teacher.shape)}; "
                         "set outputDim to the teacher's width")
    return over_dims(squared_distance, student, teacher, dims or [])


@register(LossName.EMBEDDING_MSE)
class EmbeddingMSE(DistillLoss):
    def forward(self, inputs: LossInputs) -> torch.Tensor:
        return embedding_mse(
            require(inputs.student.embedding, "student embeddings", self.name),
            require(inputs.teacher.embedding, "teacher embeddings", self.name),
            self.term.matryoshka_dims,
        )
