"""infonce: in-batch contrastive distillation. Student embedding i must be closer (cosine) to teacher
embedding i than to the other teacher embeddings of the batch (cross-entropy over scale x cosines).

scale = `scale`, else 1 / `temperature`, else 20 (sentence-transformers' MultipleNegativesRankingLoss).
Unlike the regression losses its minimum is not zero: identical student and teacher batches give a small
value that tends to zero only as the scale grows (the property the tests check is that aligned batches
score lower than shuffled ones). Matryoshka prefixes are averaged like the other embedding losses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kubestill.api.v1alpha1.distillationjob import LossName

from ..outputs import LossInputs, require
from .matryoshka import over_dims
from .registry import DistillLoss, register

DEFAULT_SCALE = 20.0


def info_nce(student: torch.Tensor, teacher: torch.Tensor, scale: float = DEFAULT_SCALE) -> torch.Tensor:
    """Cross-entropy of [B, B] scaled cosine similarities with the diagonal as the target."""
    s = F.normalize(student, dim=-1)
    t = F.normalize(teacher.to(student.dtype), dim=-1)
    logits = scale * s @ t.T
    target = torch.arange(s.shape[0], device=s.device)
    return F.cross_entropy(logits, target)


def infonce(
    student: torch.Tensor, teacher: torch.Tensor, scale: float = DEFAULT_SCALE, dims: list[int] | None = None
) -> torch.Tensor:
    if student.shape != teacher.shape:
        raise ValueError(f"infonce: student {tuple(student.shape)} vs teacher {tuple(teacher.shape)}; "
                         "set outputDim to the teacher's width")
    return over_dims(lambda a, b: info_nce(a, b, scale), student, teacher, dims or [])


@register(LossName.INFONCE)
class InfoNCE(DistillLoss):
    def forward(self, inputs: LossInputs) -> torch.Tensor:
        scale = self.term.scale or (1.0 / self.term.temperature if self.term.temperature else DEFAULT_SCALE)
        return infonce(
            require(inputs.student.embedding, "student embeddings", self.name),
            require(inputs.teacher.embedding, "teacher embeddings", self.name),
            scale,
            self.term.matryoshka_dims,
        )
