"""attention-mse: the student's attention maps imitate the teacher's (TinyBERT).

Student layer i is matched to teacher layer `layerMap[i-1]` (default evenly spaced). When head counts
differ, both sides are averaged over heads first. Padded query and key positions are masked out.
"""

from __future__ import annotations

import torch

from kubestill.api.v1alpha1.distillationjob import LossName

from ..outputs import LossInputs, require
from .layers import resolve_layer_map
from .registry import DistillLoss, register


def attention_mse(
    student: tuple[torch.Tensor, ...],
    teacher: tuple[torch.Tensor, ...],
    layer_map: list[int],
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean squared error of [B, H, S, S] attention probabilities over mapped layers and real tokens."""
    total = student[0].new_zeros(())
    for s_idx, t_layer in enumerate(layer_map):
        s, t = student[s_idx], teacher[t_layer - 1].to(student[s_idx].dtype)
        if s.shape[1] != t.shape[1]:
            s, t = s.mean(dim=1, keepdim=True), t.mean(dim=1, keepdim=True)
        sq = (s - t).pow(2)
        if mask is None:
            total = total + sq.mean()
            continue
        m = mask.to(sq.dtype)
        pair = (m[:, None, :, None] * m[:, None, None, :]).expand_as(sq)
        total = total + (sq * pair).sum() / pair.sum().clamp_min(1.0)
    return total / len(layer_map)


@register(LossName.ATTENTION_MSE)
class AttentionMSE(DistillLoss):
    needs_teacher = frozenset({"attentions"})

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        student = require(inputs.student.attentions, "student attentions", self.name)
        teacher = require(inputs.teacher.attentions, "teacher attentions", self.name)
        layer_map = resolve_layer_map(self.term.layer_map, len(student), len(teacher), self.name)
        return attention_mse(student, teacher, layer_map, inputs.attention_mask)
