"""apply_action and route_state, plus whole rollouts simulated tick by tick with a restart at every tick."""

from __future__ import annotations

from datetime import timedelta

import pytest

from kubestill.api.v1alpha1.canaryrollout import CanaryRolloutSpec, CanaryRolloutStatus
from kubestill.logic.analysis import QueryResult, assess_round
from kubestill.logic.canary import Action, ActionKind, analysis_due, next_action
from kubestill.logic.canary_status import MAX_MEASUREMENTS, RouteState, apply_action, route_state

from .helpers import at, in_step, spec, status

SPEC = spec()
SHADOW = spec(shadow={"percent": 40, "pause": "30s"})


@pytest.mark.parametrize(
    ("spec_", "before", "action", "now", "expect"),
    [
        (SPEC, status(), Action(ActionKind.START), 0,
         {"phase": "Progressing", "current_step": 0, "current_weight": 10, "next_step_at": at(60)}),
        (SHADOW, status(), Action(ActionKind.START), 0,
         {"phase": "Progressing", "current_step": -1, "current_weight": 0, "shadowing": True,
          "next_step_at": at(30)}),
        (SHADOW, in_step(-1, 0, 0, pause=30, shadowing=True), Action(ActionKind.ADVANCE), 30,
         {"current_step": 0, "current_weight": 10, "shadowing": False, "step_started_at": at(30)}),
        (SPEC, in_step(0, 10, 0, step_failures=1, consecutive_inconclusive=1, last_verdict="Successful"),
         Action(ActionKind.ADVANCE), 70,
         {"current_step": 1, "current_weight": 50, "step_failures": 0, "consecutive_inconclusive": 0,
          "last_verdict": None, "next_step_at": at(130)}),
        (SPEC, in_step(1, 50, 0), Action(ActionKind.PROMOTE), 60,
         {"phase": "Promoted", "current_weight": 100, "promoted_at": at(60), "next_step_at": None}),
        (SPEC, in_step(1, 50, 0), Action(ActionKind.ROLLBACK, "alert"), 20,
         {"phase": "RolledBack", "current_weight": 0, "message": "rolled back: alert"}),
        (SPEC, in_step(0, 10, 0), Action(ActionKind.PAUSE, "why", "Manual"), 20,
         {"phase": "Paused", "paused_at": at(20), "pause_reason": "Manual", "next_step_at": at(60)}),
        # Paused 5 days 20 s into a 60 s step: 40 s of the pause are left after resuming.
        (SPEC, in_step(0, 10, 0, phase="Paused", paused_at=at(20), pause_reason="Manual"),
         Action(ActionKind.RESUME), 20 + 5 * 86400,
         {"phase": "Progressing", "paused_at": None, "next_step_at": at(60 + 5 * 86400)}),
        (SPEC, status(phase="Promoted", promoted_at=at(0), current_weight=100), Action(ActionKind.RELEASE_BASELINE),
         99, {"baseline_released_at": at(99)}),
    ],
)
def test_apply_action(
    spec_: CanaryRolloutSpec, before: CanaryRolloutStatus, action: Action, now: float, expect: dict[str, object]
) -> None:
    after = apply_action(spec_, before, action, None, at(now), generation=3)
    for key, value in expect.items():
        assert getattr(after, key) == value, key
    assert after.history[-1].action == action.kind
    assert after.history[-1].weight == after.current_weight
    assert after.observed_generation == 3
    assert {c.type for c in after.conditions} == {"Progressing", "Healthy"}


def test_hold_records_the_round_without_history() -> None:
    assert SPEC.analysis is not None
    round_ = assess_round(SPEC.analysis, {"errors": QueryResult(0.5)}, 0, at(10))
    after = apply_action(SPEC, in_step(0, 10, 0), Action(ActionKind.HOLD), round_, at(10))
    assert after.history == []
    assert after.step_failures == 1
    assert after.last_analysis_at == at(10)
    assert after.last_verdict == "Failed"
    assert [m.value for m in after.measurements] == [0.5]
    healthy = next(c for c in after.conditions if c.type == "Healthy")
    assert (healthy.status, healthy.reason) == ("False", "AnalysisFailed")


