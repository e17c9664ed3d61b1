"""Kubernetes-style conditions on the Status models: set them, keeping lastTransitionTime when the status did
not change (as metav1.Condition requires), and find one. The one conditions helper of every kind.

Pure: the time is passed in.

>>> from datetime import UTC, datetime
>>> t0, t1 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=UTC)
>>> conds = set_conditions([], [Cond("Ready", "False", "Starting")], t0, 1)
>>> conds = set_conditions(conds, [Cond("Ready", "False", "StillStarting"), Cond("Progressing", "True", "Go")], t1, 2)
>>> [(c.type, c.reason, c.last_transition_time.isoformat(), c.observed_generation) for c in conds]
[('Ready', 'StillStarting', '2026-01-01T00:00:00+00:00', 2), ('Progressing', 'Go', '2026-01-02T03:04:05+00:00', 2)]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from kubestill.api.v1alpha1._base import Condition, ConditionStatus


@dataclass(frozen=True)
class Cond:
    """A condition to set: type, status ("True"/"False"/"Unknown"), reason and message."""

    type: str
    status: ConditionStatus | str
    reason: str
    message: str = ""


def rfc3339(when: datetime) -> str:
    """UTC timestamp the way the API server writes them (seconds precision, trailing Z)."""
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def to_seconds(when: datetime) -> datetime:
    """`when` at the API server's precision for timestamps it stores (whole seconds), so a status written and
    read back compares equal to the one decided."""
    return when.replace(microsecond=0)


def set_condition(conditions: Sequence[Condition], new: Condition, now: datetime) -> list[Condition]:
    """`conditions` with `new` in place of the one of its type (appended when there is none); its
    lastTransitionTime moves to `now` only when the status flips."""
    out = []
    placed = False
    for cond in conditions:
        if cond.type == new.type:
            keep = cond.status == new.status and cond.last_transition_time is not None
            out.append(new.model_copy(update={"last_transition_time": cond.last_transition_time if keep else now}))
            placed = True
        else:
            out.append(cond)
    if not placed:
        out.append(new.model_copy(update={"last_transition_time": now}))
    return out


def set_conditions(
    current: Sequence[Condition], updates: Iterable[Cond], now: datetime, generation: int | None
) -> list[Condition]:
    """Merge `updates` into `current` by type, in a stable order (existing first, new appended); reason,
    message and observedGeneration always follow the latest computation. Times at whole seconds."""
    out = list(current)
    when = to_seconds(now)
    for cond in updates:
        new = Condition(type=cond.type, status=ConditionStatus(cond.status), reason=cond.reason,
                        message=cond.message, observed_generation=generation)
        out = set_condition(out, new, when)
    return out


def find(conditions: Iterable[Condition], type_: str) -> Condition | None:
    """The condition of that type, or None."""
    return next((c for c in conditions if c.type == type_), None)
