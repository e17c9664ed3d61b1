"""hidden-mse: the student's hidden states imitate the teacher's (TinyBERT, MiniLM-style intermediate KD).

Student layer i (1-based) is matched to teacher layer `layerMap[i-1]` (default evenly spaced); the
embedding outputs (index 0) are matched too. When the widths differ, one learned linear projection maps
student states to the teacher's width (trained with the student, dropped at export). Padding is masked.
"""

from __future__ import annotations

import torch
from torch import nn

from kubestill.api.v1alpha1.distillationjob import LossName, LossTerm

from ..outputs import LossInputs, require
from .layers import resolve_layer_map
from .registry import DistillLoss, LossDims, register


def masked_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error of [B, S, D] states over the real tokens of [B, S] `mask` (all when None)."""
    sq = (student - teacher.to(student.dtype)).pow(2).mean(dim=-1)
    if mask is None:
        return sq.mean()
    m = mask.to(sq.dtype)
    return (sq * m).sum() / m.sum().clamp_min(1.0)


def hidden_mse(
    student: tuple[torch.Tensor, ...],
    teacher: tuple[torch.Tensor, ...],
    layer_map: list[int],
    mask: torch.Tensor | None = None,
    project: nn.Module | None = None,
) -> torch.Tensor:
    """Average masked MSE over the embedding output and each mapped layer pair."""
    pairs = [(0, 0), *((i + 1, t) for i, t in enumerate(layer_map))]
    total = student[0].new_zeros(())
    for s_idx, t_idx in pairs:
        s = student[s_idx] if project is None else project(student[s_idx])
        total = total + masked_mse(s, teacher[t_idx], mask)
    return total / len(pairs)


@register(LossName.HIDDEN_MSE)
class HiddenMSE(DistillLoss):
    needs_teacher = frozenset({"hidden_states"})

    def __init__(self, term: LossTerm, dims: LossDims) -> None:
        super().__init__(term, dims)
        s, t = dims.student_hidden, dims.teacher_hidden
        self.project: nn.Module | None = nn.Linear(s, t) if s and t and s != t else None

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        student = require(inputs.student.hidden_states, "student hidden states", self.name)
        teacher = require(inputs.teacher.hidden_states, "teacher hidden states", self.name)
        layer_map = resolve_layer_map(self.term.layer_map, len(student) - 1, len(teacher) - 1, self.name)
        return hidden_mse(student, teacher, layer_map, inputs.attention_mask, self.project)
