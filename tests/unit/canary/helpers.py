"""Builders of specs and statuses for the canary unit tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from kubestill.api.v1alpha1.canaryrollout import CanaryRolloutSpec, CanaryRolloutStatus

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def spec(**overrides: Any) -> CanaryRolloutSpec:
    """10% for 60s, 50% for 60s; analysis every 10s with one metric; overridable by wire name."""
    raw: dict[str, Any] = {
        "route": {"name": "route"},
        "baseline": {"name": "teacher", "port": 8000},
        "candidate": {"service": {"name": "student", "port": 8000}},
        "steps": [{"weight": 10, "pause": "60s"}, {"weight": 50, "pause": "60s"}],
        "analysis": {
            "prometheusUrl": "http://prom:9090",
            "interval": "10s",
            "failureLimit": 1,
            "inconclusiveLimit": 2,
            "metrics": [{"name": "errors", "query": "q", "max": 0.01}],
        },
    }
    raw.update(overrides)
    return CanaryRolloutSpec.model_validate(raw)


def status(**fields: Any) -> CanaryRolloutStatus:
    return CanaryRolloutStatus(**fields)


def in_step(step: int, weight: int, started: float, pause: float | None = 60, **fields: Any) -> CanaryRolloutStatus:
    """A Progressing status in `step` that began at `started` seconds after T0."""
    fields.setdefault("phase", "Progressing")
    return CanaryRolloutStatus(
        current_step=step,
        current_weight=weight,
        step_started_at=at(started),
        next_step_at=at(started + pause) if pause is not None else None,
        **fields,
    )
