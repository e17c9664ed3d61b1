"""Pure arithmetic of the train loop: step counts, the learning-rate schedule, the data order."""

from __future__ import annotations

import math

import numpy as np

from ..outputs import Array


def plan_steps(examples: int, batch_size: int, accumulation: int, epochs: int, max_steps: int | None
               ) -> tuple[int, int]:
    """(optimiser steps per epoch, total steps): each step consumes batch_size x accumulation examples."""
    per_epoch = max(1, math.ceil(examples / (batch_size * accumulation)))
    total = per_epoch * epochs
    return per_epoch, min(total, max_steps) if max_steps else total


def lr_factor(step: int, total: int, warmup_ratio: float) -> float:
    """Linear warm-up to the peak over warmup_ratio of the steps, then linear decay to 0."""
    warmup = int(total * warmup_ratio)
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def epoch_order(n: int, seed: int, epoch: int, confidence: Array | None) -> list[int]:
    """Example order of one epoch. Shuffled by (seed, epoch), so a resumed run replays the same order;
    with a confidence array, curriculum order instead: most confident (easiest) teacher targets first,
    ties broken by the shuffle."""
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    if confidence is None:
        return [int(i) for i in perm]
    rank = np.empty(n, dtype=np.int64)
    rank[perm] = np.arange(n)
    return [int(i) for i in np.lexsort((rank, -confidence))]


def epochs_since_best(losses: list[float]) -> int:
    """How many validation losses came after the lowest one (0: the last one is the best so far). Ties go to
    the earlier epoch, so a plateau counts against patience."""
    if not losses:
        raise ValueError("no validation loss yet")
    best = min(range(len(losses)), key=lambda i: (losses[i], i))
    return len(losses) - 1 - best
