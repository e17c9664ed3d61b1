"""sequence-kd: Kim & Rush (2016) sequence-level distillation: cross-entropy of the student on the
teacher's generated text, i.e. the student is fine-tuned on what the teacher said rather than on gold
replies. Needs no logits from the teacher (works with any teacher that returns text, e.g. an API).

    loss = mean over response positions of -log p_student(teacher_token_t | prompt, teacher_tokens_<t)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kubestill.api.v1alpha1.distillationjob import LossName

from ..outputs import LossInputs, require
from .extras import TOKEN_IDS, find_extra
from .registry import DistillLoss, register


def sequence_kd(student_logits: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """Mean CE of student logits [B, T, V] vs the teacher's response tokens [B, T] (-100 at padding)."""
    if student_logits.shape[:2] != token_ids.shape:
        raise ValueError(f"sequence-kd: student logits {tuple(student_logits.shape)} do not line up with the "
                         f"teacher tokens {tuple(token_ids.shape)}")
    vocab = student_logits.shape[-1]
    return F.cross_entropy(student_logits.reshape(-1, vocab), token_ids.reshape(-1).long(), ignore_index=-100)


@register(LossName.SEQUENCE_KD)
class SequenceKD(DistillLoss):
    def forward(self, inputs: LossInputs) -> torch.Tensor:
        tokens = find_extra(inputs, TOKEN_IDS)
        return sequence_kd(
            require(inputs.student.logits, "student token logits [B, T, V]", self.name),
            require(tokens if tokens is not None else inputs.labels, "the teacher's token ids", self.name),
        )
