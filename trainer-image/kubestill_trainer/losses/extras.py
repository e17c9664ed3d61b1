"""Where the reranking and generation losses find their masks (shared by margin-mse, listwise-kl, token-kl,
sequence-kd). The task puts them in `ModelOutputs.extra` of the teacher (from the stored targets) or in
`LossInputs.extra`; both places are looked at so a stage may pass them either way."""

from __future__ import annotations

import torch

from ..outputs import LossInputs

# [B, G] bool: which candidate slots of a reranking group are real (groups are padded to the same size).
CANDIDATE_MASK = "candidate_mask"
# [B, T] bool: which response positions hold a teacher token (responses are padded to the same length).
RESPONSE_MASK = "response_mask"
# [B, T, k] int64 / float32: the teacher's top-k token ids and log-probabilities per response position.
TOPK_IDS = "topk_ids"
TOPK_LOGPROBS = "topk_logprobs"
# [B, T] int64: the teacher's response token ids (-100 at padding).
TOKEN_IDS = "token_ids"


def find_extra(inputs: LossInputs, key: str) -> torch.Tensor | None:
    """`key` from the batch's extras, the teacher's or the student's, in that order (None if absent)."""
    for extra in (inputs.extra, inputs.teacher.extra, inputs.student.extra):
        if key in extra:
            return extra[key]
    return None


def candidate_mask(inputs: LossInputs) -> torch.Tensor | None:
    return find_extra(inputs, CANDIDATE_MASK)
