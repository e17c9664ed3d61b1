"""cross-entropy: the student's logits against hard labels (gold labels, else the teacher's argmax).

On its own this is training "without KD"; the benches use it as the no-KD baseline.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kubestill.api.v1alpha1.distillationjob import LossName

from ..outputs import LossInputs, require
from .registry import DistillLoss, register


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean CE of [B, C] logits vs [B] class ids (or [..., V] vs [...], -100 ignored)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


@register(LossName.CROSS_ENTROPY)
class CrossEntropy(DistillLoss):
    def forward(self, inputs: LossInputs) -> torch.Tensor:
        return cross_entropy(
            require(inputs.student.logits, "student logits", self.name),
            require(inputs.labels, "hard labels", self.name),
        )
