"""Canary step arithmetic: from spec, status, one analysis round, firing alerts and `now` to the next action.

Pure (the clock is an argument). Every timestamp the decision needs is in status, so a decision made after an
operator restart is the decision that would have been made without it: a step is entered once (entering sets
`stepStartedAt = now`, so a long outage advances one step, never several) and never twice (the step index
only moves forward from status).

Worked examples (steps 10% for 1h, then 50% for 1h; analysis every 60s; `t` = when the rollout started):

- t+0, Pending                                   -> Start: weight 10 (entered; the route is written next)
- t+0.1s, the route is seen carrying 10%         -> the step's clock starts: nextStepAt t+0.1s+1h
- route missing or without the baseline          -> Hold: no clock, no analysis, no advance (RouteReady False)
- t+60s, round Successful                        -> Hold (pause not over)
- t+1h, round Successful                         -> Advance to step 1: weight 50, nextStepAt t+2h
- t+1h+60s, round Inconclusive (no data) x3      -> Pause (inconclusiveLimit 2 exceeded); no data never passes
- resume after 5h paused                         -> Resume: nextStepAt moves 5h later, so the step still lasts 1h
- any time, alert HighErrorRate firing           -> Rollback: weight 0, phase RolledBack, reason names the alert
- t+2h, last step over, round Successful         -> Promote: weight 100, baseline kept keepBaselineFor
- promotedAt + keepBaselineFor                   -> ReleaseBaseline: baseline removed from the route

With analysis.sequential (logic/canary_sequential.py), each round also carries the step's SPRT verdict:

- any time, the test rejects (agreement or errors) -> Rollback at once, also from the shadow step
- t+minPause, the test accepts, round Successful  -> Advance (or Promote) before the pause ends
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from kubestill.api.v1alpha1._base import parse_duration
from kubestill.api.v1alpha1.canaryrollout import (
    ANNOTATION_PROMOTE,
    MIN_ANALYSIS_INTERVAL,
    CanaryRolloutSpec,
    CanaryRolloutStatus,
    MeasurementResult,
    PauseReason,
    RolloutPhase,
)

from .analysis import AnalysisRound
from .canary_controls import NO_CONTROLS, Controls
from .canary_sequential import ends_early
from .sequential import Outcome

ACTIVE_PHASES = (RolloutPhase.PROGRESSING, RolloutPhase.PAUSED)


class ActionKind(StrEnum):
    HOLD = "Hold"
    START = "Start"
    ADVANCE = "Advance"
    PAUSE = "Pause"
    RESUME = "Resume"
    PROMOTE = "Promote"
    ROLLBACK = "Rollback"
    RELEASE_BASELINE = "ReleaseBaseline"
    FAIL = "Fail"


@dataclass(frozen=True)
class RouteView:
    """What the HTTPRoute carries, as the handler saw it after trying to make it match the status.

    `carries`: the rule holds exactly the weights (and mirror) the status implies. Otherwise `reason` (one
    CamelCase word: RouteNotFound, RuleNotFound, BaselineNotInRoute, RouteWriteFailed, RouteConflict,
    NotWritten) and `message` say why. `held_by` names another rollout that holds the same rule.
    """

    carries: bool
    reason: str = "Ready"
    message: str = ""
    held_by: str | None = None
    # The route had drifted from what the status says (someone else changed it) and was rewritten.
    repaired: bool = False


ROUTE_OK = RouteView(True)
ROUTE_UNSEEN = RouteView(False, "NotWritten", "the route has not been written for this rollout yet")


@dataclass(frozen=True)
class Action:
    """What to do now. `pause_reason` only for PAUSE; `defer`: control annotations left pending (not recorded
    as handled), to be acted on when they can be."""

    kind: ActionKind
    reason: str = ""
    pause_reason: PauseReason | None = None
    defer: tuple[str, ...] = ()


def step_pause(spec: CanaryRolloutSpec, step: int) -> timedelta | None:
    """The pause of step `step` (-1: the shadow step); None means until promoted. A step past the end of
    spec.steps (the steps were shortened mid-rollout) counts as the last one."""
    if step < 0:
        return parse_duration(spec.shadow.pause) if spec.shadow is not None else timedelta(0)
    pause = spec.steps[min(step, len(spec.steps) - 1)].pause
    return parse_duration(pause) if pause is not None else None


def analysis_interval(spec: CanaryRolloutSpec) -> timedelta | None:
    """The analysis interval, never below MIN_ANALYSIS_INTERVAL (the schema enforces it; a spec stored before
    it did, or parsed without it, still never makes the operator query Prometheus in a tight loop)."""
    if spec.analysis is None:
        return None
    return max(parse_duration(spec.analysis.interval), MIN_ANALYSIS_INTERVAL)


def baseline_release_due(spec: CanaryRolloutSpec, status: CanaryRolloutStatus) -> datetime | None:
    """When the baseline leaves the route after promotion; None when not promoted or already released."""
    if status.phase != RolloutPhase.PROMOTED or status.promoted_at is None or status.baseline_released_at:
        return None
    return status.promoted_at + parse_duration(spec.promotion.keep_baseline_for)


def analysis_due(spec: CanaryRolloutSpec, status: CanaryRolloutStatus, now: datetime) -> bool:
    """Whether to measure now: once per interval after the step started (the first round one interval in, so
    it sees traffic at the new weight), and once more when the pause ends, so a step is never passed on a
    stale round."""
    interval = analysis_interval(spec)
    if interval is None or status.phase not in ACTIVE_PHASES or status.step_started_at is None:
        return False
    last = status.last_analysis_at
    since = max(last, status.step_started_at) if last is not None else status.step_started_at
    if now >= since + interval:
        return True
    end = status.next_step_at
    return end is not None and now >= end and (last is None or last < end)


def next_wakeup(
    spec: CanaryRolloutSpec, status: CanaryRolloutStatus, now: datetime, longest: float = 30.0
) -> float:
    """Seconds until something may change without an outside event: the next analysis round, the end of
    the pause, the baseline release; at most `longest` so drift in the route is noticed."""
    due: list[datetime] = []
    interval = analysis_interval(spec)
    if status.phase in ACTIVE_PHASES and status.step_started_at is not None:
        if interval is not None:
            since = status.step_started_at
            if status.last_analysis_at is not None:
                since = max(since, status.last_analysis_at)
            due.append(since + interval)
        if status.next_step_at is not None and status.phase == RolloutPhase.PROGRESSING:
            due.append(status.next_step_at)
    release = baseline_release_due(spec, status)
    if release is not None:
        due.append(release)
    if status.phase == RolloutPhase.PENDING or (
        status.phase == RolloutPhase.PROGRESSING and not step_entered(status)
    ):
        return 0.0  # the first step is to be started now
    if not due:
        return longest
    return max(0.0, min(longest, min((d - now).total_seconds() for d in due)))


def step_entered(status: CanaryRolloutStatus) -> bool:
    """Whether a step (or the shadow step) has been decided on: Start happened. Statuses written before
    stepEnteredAt existed have only stepStartedAt."""
    return status.step_entered_at is not None or status.step_started_at is not None


def holds_route(status: CanaryRolloutStatus) -> bool:
    """Whether the rollout holds its route rule: from Pending until the route is seen in its final state."""
    if status.phase in (RolloutPhase.PENDING, *ACTIVE_PHASES):
        return True
    if status.phase == RolloutPhase.FAILED:
        return False
    return status.route_settled_at is None


def _is_last(spec: CanaryRolloutSpec, step: int) -> bool:
    return step >= len(spec.steps) - 1


def _start(
    spec: CanaryRolloutSpec, route: RouteView, candidate_gone: str | None, candidate_invalid: str | None
) -> Action:
    """Before the first step: fail on a candidate that can never be used, wait for one that is not there yet
    or for the rule another rollout holds, else start."""
    if candidate_invalid is not None:
        return Action(ActionKind.FAIL, candidate_invalid)
    if candidate_gone is not None:
        return Action(ActionKind.HOLD, candidate_gone)
    if route.held_by is not None:
        return Action(ActionKind.HOLD, route.message)
    return Action(ActionKind.START, "shadow step" if spec.shadow is not None else "first step")


def next_action(
    spec: CanaryRolloutSpec,
    status: CanaryRolloutStatus,
    analysis: AnalysisRound | None,
    alerts: Sequence[str],
    now: datetime,
    controls: Controls = NO_CONTROLS,
    route: RouteView = ROUTE_OK,
    candidate_gone: str | None = None,
    candidate_invalid: str | None = None,
) -> Action:
    """Decide the next action. `analysis` is this tick's round (None when none was due, and never taken while
    the route does not carry the step), `alerts` the firing rollback alerts, `route` what the HTTPRoute
    carries. `candidate_gone` says why the candidate cannot be used: before the first step a reason to wait,
    after it (the StudentModel was deleted) a reason to roll back. `candidate_invalid` says why it can never be
    used (e.g. it is the baseline itself): the rollout fails before sending it anything.
    Precedence: abort > candidate gone > alerts > failed analysis > promote > resume/pause > route > time.

    A step's clock (stepStartedAt, nextStepAt) starts only once the route carries its weight
    (canary_status.start_clocks), so a step is never judged, advanced or promoted on a weight the route
    does not carry: not after an operator restart between the status and the route write, and not when the
    route is missing.

    >>> from datetime import UTC
    >>> spec = CanaryRolloutSpec.model_validate({"route": {"name": "r"}, "baseline": {"name": "b", "port": 80},
    ...     "candidate": {"service": {"name": "c", "port": 80}}, "steps": [{"weight": 10, "pause": "1h"}]})
    >>> next_action(spec, CanaryRolloutStatus(), None, [], datetime(2026, 1, 1, tzinfo=UTC)).kind.value
    'Start'
    """
    phase = status.phase
    if phase == RolloutPhase.PROMOTED:
        return _after_promotion(spec, status, now, controls, candidate_gone)
    if phase in (RolloutPhase.ROLLED_BACK, RolloutPhase.FAILED):
        return Action(ActionKind.HOLD)
    if controls.abort is not None:
        return Action(ActionKind.ROLLBACK, "aborted by user")
    if phase == RolloutPhase.PENDING:
        if spec.paused or controls.pause is not None:
            reason = PauseReason.SPEC if spec.paused else PauseReason.MANUAL
            return Action(ActionKind.PAUSE, "paused before the first step", reason)
        return _start(spec, route, candidate_gone, candidate_invalid)
    ruled = (_stopped(spec, status, analysis, alerts, route, candidate_gone, candidate_invalid)
             or _user_promote(spec, status, controls, route) or _paused_or_pausing(spec, status, controls))
    if ruled is not None:
        return ruled
    if not step_entered(status):
        # Resumed from a pause taken while Pending: the first step has not begun yet.
        return _start(spec, route, candidate_gone, candidate_invalid)
    return _in_step(spec, status, analysis, now, route)


def _after_promotion(spec: CanaryRolloutSpec, status: CanaryRolloutStatus, now: datetime, controls: Controls,
                     candidate_gone: str | None) -> Action:
    """Promoted: an abort or a lost candidate still rolls back while the baseline is kept; then its release."""
    kept = status.baseline_released_at is None
    if controls.abort is not None and kept:
        return Action(ActionKind.ROLLBACK, "aborted after promotion, while the baseline was still kept")
    if candidate_gone is not None and kept:
        return Action(ActionKind.ROLLBACK, f"{candidate_gone}, while the baseline was still kept")
    release = baseline_release_due(spec, status)
    if release is not None and now >= release:
        return Action(ActionKind.RELEASE_BASELINE, f"baseline kept for {spec.promotion.keep_baseline_for}")
    return Action(ActionKind.HOLD)


def _stopped(spec: CanaryRolloutSpec, status: CanaryRolloutStatus, analysis: AnalysisRound | None,
             alerts: Sequence[str], route: RouteView, candidate_gone: str | None,
             candidate_invalid: str | None) -> Action | None:
    """What stops a started rollout, in precedence order: the candidate gone or invalid, another rollout
    holding the route, a firing alert, analysis failed past its limit. None: nothing stops it."""
    entered = step_entered(status)
    if candidate_gone is not None and entered:
        return Action(ActionKind.ROLLBACK, candidate_gone)
    if candidate_invalid is not None and entered:
        return Action(ActionKind.ROLLBACK, candidate_invalid)
    if route.held_by is not None and entered:
        return Action(ActionKind.HOLD, route.message)
    if alerts:
        return Action(ActionKind.ROLLBACK, "alert firing: " + ", ".join(alerts))
    if analysis is not None and analysis.sequential is not None and analysis.sequential.outcome is Outcome.REJECT:
        return Action(ActionKind.ROLLBACK, analysis.sequential.reason)
    failure_limit = spec.analysis.failure_limit if spec.analysis is not None else 0
    if analysis is not None and analysis.verdict == MeasurementResult.FAILED:
        failures = status.step_failures + 1
        if failures > failure_limit:
            return Action(
                ActionKind.ROLLBACK,
                f"analysis failed {failures} time(s) in this step (limit {failure_limit}): {analysis.summary()}",
            )
    return None


def _user_promote(spec: CanaryRolloutSpec, status: CanaryRolloutStatus, controls: Controls,
                  route: RouteView) -> Action | None:
    """The promote annotation: to the next step, or all the way; never past a weight the route has not carried."""
    if controls.promote is None:
        return None
    if step_entered(status) and not route.carries:
        # Skipping a pause is the user's call; skipping a weight the gateway never carried is not.
        return Action(ActionKind.HOLD, f"promote waits for the route to carry the current step: {route.message}",
                      defer=(ANNOTATION_PROMOTE,))
    if controls.promote_full or (_is_last(spec, status.current_step) and not status.shadowing):
        return Action(ActionKind.PROMOTE, "promoted by user")
    return Action(ActionKind.ADVANCE, "promoted to the next step by user")


def _paused_or_pausing(spec: CanaryRolloutSpec, status: CanaryRolloutStatus, controls: Controls) -> Action | None:
    """Paused: resume when asked (or spec.paused cleared), else hold. Running: pause when asked."""
    if status.phase == RolloutPhase.PAUSED:
        resumable = not spec.paused and (
            controls.resume is not None or status.pause_reason == PauseReason.SPEC
        )
        if resumable:
            why = "resumed by user" if controls.resume is not None else "spec.paused cleared"
            return Action(ActionKind.RESUME, why)
        return Action(ActionKind.HOLD, status.message)
    if spec.paused:
        return Action(ActionKind.PAUSE, "spec.paused is true", PauseReason.SPEC)
    if controls.pause is not None:
        return Action(ActionKind.PAUSE, "paused by user", PauseReason.MANUAL)
    return None


def _in_step(spec: CanaryRolloutSpec, status: CanaryRolloutStatus, analysis: AnalysisRound | None, now: datetime,
             route: RouteView) -> Action:
    """A running step: wait for the route, pause on too many inconclusive rounds, advance when its time is up
    and the analysis says so."""
    if not route.carries:
        what = f"{spec.shadow.percent if spec.shadow else 0}% mirrored" if status.shadowing else (
            f"{status.current_weight}%")
        return Action(ActionKind.HOLD, f"waiting for the route to carry {what} to the candidate: {route.message}")
    if status.step_started_at is None:
        return Action(ActionKind.HOLD, "waiting for the route to carry the step")
    inconclusive_limit = spec.analysis.inconclusive_limit if spec.analysis is not None else 0
    if analysis is not None and analysis.verdict == MeasurementResult.INCONCLUSIVE:
        streak = status.consecutive_inconclusive + 1
        if streak > inconclusive_limit:
            return Action(
                ActionKind.PAUSE,
                f"{streak} inconclusive analysis round(s) in a row (limit {inconclusive_limit}): "
                f"{analysis.summary()}",
                PauseReason.INCONCLUSIVE,
            )
    sequential = analysis.sequential if analysis is not None else None
    if sequential is not None and ends_early(spec, status, sequential, now) and (
            analysis is not None and analysis.verdict == MeasurementResult.SUCCESSFUL):
        return _step_over(spec, status, analysis, f" early: {sequential.reason}")
    if status.next_step_at is None or now < status.next_step_at:
        return Action(ActionKind.HOLD)
    return _step_over(spec, status, analysis)


def _step_over(spec: CanaryRolloutSpec, status: CanaryRolloutStatus, analysis: AnalysisRound | None,
               early: str = "") -> Action:
    """The step's pause is over (or `early` says why it ends before): advance (or promote after the last) once
    an analysis round succeeded."""
    if spec.analysis is not None:
        verdict = analysis.verdict if analysis is not None else status.last_verdict
        if verdict != MeasurementResult.SUCCESSFUL:
            return Action(ActionKind.HOLD, "pause over; waiting for a successful analysis round")
    if status.shadowing:
        return Action(ActionKind.ADVANCE, f"shadow step passed{early}")
    if _is_last(spec, status.current_step):
        return Action(ActionKind.PROMOTE, f"all steps passed{early}")
    # Counted from 1 as in the status message ("step 1/5: 5% to the candidate"); status.currentStep stays an index.
    return Action(ActionKind.ADVANCE, f"step {status.current_step + 1}/{len(spec.steps)} passed{early}")
