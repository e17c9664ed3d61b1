"""listwise-kl: the student's softmax over a query's candidates matches the teacher's (ListNet-style KD,
as in RankGPT / RankT5 distillation).

    loss = T^2 * mean_q KL(softmax(t_q / T) || softmax(s_q / T))

over the real candidates of each query (padded candidates get probability zero on both sides). Like
logit-kl, the T^2 factor keeps gradients on the same scale when T changes. Zero for identical scores, and
for scores that differ by a per-query constant (softmax is shift-invariant).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kubestill.api.v1alpha1.distillationjob import LossName

from ..outputs import LossInputs, require
from .extras import candidate_mask
from .registry import DistillLoss, register


def listwise_kl(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Batch-mean KL of [B, G] teacher vs student candidate distributions at temperature T, times T^2."""
    if student.shape != teacher.shape or student.dim() != 2:
        raise ValueError(f"listwise-kl: scores must both be [B, G], got {tuple(student.shape)} and "
                         f"{tuple(teacher.shape)}")
    t = temperature
    s_scaled, t_scaled = student / t, teacher.to(student.dtype) / t
    if mask is not None:
        pad = ~mask.to(torch.bool)
        # A large negative rather than -inf: -inf - -inf would give NaN in the KL terms of padded slots.
        s_scaled = s_scaled.masked_fill(pad, -1e4)
        t_scaled = t_scaled.masked_fill(pad, -1e4)
    s_log = F.log_softmax(s_scaled, dim=-1)
    t_log = F.log_softmax(t_scaled, dim=-1)
    return F.kl_div(s_log, t_log, reduction="batchmean", log_target=True) * (t * t)


@register(LossName.LISTWISE_KL)
class ListwiseKL(DistillLoss):
    def forward(self, inputs: LossInputs) -> torch.Tensor:
        return listwise_kl(
            require(inputs.student.scores, "student scores [B, G]", self.name),
            require(inputs.teacher.scores, "teacher scores [B, G]", self.name),
            self.term.temperature or 1.0,
            candidate_mask(inputs),
        )
