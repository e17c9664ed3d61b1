"""apply_action and route_state, plus whole rollouts simulated tick by tick with a restart at every tick."""

from __future__ import annotations

from datetime import timedelta

import pytest

from kubestill.api.v1alpha1.canaryrollout import CanaryRolloutSpec, CanaryRolloutStatus
from kubestill.logic.analysis import QueryResult, assess_round
from kubestill.logic.canary import (
    Action,
    ActionKind,
    RouteView,
    analysis_due,
    holds_route,
    next_action,
    step_entered,
)
from kubestill.logic.canary_status import (
    MAX_MEASUREMENTS,
    RouteState,
    apply_action,
    route_condition,
    route_state,
    start_clocks,
    stop_clock,
)

from .helpers import at, in_step, spec, status

SPEC = spec()
SHADOW = spec(shadow={"percent": 40, "pause": "30s"})


@pytest.mark.parametrize(
    ("spec_", "before", "action", "now", "expect"),
    [
        # Entering a step starts no clock: that waits for the route (start_clocks).
        (SPEC, status(), Action(ActionKind.START), 0,
         {"phase": "Progressing", "current_step": 0, "current_weight": 10, "step_entered_at": at(0),
          "step_started_at": None, "next_step_at": None}),
        (SHADOW, status(), Action(ActionKind.START), 0,
         {"phase": "Progressing", "current_step": -1, "current_weight": 0, "shadowing": True,
          "next_step_at": None}),
        (SHADOW, in_step(-1, 0, 0, pause=30, shadowing=True), Action(ActionKind.ADVANCE), 30,
         {"current_step": 0, "current_weight": 10, "shadowing": False, "step_entered_at": at(30),
          "step_started_at": None}),
        (SPEC, in_step(0, 10, 0, step_failures=1, consecutive_inconclusive=1, last_verdict="Successful"),
         Action(ActionKind.ADVANCE), 70,
         {"current_step": 1, "current_weight": 50, "step_failures": 0, "consecutive_inconclusive": 0,
          "last_verdict": None, "next_step_at": None}),
        (SPEC, in_step(1, 50, 0), Action(ActionKind.PROMOTE), 60,
         {"phase": "Promoted", "current_weight": 100, "promoted_at": None, "next_step_at": None}),
        (SPEC, in_step(1, 50, 0), Action(ActionKind.ROLLBACK, "alert"), 20,
         {"phase": "RolledBack", "current_weight": 0, "message": "rolled back: alert", "route_settled_at": None}),
        # Aborted before the first step: the route was never touched, nothing to restore.
        (SPEC, status(), Action(ActionKind.ROLLBACK, "aborted by user"), 20,
         {"phase": "RolledBack", "route_settled_at": at(20)}),
        (SPEC, status(), Action(ActionKind.FAIL, "the candidate Service t:80 is the baseline itself"), 20,
         {"phase": "Failed", "message": "failed: the candidate Service t:80 is the baseline itself"}),
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


def run(
    spec_: CanaryRolloutSpec,
    error_rate: dict[int, float | None],
    seconds: int,
    restart_every_tick: bool = False,
    route_from: int = 0,
    kill_after_status_write: bool = False,
    gone: range = range(0),
    drifted: range = range(0),
) -> tuple[CanaryRolloutStatus, list[tuple[int, RouteState]]]:
    """Drive the rollout one second at a time as the handler does, against a route that exists from
    `route_from` on; `error_rate[step]` is what Prometheus answers in that step. With `restart_every_tick` the
    status goes through its wire form (what the API server stores) each tick, which is all an operator restart
    keeps; with `kill_after_status_write` every transition's route write is lost (the operator dies between
    the status write and the route write), so only the next tick's sync puts it on the route.
    Returns the final status and every change of what the route carried, by tick."""
    assert spec_.analysis is not None
    current = CanaryRolloutStatus()
    carried = RouteState(0)
    log: list[tuple[int, RouteState]] = [(-1, carried)]
    for tick in range(seconds):
        now = at(tick)
        exists = tick >= route_from and tick not in gone
        if not exists or tick in drifted:
            carried = RouteState(0)  # deleted and re-created, or reset by someone else, at the baseline
            if log[-1][1] != carried:
                log.append((tick, carried))
        repaired = False
        if exists and step_entered(current) and holds_route(current):
            repaired = carried != route_state(spec_, current)
            carried = route_state(spec_, current)
        view = RouteView(carried == route_state(spec_, current), repaired=repaired) if exists else RouteView(
            False, "RouteNotFound", "HTTPRoute route not found")
        current = stop_clock(current, view)
        round_ = None
        if view.carries and analysis_due(spec_, current, now):
            value = error_rate.get(current.current_step, 0.0)
            round_ = assess_round(spec_.analysis, {"errors": QueryResult(value)}, current.current_step, now)
        clocked = start_clocks(spec_, current, view.carries, now)
        action = next_action(spec_, clocked, round_, [], now, route=view)
        new = apply_action(spec_, clocked, action, round_, now)
        moved = route_state(spec_, new) != route_state(spec_, clocked)
        if not moved and view.carries:
            new = start_clocks(spec_, new, True, now)
        if moved and exists and step_entered(new) and not kill_after_status_write:
            carried = route_state(spec_, new)
            new = start_clocks(spec_, new, True, now)
        current = CanaryRolloutStatus.model_validate(new.to_wire()) if restart_every_tick else new
        if log[-1][1] != carried:
            log.append((tick, carried))
    return current, log


def simulate(
    spec_: CanaryRolloutSpec, error_rate: dict[int, float | None], seconds: int, restart_every_tick: bool
) -> CanaryRolloutStatus:
    return run(spec_, error_rate, seconds, restart_every_tick)[0]


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


@pytest.mark.parametrize("kill", [False, True])
def test_every_step_is_carried_by_the_route_for_its_whole_pause(kill: bool) -> None:
    """What the route carries, not what status says: each weight in order, each for at least its pause, also
    when every route write after a transition is lost to an operator kill."""
    spec_ = spec(shadow={"percent": 40, "pause": "30s"}, promotion={"keepBaselineFor": "10s"})
    final, log = run(spec_, {}, 300, restart_every_tick=True, kill_after_status_write=kill)
    assert final.phase == "Promoted"
    assert [state for _, state in log] == [
        RouteState(0), RouteState(0, 40), RouteState(10), RouteState(50), RouteState(100, None, True),
        RouteState(100, None, False),
    ]
    ticks = [tick for tick, _ in log]
    assert ticks[2] - ticks[1] >= 30  # shadow pause
    assert ticks[3] - ticks[2] >= 60
    assert ticks[4] - ticks[3] >= 60
    assert final.promoted_at == at(ticks[4])  # keepBaselineFor counts from the route at 100%
    assert ticks[5] - ticks[4] >= 10
    assert final.route_settled_at is not None


def test_a_missing_route_holds_the_first_step_without_judging_it() -> None:
    """The route appears 100 s late: no analysis, no advance before; the step's pause starts then."""
    final, _ = run(SPEC, {}, 99, route_from=100)
    assert final.phase == "Progressing"
    assert [h.action for h in final.history] == ["Start"]
    assert final.step_started_at is None and final.measurements == []
    assert "waiting for the route to carry 10%" in final.message
    final, _ = run(SPEC, {}, 400, route_from=100)
    assert final.phase == "Promoted"
    times = [h.at for h in final.history]
    assert times[1] - at(100) >= timedelta(seconds=60)


def test_route_condition_is_written_once_per_problem() -> None:
    entered = apply_action(SPEC, status(), Action(ActionKind.START), None, at(0))
    missing = RouteView(False, "RouteNotFound", "HTTPRoute route not found in namespace ns")
    first = route_condition(entered, missing, 1, at(1))
    again = route_condition(first, missing, 1, at(9))
    assert first == again  # nothing new to write on a retry
    cond = next(c for c in first.conditions if c.type == "RouteReady")
    assert (cond.status, cond.reason, cond.last_transition_time) == ("False", "RouteNotFound", at(1))
    ok = route_condition(again, RouteView(True), 1, at(20))
    cond = next(c for c in ok.conditions if c.type == "RouteReady")
    assert (cond.status, cond.reason, cond.message) == ("True", "Ready", "the route gives the candidate 10%")


def test_promotion_from_a_last_step_at_100_starts_its_clock_at_once() -> None:
    """The last step already gives the candidate 100%: promotion does not move the route, and keepBaselineFor
    counts from the promotion itself."""
    spec_ = spec(steps=[{"weight": 10, "pause": "20s"}, {"weight": 100, "pause": "20s"}],
                 promotion={"keepBaselineFor": "10s"})
    final, _ = run(spec_, {}, 120)
    promote = next(h for h in final.history if h.action == "Promote")
    release = next(h for h in final.history if h.action == "ReleaseBaseline")
    assert final.promoted_at == promote.at
    assert release.at - promote.at == timedelta(seconds=10)


@pytest.mark.parametrize(("gone", "drifted"), [(range(70, 90), range(0)), (range(0), range(75, 76))])
def test_a_route_lost_or_changed_mid_step_restarts_its_pause(gone: range, drifted: range) -> None:
    """The route deleted for 20 s, or set back to the baseline by someone else for a second, 10 s into step 1
    (50% for 60 s): step 1 is carried without a break for its whole pause afterwards."""
    final, log = run(SPEC, {}, 400, gone=gone, drifted=drifted)
    assert final.phase == "Promoted"
    assert [h.action for h in final.history] == ["Start", "Advance", "Promote"]
    fifty = [tick for tick, state in log if state == RouteState(50)]
    promoted = next(tick for tick, state in log if state.candidate_weight == 100)
    assert promoted - fifty[-1] >= 60  # the last unbroken stretch at 50% lasted the whole pause
