"""The loss registry: each loss lives in its own module and registers itself under a `LossName`.

Only registered names are looked up, never an import path taken from a config: the spec's `loss.terms[].name`
is a `LossName` enum checked by the API server, and `build_loss` maps it to the class registered here. A
module registers with

    @register(LossName.LOGIT_KL)
    class LogitKL(DistillLoss):
        ...

and is imported once by `kubestill_trainer.losses` (its `__init__` lists every loss module explicitly).
The tensor maths of each loss is a pure function in the same module, unit-tested on its own; the registered
class only reads a `LossTerm`'s parameters and the batch's `LossInputs` and calls it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import torch
from torch import nn

from kubestill.api.v1alpha1.distillationjob import LossName, LossTerm

from ..outputs import LossInputs


@dataclass(frozen=True)
class LossDims:
    """Shapes of the student and teacher a loss may need to build learned parts (e.g. a projection when
    the hidden widths differ). `None` when unknown, e.g. a remote teacher exposes no hidden states."""

    student_hidden: int | None = None
    teacher_hidden: int | None = None
    student_layers: int | None = None
    teacher_layers: int | None = None
    student_embedding: int | None = None
    teacher_embedding: int | None = None


class DistillLoss(nn.Module):
    """One registered loss term. Subclasses set `name`, may set `needs_teacher` and implement `forward`.

    `needs_teacher` names the `ModelOutputs` fields of the TEACHER this loss reads that the label stage does
    not store ("hidden_states", "attentions"): the train stage then runs the teacher live on each batch.
    Learned parameters (projections) are trained with the student and dropped at export.
    """

    name: ClassVar[LossName]
    needs_teacher: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, term: LossTerm, dims: LossDims) -> None:
        super().__init__()
        self.term = term
        self.dims = dims

    def forward(self, inputs: LossInputs) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


_L = TypeVar("_L", bound=type[DistillLoss])
_REGISTRY: dict[LossName, type[DistillLoss]] = {}


def register(name: LossName) -> Callable[[_L], _L]:
    """Class decorator: register a `DistillLoss` under `name` (once; a second registration is a bug)."""

    def wrap(cls: _L) -> _L:
        key = LossName(name)
        if key in _REGISTRY and _REGISTRY[key] is not cls:
            raise RuntimeError(f"loss {key} registered twice: {_REGISTRY[key].__name__} and {cls.__name__}")
        cls.name = key
        _REGISTRY[key] = cls
        return cls

    return wrap


def loss_class(name: LossName | str) -> type[DistillLoss]:
    """The class registered under `name`; a clear error for a known name whose module is not installed."""
    key = LossName(name)
    try:
        return _REGISTRY[key]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise KeyError(f"loss {key} is not implemented by this trainer (registered: {known})") from None


def registered() -> tuple[LossName, ...]:
    """Every registered loss name, sorted."""
    return tuple(sorted(_REGISTRY))


def build_loss(term: LossTerm, dims: LossDims) -> DistillLoss:
    """Instantiate the registered loss for one spec term."""
    return loss_class(term.name)(term, dims)


class WeightedLoss(nn.Module):
    """The spec's weighted sum of loss terms; `forward` returns the total and each term's value (for logs)."""

    def __init__(self, terms: list[LossTerm], dims: LossDims) -> None:
        super().__init__()
        active = [t for t in terms if t.weight > 0]
        self.terms: list[DistillLoss] = [build_loss(t, dims) for t in active]
        self.weights = [float(t.weight) for t in active]
        # Registered as submodules so learned parts (projections) train and move with `.to(device)`.
        self.modules_ = nn.ModuleList(self.terms)

    @property
    def needs_teacher(self) -> frozenset[str]:
        """Union of the teacher internals the terms need live (see `DistillLoss.needs_teacher`)."""
        out: frozenset[str] = frozenset()
        for loss in self.terms:
            out |= type(loss).needs_teacher
        return out

    def forward(self, inputs: LossInputs) -> tuple[torch.Tensor, dict[str, float]]:
        total: torch.Tensor | None = None
        parts: dict[str, float] = {}
        for loss, weight in zip(self.terms, self.weights, strict=True):
            value = loss(inputs)
            parts[str(type(loss).name)] = float(value.detach())
            total = value * weight if total is None else total + value * weight
        assert total is not None  # the spec guarantees one term with weight > 0
        return total, parts
