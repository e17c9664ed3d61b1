"""Registered distillation losses, one per module. Every loss module is imported here, explicitly: add a
line for a new loss (registered names only, never import by string)."""

from .registry import DistillLoss, LossDims, WeightedLoss, build_loss, loss_class, register, registered

__all__ = ["DistillLoss", "LossDims", "WeightedLoss", "build_loss", "loss_class", "register", "registered"]
