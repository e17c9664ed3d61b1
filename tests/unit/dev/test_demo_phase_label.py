"""How the demo groups the gateway client's answers: by the step the rollout's status shows, counted from 1."""

from __future__ import annotations

import doctest
from typing import Any

import pytest

from kubestill.dev import demo_gateway
from kubestill.dev.demo_gateway import phase_label


def test_doctests() -> None:
    assert doctest.testmod(demo_gateway).failed == 0


@pytest.mark.parametrize(("status", "expected"), [
    ({}, "before the first step"),  # no status yet: the operator has not started the rollout
    ({"phase": "Pending"}, "before the first step"),
    ({"phase": "Progressing", "currentStep": 0, "currentWeight": 20}, "step 1 (20%)"),
    ({"phase": "Progressing", "currentStep": -1, "currentWeight": 0}, "Progressing"),  # the shadow step
    ({"phase": "Promoted", "currentStep": 2, "currentWeight": 100}, "Promoted"),
    ({"phase": "RolledBack"}, "RolledBack"),
])
def test_phase_label(status: dict[str, Any], expected: str) -> None:
    assert phase_label(status) == expected
