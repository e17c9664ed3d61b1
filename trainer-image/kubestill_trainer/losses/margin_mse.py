"""margin-mse: Hofstätter et al. (2020) cross-architecture distillation for rerankers.

The student learns the teacher's score *differences* between passages of the same query, not the raw
scores: a bi-encoder's cosines and a cross-encoder's logits live on different scales, but their margins are
comparable. With G candidates per query this uses every pair (i, j):

    loss = mean_{q, i<j} ((s_qi - s_qj) - (t_qi - t_qj))^2

which is the pairwise form of the original positive-minus-negative margin and does not depend on which
candidate comes first. It is invariant to adding a constant to the student's (or teacher's) scores of a
query, zero when the score vectors differ only by such a constant, and ignores padded candidates (mask).
"""

from __future__ import annotations

import torch

from kubestill.api.v1alpha1.distillationjob import LossName

from ..outputs import LossInputs, require
from .extras import candidate_mask
from .registry import DistillLoss, register


def margin_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error of pairwise score margins of [B, G] student and teacher scores.

    `mask` [B, G] marks real candidates (False: padding). Queries with fewer than two real candidates add
    nothing; a batch without any pair gives a zero that still carries the graph (so backward works)."""
    if student.shape != teacher.shape or student.dim() != 2:
        raise ValueError(f"margin-mse: scores must both be [B, G], got {tuple(student.shape)} and "
                         f"{tuple(teacher.shape)}")
    t = teacher.to(student.dtype)
    valid = torch.ones_like(student, dtype=torch.bool) if mask is None else mask.to(torch.bool)
    diff = student - t  # a common per-query shift cancels in the pairwise differences below
    pair = (diff.unsqueeze(2) - diff.unsqueeze(1)) ** 2  # [B, G, G]
    pair_valid = valid.unsqueeze(2) & valid.unsqueeze(1)
    upper = torch.triu(torch.ones_like(pair_valid), diagonal=1)
    pair_valid = pair_valid & upper
    count = pair_valid.sum()
    if count == 0:
        return (student * 0).sum()
    return (pair * pair_valid).sum() / count


@register(LossName.MARGIN_MSE)
class MarginMSE(DistillLoss):
    def forward(self, inputs: LossInputs) -> torch.Tensor:
        return margin_mse(
            require(inputs.student.scores, "student scores [B, G]", self.name),
            require(inputs.teacher.scores, "teacher scores [B, G]", self.name),
            candidate_mask(inputs),
        )
