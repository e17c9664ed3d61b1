"""token-kl: token-level distillation of a causal LM from the teacher's stored top-k log-probabilities.

The label stage keeps, per response position, the teacher's k most likely next tokens and their raw
log-probabilities (`labeling.topK`; temperature 1, so T below is the only softening they see), not the
whole vocabulary (49k floats per token for SmolLM2). Both distributions are restricted to those k tokens
and renormalised there ("sparse" KD):

    p_t = softmax(teacher_topk_logprobs / T)            over the k ids
    p_s = softmax(student_logits[topk_ids] / T)         over the same k ids
    loss = T^2 * mean over response positions of KL(p_t || p_s)

With k = vocabulary size this is the full-vocabulary forward KL. The T^2 factor keeps gradient scale
independent of T, as in logit-kl. Zero when the student's logits on the teacher's top-k equal the teacher's
log-probabilities up to a per-position constant; padded positions (mask) are ignored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kubestill.api.v1alpha1.distillationjob import LossName

from ..outputs import LossInputs, require
from .extras import RESPONSE_MASK, TOPK_IDS, TOPK_LOGPROBS, find_extra
from .registry import DistillLoss, register


def token_kl(
    student_logits: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_logprobs: torch.Tensor,
    mask: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Mean KL over masked positions: student logits [B, T, V] vs teacher top-k ids/log-probs [B, T, k]."""
    if student_logits.shape[:2] != topk_ids.shape[:2] or topk_ids.shape != topk_logprobs.shape:
        raise ValueError(f"token-kl: student logits {tuple(student_logits.shape)} do not line up with the "
                         f"teacher's top-k {tuple(topk_ids.shape)} / {tuple(topk_logprobs.shape)}")
    t = temperature
    s_topk = torch.gather(student_logits, -1, topk_ids.long().clamp_min(0))
    s_log = F.log_softmax(s_topk / t, dim=-1)
    t_log = F.log_softmax(topk_logprobs.to(s_log.dtype) / t, dim=-1)
    kl = (t_log.exp() * (t_log - s_log)).sum(-1)  # [B, T]
    if mask is None:
        return kl.mean() * (t * t)
    m = mask.to(kl.dtype)
    return (kl * m).sum() / m.sum().clamp_min(1.0) * (t * t)


@register(LossName.TOKEN_KL)
class TokenKL(DistillLoss):
    def forward(self, inputs: LossInputs) -> torch.Tensor:
        return token_kl(
            require(inputs.student.logits, "student token logits [B, T, V]", self.name),
            require(find_extra(inputs, TOPK_IDS), "the teacher's top-k token ids", self.name),
            require(find_extra(inputs, TOPK_LOGPROBS), "the teacher's top-k log-probabilities", self.name),
            find_extra(inputs, RESPONSE_MASK),
            self.term.temperature or 1.0,
        )
