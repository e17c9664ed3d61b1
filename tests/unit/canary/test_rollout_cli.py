"""`kubestill rollout`: argument parsing, control values, the status summary."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kubestill.cli import build_parser
from kubestill.cli.rollout import control_value, format_status

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("argv", "action", "full"),
    [
        (["rollout", "promote", "r", "-n", "prod"], "promote", False),
        (["rollout", "promote", "--full", "r"], "promote", True),
        (["rollout", "abort", "r"], "abort", None),
        (["rollout", "pause", "r"], "pause", None),
        (["rollout", "resume", "r"], "resume", None),
    ],
)
def test_parse(argv: list[str], action: str, full: bool | None) -> None:
    args = build_parser().parse_args(argv)
    assert args.action == action and args.name == "r"
    assert getattr(args, "full", None) == full


@pytest.mark.parametrize(
    ("full", "expected"),
    [(False, "2026-03-01T12:00:00.000000Z"), (True, "full/2026-03-01T12:00:00.000000Z")],
)
def test_control_value(full: bool, expected: str) -> None:
    assert control_value(full, NOW) == expected


def test_format_status() -> None:
    obj = {
        "metadata": {"name": "r", "namespace": "prod"},
        "spec": {"steps": [{"weight": 10}, {"weight": 50}]},
        "status": {
            "phase": "Progressing", "currentStep": 1, "currentWeight": 50, "nextStepAt": "2026-03-01T12:01:00Z",
            "message": "step 2/2: 50% to the candidate",
            "measurements": [
                {"metric": "errors", "value": 0.5, "result": "Failed", "step": 1, "at": "x", "message": "0.5 > max"},
                {"metric": "errors", "value": 0.001, "result": "Successful", "step": 1, "at": "y"},
            ],
            "history": [{"at": "t", "action": "Advance", "step": 1, "weight": 50, "reason": "step 1/2 passed"}],
        },
    }
    out = format_status(obj, NOW)
    assert "Phase:    Progressing" in out
    assert "Step:     2/2" in out
    assert "Next:     in 60s" in out
    assert "0.001" in out and "0.5 > max" not in out  # the latest measurement per metric
    assert "Advance" in out and "step 1/2 passed" in out
    assert "Route:" not in out  # written by operators that know about the route condition only


def test_format_status_names_the_route_problem() -> None:
    obj = {
        "metadata": {"name": "r", "namespace": "prod"},
        "spec": {"steps": [{"weight": 10}]},
        "status": {"phase": "Progressing", "currentStep": 0, "currentWeight": 10,
                   "conditions": [{"type": "RouteReady", "status": "False", "reason": "RouteNotFound",
                                   "message": "HTTPRoute r not found in namespace prod"}]},
    }
    assert "Route:    RouteNotFound: HTTPRoute r not found in namespace prod" in format_status(obj, NOW)
