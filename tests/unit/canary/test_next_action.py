"""next_action: table of situations -> action, with the clock passed in."""

from __future__ import annotations

import pytest

from kubestill.api.v1alpha1.canaryrollout import CanaryRolloutSpec, CanaryRolloutStatus
from kubestill.logic.analysis import AnalysisRound, QueryResult, assess_round
from kubestill.logic.canary import (
    ROUTE_OK,
    RouteView,
    analysis_due,
    next_action,
    next_wakeup,
)
from kubestill.logic.canary_controls import Controls, pending_controls

from .helpers import at, in_step, spec, status

SPEC = spec()
NO_ANALYSIS = spec(analysis=None)
INDEFINITE = spec(steps=[{"weight": 10}, {"weight": 50, "pause": "60s"}])
SHADOW = spec(shadow={"percent": 50, "pause": "30s"})
PAUSED_SPEC = spec(paused=True)


def rnd(value: float | None, t: float, step: int = 0, error: str | None = None) -> AnalysisRound:
    assert SPEC.analysis is not None
    return assess_round(SPEC.analysis, {"errors": QueryResult(value, error)}, step, at(t))


OK = "Successful"
CASES: list[tuple[str, CanaryRolloutSpec, CanaryRolloutStatus, AnalysisRound | None, list[str], float, Controls,
                  str, str]] = [
    # (id, spec, status, round, alerts, now, controls, expected kind, substring of reason)
    ("pending starts", SPEC, status(), None, [], 0, Controls(), "Start", "first step"),
    ("pending starts shadow", SHADOW, status(), None, [], 0, Controls(), "Start", "shadow"),
    ("pending with spec.paused pauses", PAUSED_SPEC, status(), None, [], 0, Controls(), "Pause", ""),
    ("pending abort", SPEC, status(), None, [], 0, Controls(abort="x"), "Rollback", "aborted"),
    ("hold inside the pause", SPEC, in_step(0, 10, 0, last_verdict=OK), rnd(0.0, 30), [], 30, Controls(), "Hold", ""),
    ("advance when pause over and healthy", SPEC, in_step(0, 10, 0), rnd(0.0, 60), [], 60, Controls(),
     "Advance", "step 1/2 passed"),
    ("advance on the stored verdict", SPEC, in_step(0, 10, 0, last_verdict=OK), None, [], 61, Controls(),
     "Advance", ""),
    ("no round yet: wait, never pass on no data", SPEC, in_step(0, 10, 0), None, [], 61, Controls(),
     "Hold", "waiting for a successful"),
    ("inconclusive round at the end: hold", SPEC, in_step(0, 10, 0), rnd(None, 60), [], 60, Controls(),
     "Hold", "waiting"),
    ("third inconclusive in a row pauses", SPEC, in_step(0, 10, 0, consecutive_inconclusive=2), rnd(None, 30),
     [], 30, Controls(), "Pause", "3 inconclusive"),
    ("unreachable prometheus counts as inconclusive", SPEC, in_step(0, 10, 0, consecutive_inconclusive=2),
     rnd(None, 30, error="refused"), [], 30, Controls(), "Pause", "refused"),
    ("failure within the limit holds", SPEC, in_step(0, 10, 0), rnd(0.5, 60), [], 60, Controls(), "Hold", ""),
    ("failure over the limit rolls back", SPEC, in_step(0, 10, 0, step_failures=1), rnd(0.5, 30), [], 30,
     Controls(), "Rollback", "errors: 0.5 > max 0.01"),
    ("alert rolls back at once", SPEC, in_step(0, 10, 0), None, ["HighErrors{}"], 5, Controls(), "Rollback",
     "HighErrors"),
    ("alert rolls back while paused", SPEC, in_step(0, 10, 0, phase="Paused", pause_reason="Manual"), None,
     ["A{}"], 5, Controls(), "Rollback", "alert"),
    ("abort beats promote", SPEC, in_step(0, 10, 0), None, [], 5, Controls(abort="a", promote="p"), "Rollback",
     "aborted"),
    ("promote skips the pause", SPEC, in_step(0, 10, 0), None, [], 5, Controls(promote="p"), "Advance", "user"),
    ("promote on the last step promotes", SPEC, in_step(1, 50, 0), None, [], 5, Controls(promote="p"),
     "Promote", "user"),
    ("promote full", SPEC, in_step(0, 10, 0), None, [], 5, Controls(promote="full/1"), "Promote", "user"),
    ("indefinite pause holds", INDEFINITE, in_step(0, 10, 0, pause=None, last_verdict=OK), None, [], 10**6,
     Controls(), "Hold", ""),
    ("last step passed promotes", SPEC, in_step(1, 50, 60, last_verdict=OK), None, [], 120, Controls(),
     "Promote", "all steps"),
    ("without analysis time alone advances", NO_ANALYSIS, in_step(0, 10, 0), None, [], 60, Controls(),
     "Advance", ""),
    ("shadow passed goes to step 0", SHADOW, in_step(-1, 0, 0, pause=30, shadowing=True, last_verdict=OK), None,
     [], 30, Controls(), "Advance", "shadow"),
    ("spec.paused pauses", PAUSED_SPEC, in_step(0, 10, 0), None, [], 5, Controls(), "Pause", "spec.paused"),
    ("pause annotation pauses", SPEC, in_step(0, 10, 0), None, [], 5, Controls(pause="x"), "Pause", "user"),
    ("paused holds even when due", SPEC, in_step(0, 10, 0, phase="Paused", pause_reason="Manual",
                                                 last_verdict=OK), None, [], 500, Controls(), "Hold", ""),
    ("resume annotation resumes", SPEC, in_step(0, 10, 0, phase="Paused", pause_reason="Inconclusive"), None, [],
     5, Controls(resume="r"), "Resume", "user"),
    ("resume refused while spec.paused", PAUSED_SPEC, in_step(0, 10, 0, phase="Paused", pause_reason="Spec"),
     None, [], 5, Controls(resume="r"), "Hold", ""),
    ("spec.paused cleared resumes", SPEC, in_step(0, 10, 0, phase="Paused", pause_reason="Spec"), None, [], 5,
     Controls(), "Resume", "spec.paused cleared"),
    ("manual pause outlives spec.paused=false", SPEC, in_step(0, 10, 0, phase="Paused", pause_reason="Manual"),
     None, [], 5, Controls(), "Hold", ""),
    ("promote while paused advances", SPEC, in_step(0, 10, 0, phase="Paused", pause_reason="Inconclusive"), None,
     [], 5, Controls(promote="p"), "Advance", ""),
    ("resumed from a pending pause starts", SPEC, status(phase="Progressing"), None, [], 5, Controls(), "Start",
     ""),
    ("rolled back holds", SPEC, status(phase="RolledBack"), None, ["A{}"], 5, Controls(promote="p"), "Hold", ""),
    ("promoted releases the baseline when due", spec(promotion={"keepBaselineFor": "1h"}),
     status(phase="Promoted", current_weight=100, promoted_at=at(0)), None, [], 3600, Controls(),
     "ReleaseBaseline", "1h"),
    ("promoted keeps the baseline until due", spec(promotion={"keepBaselineFor": "1h"}),
     status(phase="Promoted", current_weight=100, promoted_at=at(0)), None, [], 3599, Controls(), "Hold", ""),
    ("promoted abort while baseline kept rolls back", SPEC,
     status(phase="Promoted", current_weight=100, promoted_at=at(0)), None, [], 5, Controls(abort="a"),
     "Rollback", "after promotion"),
    ("promoted ignores alerts", SPEC, status(phase="Promoted", current_weight=100, promoted_at=at(0)), None,
     ["A{}"], 5, Controls(), "Hold", ""),
    ("released: abort is too late", SPEC,
     status(phase="Promoted", current_weight=100, promoted_at=at(0), baseline_released_at=at(10)), None, [], 50,
     Controls(abort="a"), "Hold", ""),
]