def test_measurements_are_bounded() -> None:
    assert SPEC.analysis is not None
    current = in_step(0, 10, 0)
    for i in range(MAX_MEASUREMENTS + 15):
        round_ = assess_round(SPEC.analysis, {"errors": QueryResult(float(i) / 1000)}, 0, at(i))
        current = apply_action(SPEC, current, Action(ActionKind.HOLD), round_, at(i))
    assert len(current.measurements) == MAX_MEASUREMENTS
    assert current.measurements[-1].value == pytest.approx((MAX_MEASUREMENTS + 14) / 1000)


def test_condition_transition_time_moves_only_on_flip() -> None:
    first = apply_action(SPEC, status(), Action(ActionKind.START), None, at(0))
    same = apply_action(SPEC, first, Action(ActionKind.HOLD), None, at(5))
    progressing = next(c for c in same.conditions if c.type == "Progressing")
    assert progressing.last_transition_time == at(0)
    paused = apply_action(SPEC, same, Action(ActionKind.PAUSE, "x", "Manual"), None, at(9))
    assert next(c for c in paused.conditions if c.type == "Progressing").last_transition_time == at(9)


@pytest.mark.parametrize(
    ("spec_", "status_", "expected"),
    [
        (SPEC, status(), RouteState(0)),
        (SPEC, in_step(1, 50, 0), RouteState(50)),
        (SPEC, in_step(1, 50, 0, phase="Paused"), RouteState(50)),
        (SHADOW, in_step(-1, 0, 0, shadowing=True), RouteState(0, 40)),
        (SPEC, status(phase="RolledBack", current_weight=0), RouteState(0)),
        (SPEC, status(phase="Promoted", current_weight=100), RouteState(100, None, True)),
        (SPEC, status(phase="Promoted", current_weight=100, baseline_released_at=at(1)), RouteState(100, None, False)),
    ],
)
def test_route_state(spec_: CanaryRolloutSpec, status_: CanaryRolloutStatus, expected: RouteState) -> None:
    assert route_state(spec_, status_) == expected


def simulate(
    spec_: CanaryRolloutSpec, error_rate: dict[int, float | None], seconds: int, restart_every_tick: bool
) -> CanaryRolloutStatus:
    """Drive the rollout one second at a time; `error_rate[step]` is what Prometheus answers in that step.
    With `restart_every_tick` the status goes through its wire form (what the API server stores) each tick,
    which is all an operator restart keeps."""
    assert spec_.analysis is not None
    current = CanaryRolloutStatus()
    for tick in range(seconds):
        now = at(tick)
        round_ = None
        if analysis_due(spec_, current, now):
            value = error_rate.get(current.current_step, 0.0)
            round_ = assess_round(spec_.analysis, {"errors": QueryResult(value)}, current.current_step, now)
        action = next_action(spec_, current, round_, [], now)
        current = apply_action(spec_, current, action, round_, now)
        if restart_every_tick:
            current = CanaryRolloutStatus.model_validate(current.to_wire())
    return current


@pytest.mark.parametrize("restart", [False, True])
def test_healthy_rollout_steps_once_each_and_promotes(restart: bool) -> None:
    final = simulate(SHADOW, {}, 200, restart)
    assert final.phase == "Promoted"
    assert [(h.action, h.step, h.weight) for h in final.history] == [
        ("Start", -1, 0), ("Advance", 0, 10), ("Advance", 1, 50), ("Promote", 1, 100),
    ]
    # Each step lasted its pause plus at most one analysis interval (the round at its end).
    times = [h.at for h in final.history]
    assert times[1] - times[0] == timedelta(seconds=30)
    assert timedelta(seconds=60) <= times[2] - times[1] <= timedelta(seconds=70)


def test_restarts_change_nothing() -> None:
    rates: dict[int, float | None] = {0: None}
    assert simulate(SPEC, rates, 300, True) == simulate(SPEC, rates, 300, False)


def test_no_data_is_never_promoted() -> None:
    final = simulate(SPEC, {0: None, 1: None}, 10_000, True)
    assert final.phase == "Paused"
    assert final.pause_reason == "Inconclusive"
    assert final.current_weight == 10


def test_failing_candidate_rolls_back_on_the_second_failure() -> None:
    final = simulate(SPEC, {1: 0.5}, 300, True)
    assert final.phase == "RolledBack"
    assert final.history[-1].action == "Rollback"
    assert final.history[-1].weight == 0
    assert "errors: 0.5 > max 0.01" in final.message
