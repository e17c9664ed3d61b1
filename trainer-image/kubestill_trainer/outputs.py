"""What a model returns and what a loss sees: plain dataclasses of tensors shared by tasks and losses.

A teacher's stored targets (label stage) and its live forward pass (when a loss needs its hidden states)
are both expressed as `ModelOutputs`, so every loss compares like with like: `student.x` vs `teacher.x`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy.typing as npt
import torch

# A numpy array of any dtype and shape (targets on disk, Triton tensors).
Array = npt.NDArray[Any]


@dataclass
class ModelOutputs:
    """Outputs of a student or teacher forward pass; a task fills the fields it produces.

    Shapes (B batch, S sequence, C classes / candidates, D width, L layers, H heads, V vocabulary):
    - logits: [B, C] class logits (classification), or [B, S, V] token logits (generation)
    - embedding: [B, D] pooled sentence embedding (embedding task), as served (after any Dense / normalise)
    - scores: [B] or [B, C] relevance scores (reranking)
    - hidden_states: L+1 tensors [B, S, D] (embeddings output first, as transformers returns them)
    - attentions: L tensors [B, H, S, S] (softmax probabilities)
    - extra: anything else a task-specific loss needs (e.g. top-k token ids), by documented key
    """

    logits: torch.Tensor | None = None
    embedding: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class LossInputs:
    """Everything a registered loss may read for one batch.

    `labels` are gold or teacher hard labels ([B] class ids, or [B, S] token ids with -100 ignored);
    `attention_mask` [B, S] marks real tokens (hidden-state and attention losses ignore padding).
    """

    student: ModelOutputs
    teacher: ModelOutputs
    labels: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


_V = TypeVar("_V")


def require(value: _V | None, what: str, loss: str) -> _V:
    """Return a tensor a loss needs, or fail with a message naming the loss and the missing input."""
    if value is None:
        raise ValueError(f"loss {loss} needs {what}, which this task's batch does not provide")
    return value