@pytest.mark.parametrize(
    ("spec_", "status_", "round_", "alerts", "now", "controls", "kind", "reason"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_next_action(
    spec_: CanaryRolloutSpec,
    status_: CanaryRolloutStatus,
    round_: AnalysisRound | None,
    alerts: list[str],
    now: float,
    controls: Controls,
    kind: str,
    reason: str,
) -> None:
    action = next_action(spec_, status_, round_, alerts, at(now), controls)
    assert action.kind == kind
    assert reason in action.reason


@pytest.mark.parametrize(
    ("status_", "now", "due"),
    [
        (status(), 0, False),  # nothing to measure before the first step
        (in_step(0, 10, 0), 9.9, False),
        (in_step(0, 10, 0), 10, True),  # first round one interval into the step
        (in_step(0, 10, 0, last_analysis_at=at(10)), 15, False),
        (in_step(0, 10, 0, last_analysis_at=at(10)), 20, True),
        (in_step(0, 10, 55, last_analysis_at=at(50)), 60, False),  # the old step's round does not count
        (in_step(0, 10, 0, pause=5), 5, True),  # pause shorter than the interval: measure at its end
        (in_step(0, 10, 0, pause=5, last_analysis_at=at(5)), 7, False),
        (in_step(0, 10, 0, phase="Paused"), 10, True),  # alerts and metrics still watched while paused
        (status(phase="RolledBack", step_started_at=at(0)), 100, False),
    ],
)
def test_analysis_due(status_: CanaryRolloutStatus, now: float, due: bool) -> None:
    assert analysis_due(SPEC, status_, at(now)) is due


@pytest.mark.parametrize(
    ("spec_", "status_", "now", "seconds"),
    [
        (SPEC, status(), 0, 0.0),
        (SPEC, status(phase="Progressing"), 0, 0.0),  # resumed before the first step: start it now
        (SPEC, status(phase="Paused"), 0, 30.0),  # waits for a resume (an event wakes it)
        (SPEC, in_step(0, 10, 0), 0, 10.0),
        (SPEC, in_step(0, 10, 0, last_analysis_at=at(50)), 55, 5.0),
        (NO_ANALYSIS, in_step(0, 10, 0), 45, 15.0),
        (NO_ANALYSIS, in_step(0, 10, 0, pause=3600), 0, 30.0),  # bounded, so route drift is noticed
        (SPEC, status(phase="RolledBack"), 0, 30.0),
        (spec(promotion={"keepBaselineFor": "20s"}), status(phase="Promoted", promoted_at=at(0)), 5, 15.0),
    ],
)
def test_next_wakeup(spec_: CanaryRolloutSpec, status_: CanaryRolloutStatus, now: float, seconds: float) -> None:
    assert next_wakeup(spec_, status_, at(now)) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("annotations", "handled", "expected"),
    [
        ({}, {}, Controls()),
        ({"kubestill.io/promote": "1"}, {}, Controls(promote="1")),
        ({"kubestill.io/promote": "1"}, {"kubestill.io/promote": "1"}, Controls()),
        ({"kubestill.io/promote": "2"}, {"kubestill.io/promote": "1"}, Controls(promote="2")),
        ({"kubestill.io/abort": "a", "other": "x"}, {}, Controls(abort="a")),
        ({"kubestill.io/pause": "p", "kubestill.io/resume": "r"}, {"kubestill.io/pause": "p"}, Controls(resume="r")),
    ],
)
def test_pending_controls(annotations: dict[str, str], handled: dict[str, str], expected: Controls) -> None:
    assert pending_controls(annotations, handled) == expected


def test_promote_full_flag() -> None:
    assert Controls(promote="full/2026").promote_full
    assert not Controls(promote="2026").promote_full


MISSING = RouteView(False, "RouteNotFound", "HTTPRoute route not found in namespace ns")
HELD = RouteView(False, "RouteConflict", "HTTPRoute route rule 0 is being rolled out by CanaryRollout one",
                 held_by="one")
ENTERED = status(phase="Progressing", current_step=0, current_weight=10, step_entered_at=at(0))
GONE = "candidate StudentModel s was deleted"
SAME = "the candidate Service teacher:8000 is the baseline itself"
ROUTE_CASES: list[tuple[str, CanaryRolloutStatus, RouteView, Controls, str | None, str | None, float, str, str]] = [
    # (id, status, route, controls, candidate gone, candidate invalid, now, expected kind, substring of reason)
    ("entered, route missing: no clock, hold", ENTERED, MISSING, Controls(), None, None, 3600, "Hold",
     "waiting for the route to carry 10%"),
    ("started, route lost mid-step: never advance on it", in_step(0, 10, 0, last_verdict=OK), MISSING,
     Controls(), None, None, 61, "Hold", "HTTPRoute route not found"),
    ("entered, route carries but clock not started: hold", ENTERED, ROUTE_OK, Controls(), None, None, 3600,
     "Hold", "waiting for the route"),
    ("route missing does not stop an abort", ENTERED, MISSING, Controls(abort="x"), None, None, 5, "Rollback",
     "aborted"),
    ("route missing: a promote waits for it (never skips a weight the gateway did not carry)", ENTERED, MISSING,
     Controls(promote="p"), None, None, 5, "Hold", "promote waits for the route"),
    ("steps shortened below the current step: the last step", in_step(2, 40, 0, last_verdict=OK), ROUTE_OK,
     Controls(), None, None, 61, "Promote", "all steps passed"),
    ("pending, rule held by another rollout: wait", status(), HELD, Controls(), None, None, 0, "Hold",
     "CanaryRollout one"),
    ("pending, rule held by another rollout: abort still acts", status(), HELD, Controls(abort="x"), None, None,
     0, "Rollback", "aborted"),
    ("pending, candidate not there yet: wait", status(), ROUTE_OK, Controls(), "StudentModel s not found", None,
     0, "Hold", "not found"),
    ("pending, candidate is the baseline: fail", status(), ROUTE_OK, Controls(), None, SAME, 0, "Fail",
     "baseline itself"),
    ("started, candidate deleted: roll back", in_step(0, 10, 0), ROUTE_OK, Controls(), GONE, None, 5,
     "Rollback", GONE),
    ("paused, candidate deleted: roll back", in_step(0, 10, 0, phase="Paused", pause_reason="Manual"), ROUTE_OK,
     Controls(), GONE, None, 5, "Rollback", GONE),
    ("promoted, candidate deleted while the baseline is kept: roll back",
     status(phase="Promoted", promoted_at=at(0), current_weight=100), ROUTE_OK, Controls(), GONE, None, 5,
     "Rollback", "baseline was still kept"),
    ("promoted and released, candidate deleted: nothing left to roll back to",
     status(phase="Promoted", promoted_at=at(0), current_weight=100, baseline_released_at=at(1)), ROUTE_OK,
     Controls(), GONE, None, 5, "Hold", ""),
]


@pytest.mark.parametrize(
    ("status_", "route", "controls", "gone", "invalid", "now", "kind", "reason"),
    [c[1:] for c in ROUTE_CASES],
    ids=[c[0] for c in ROUTE_CASES],
)
def test_next_action_route_and_candidate(
    status_: CanaryRolloutStatus, route: RouteView, controls: Controls, gone: str | None, invalid: str | None,
    now: float, kind: str, reason: str,
) -> None:
    action = next_action(SPEC, status_, None, [], at(now), controls, route=route, candidate_gone=gone,
                         candidate_invalid=invalid)
    assert action.kind == kind
    assert reason in action.reason


def test_a_deferred_promote_stays_pending() -> None:
    from kubestill.logic.canary_controls import handled_controls

    action = next_action(SPEC, ENTERED, None, [], at(5), Controls(promote="p2"), route=MISSING)
    assert action.defer == ("kubestill.io/promote",)
    handled = handled_controls({"kubestill.io/promote": "p2"}, {"kubestill.io/promote": "p1"}, action.defer)
    assert pending_controls({"kubestill.io/promote": "p2"}, handled) == Controls(promote="p2")
