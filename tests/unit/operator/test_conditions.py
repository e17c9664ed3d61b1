"""Conditions keep lastTransitionTime unless their status flips."""

from __future__ import annotations

import doctest
from datetime import UTC, datetime

import pytest

from kubestill.logic import conditions
from kubestill.logic.conditions import Cond, find, set_conditions

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = datetime(2026, 1, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    ("old_status", "new_status", "expected_time"),
    [("True", "True", "2026-01-01T00:00:00Z"), ("True", "False", "2026-01-02T00:00:00Z"),
     (None, "True", "2026-01-02T00:00:00Z")],
)
def test_transition_time(old_status: str | None, new_status: str, expected_time: str) -> None:
    current = [] if old_status is None else set_conditions([], [Cond("Ready", old_status, "A")], T0, 1)
    out = set_conditions(current, [Cond("Ready", new_status, "B", "msg")], T1, 2)
    ready = find(out, "Ready")
    assert ready is not None
    assert ready.to_wire()["lastTransitionTime"] == expected_time
    assert (ready.reason, ready.message, ready.observed_generation) == ("B", "msg", 2)


def test_order_is_stable_and_types_unique() -> None:
    out = set_conditions([], [Cond("Ready", "False", "A"), Cond("Progressing", "True", "B")], T0, 1)
    out = set_conditions(out, [Cond("GatePassed", "True", "C"), Cond("Ready", "True", "D")], T1, 1)
    assert [c.type for c in out] == ["Ready", "Progressing", "GatePassed"]


def test_times_are_whole_seconds_as_the_api_server_stores_them() -> None:
    out = set_conditions([], [Cond("Ready", "True", "A")], datetime(2026, 1, 1, 0, 0, 1, 999_999, tzinfo=UTC), None)
    assert out[0].to_wire() == {"type": "Ready", "status": "True", "reason": "A", "message": "",
                                "lastTransitionTime": "2026-01-01T00:00:01Z"}


def test_docstring_examples() -> None:
    result = doctest.testmod(conditions)
    assert result.attempted > 0 and result.failed == 0
