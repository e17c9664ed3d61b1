"""Matryoshka representation learning: apply an embedding loss to the full vector and to its prefixes."""

from __future__ import annotations

from collections.abc import Callable

import torch


def over_dims(
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    student: torch.Tensor,
    teacher: torch.Tensor,
    dims: list[int],
) -> torch.Tensor:
    """Mean of `fn` on the full [B, D] embeddings and on the first d columns for each d in `dims`."""
    full = student.shape[-1]
    bad = [d for d in dims if not 1 <= d <= full]
    if bad:
        raise ValueError(f"matryoshkaDims {bad} exceed the embedding width {full}")
    sizes = [full, *(d for d in dims if d != full)]
    return torch.stack([fn(student[..., :d], teacher[..., :d]) for d in sizes]).mean()
