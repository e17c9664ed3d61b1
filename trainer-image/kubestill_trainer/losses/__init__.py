"""Registered distillation losses, one per module. Every loss module is imported here, explicitly: add a
line for a new loss (registered names only, never import by string)."""

# Imported for their @register side effect.
from . import (  # noqa: F401
    attention_mse,
    cross_entropy,
    embedding_cosine,
    embedding_mse,
    hidden_mse,
    infonce,
    listwise_kl,
    logit_kl,
    margin_mse,
    sequence_kd,
    token_kl,
)
from .registry import DistillLoss, LossDims, WeightedLoss, build_loss, loss_class, register, registered

__all__ = ["DistillLoss", "LossDims", "WeightedLoss", "build_loss", "loss_class", "register", "registered"]
