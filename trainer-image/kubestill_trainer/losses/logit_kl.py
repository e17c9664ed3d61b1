"""logit-kl: Hinton et al. (2015) soft-target distillation on class logits.

loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, labels)

The T^2 factor keeps the soft-target gradients on the same scale as the hard-label term when T changes
(the gradient of the softened KL shrinks as 1/T^2). Defaults: T = 1, alpha = 1 (pure KD; add a
cross-entropy term, or set alpha < 1, to mix in hard labels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kubestill.api.v1alpha1.distillationjob import LossName

from ..outputs import LossInputs, require
from .registry import DistillLoss, register


def logit_kl(
    student: torch.Tensor,
    teacher: torch.Tensor,
    temperature: float = 1.0,
    alpha: float = 1.0,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Batch-mean KD loss on [B, C] logits (or [B, S, V] with [B, S] labels, -100 ignored)."""
    t = temperature
    vocab = student.shape[-1]
    s_log = F.log_softmax(student.reshape(-1, vocab) / t, dim=-1)
    t_log = F.log_softmax(teacher.reshape(-1, vocab).to(student.dtype) / t, dim=-1)
    kd = F.kl_div(s_log, t_log, reduction="batchmean", log_target=True) * (t * t)
    if alpha >= 1.0:
        return kd
    if labels is None:
        raise ValueError("logit-kl with alpha < 1 needs hard labels (gold or the teacher's argmax)")
    ce = F.cross_entropy(student.reshape(-1, vocab), labels.reshape(-1), ignore_index=-100)
    return alpha * kd + (1.0 - alpha) * ce


@register(LossName.LOGIT_KL)
class LogitKL(DistillLoss):
    def forward(self, inputs: LossInputs) -> torch.Tensor:
        return logit_kl(
            require(inputs.student.logits, "student logits", self.name),
            require(inputs.teacher.logits, "teacher logits", self.name),
            temperature=self.term.temperature or 1.0,
            alpha=1.0 if self.term.alpha is None else self.term.alpha,
            labels=inputs.labels,
        )
