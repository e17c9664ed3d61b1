"""Kubernetes-style conditions: set one, keeping lastTransitionTime when its status did not change.

Pure: the time is passed in. Conditions travel as wire dicts (camelCase) because that is what status holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Cond:
    """A condition to set: type, status ("True"/"False"/"Unknown"), reason and message."""

    type: str
    status: str
    reason: str
    message: str = ""


def rfc3339(when: datetime) -> str:
    """UTC timestamp the way the API server writes them (seconds precision, trailing Z)."""
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def set_conditions(
    current: Iterable[Mapping[str, Any]], updates: Iterable[Cond], now: datetime, generation: int | None
) -> list[dict[str, Any]]:
    """Merge `updates` into `current` by type, in a stable order (existing first, new appended).

    lastTransitionTime moves only when the status flips, as metav1.Condition requires; reason, message
    and observedGeneration always follow the latest computation.
    """
    out = [dict(c) for c in current]
    by_type = {c.get("type"): c for c in out}
    for cond in updates:
        old = by_type.get(cond.type)
        new: dict[str, Any] = {
            "type": cond.type,
            "status": cond.status,
            "reason": cond.reason,
            "message": cond.message,
            "lastTransitionTime": rfc3339(now),
        }
        if generation is not None:
            new["observedGeneration"] = generation
        if old is not None:
            if old.get("status") == cond.status and old.get("lastTransitionTime"):
                new["lastTransitionTime"] = old["lastTransitionTime"]
            old.clear()
            old.update(new)
        else:
            out.append(new)
            by_type[cond.type] = new
    return out


def find(conditions: Iterable[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    """The condition of that type, or None."""
    return next((c for c in conditions if c.get("type") == type_), None)
