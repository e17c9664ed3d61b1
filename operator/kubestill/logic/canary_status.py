"""Apply an action to the status (pure), and derive the route weights the status implies.

The status is the rollout's intent log: the handler writes it first, then makes the HTTPRoute match
`route_state(spec, status)`. A crash between the two is repaired on the next tick, because the route is
always reconciled to the status, never the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from kubestill.api.v1alpha1._base import Condition, ConditionStatus
from kubestill.api.v1alpha1.canaryrollout import (
    CanaryRolloutSpec,
    CanaryRolloutStatus,
    HistoryEntry,
    MeasurementResult,
    RolloutPhase,
    ShadowMirror,
)

from .analysis import AnalysisRound
from .canary import ACTIVE_PHASES, Action, ActionKind, RouteView, step_entered, step_pause
from .conditions import set_condition

# Bounds keep the object far below etcd's 1.5 MiB limit even for rollouts that run for weeks.
MAX_MEASUREMENTS = 30
MAX_HISTORY = 50


# Fields a routine healthy round changes; see routine_round.
# A continuing sequential test's counts are routine too: a lost round is counted again from Prometheus.
ROUND_FIELDS = {"measurements", "last_analysis_at", "sequential"}


def routine_round(old: CanaryRolloutStatus, new: CanaryRolloutStatus) -> bool:
    """True when `new` only adds a successful round to an already healthy step: nothing a restart would need
    (a lost routine round is simply measured again), so the handler may batch such writes.

    >>> from datetime import UTC
    >>> old = CanaryRolloutStatus(phase="Progressing", last_verdict="Successful")
    >>> routine_round(old, old.model_copy(update={"last_analysis_at": datetime(2026, 1, 1, tzinfo=UTC)}))
    True
    >>> routine_round(old, old.model_copy(update={"last_verdict": "Inconclusive"}))
    False
    """
    healthy = MeasurementResult.SUCCESSFUL
    return (
        old.last_verdict == healthy
        and new.last_verdict == healthy
        and old.model_dump(exclude=ROUND_FIELDS) == new.model_dump(exclude=ROUND_FIELDS)
    )


@dataclass(frozen=True)
class RouteState:
    """What the route should say: the candidate's weight (the baseline gets the rest), the mirror percent
    (None: no mirror), how it is mirrored (the RequestMirror filter, or a TraefikService in the baseline's
    place) and whether the baseline entry stays in the route."""

    candidate_weight: int
    mirror_percent: int | None = None
    keep_baseline: bool = True
    mirror: ShadowMirror = ShadowMirror.REQUEST_MIRROR
    # The mirror goes to the rollout's agreement judge (spec.analysis.agreement), not to the candidate.
    to_judge: bool = False


def route_state(spec: CanaryRolloutSpec, status: CanaryRolloutStatus) -> RouteState:
    """The route implied by the status.

    >>> spec = CanaryRolloutSpec.model_validate({"route": {"name": "r"}, "baseline": {"name": "b", "port": 80},
    ...     "candidate": {"service": {"name": "c", "port": 80}}, "steps": [{"weight": 10}],
    ...     "shadow": {"percent": 50, "pause": "1m", "mirror": "TraefikService"}})
    >>> state = route_state(spec, CanaryRolloutStatus(phase="Progressing", shadowing=True))
    >>> state.candidate_weight, state.mirror_percent, state.keep_baseline, str(state.mirror)
    (0, 50, True, 'TraefikService')

    With agreement analysis, `samplePercent` % is mirrored to the judge, in the weighted steps too:

    >>> from kubestill.api.v1alpha1.canary_agreement import AgreementSpec
    >>> from kubestill.api.v1alpha1.canaryrollout import AnalysisSpec
    >>> judged = spec.model_copy(update={"analysis": AnalysisSpec(prometheus_url="http://p",
    ...     agreement=AgreementSpec(min_rate=0.9, task="classification", sample_percent=5))})
    >>> route_state(judged, CanaryRolloutStatus(phase="Progressing", current_step=0, current_weight=10))
    RouteState(candidate_weight=10, mirror_percent=5, keep_baseline=True, mirror='TraefikService', to_judge=True)
    """
    phase = status.phase
    if phase == RolloutPhase.PROMOTED:
        return RouteState(100, None, keep_baseline=status.baseline_released_at is None)
    if phase not in (RolloutPhase.PROGRESSING, RolloutPhase.PAUSED):
        return RouteState(0)
    agreement = spec.analysis.agreement if spec.analysis is not None else None
    mirror = spec.shadow.mirror if spec.shadow is not None else ShadowMirror.REQUEST_MIRROR
    if agreement is not None:
        # The judge asks the candidate itself: it is the one mirror target, in the shadow step and every step.
        weight = 0 if status.shadowing else status.current_weight
        return RouteState(weight, agreement.sample_percent, mirror=mirror, to_judge=True)
    if status.shadowing and spec.shadow is not None:
        return RouteState(0, spec.shadow.percent, mirror=spec.shadow.mirror)
    return RouteState(status.current_weight)


def _record(status: CanaryRolloutStatus, analysis: AnalysisRound | None) -> CanaryRolloutStatus:
    """Fold one analysis round into the step's counters and the bounded measurement list."""
    if analysis is None:
        return status
    failed = analysis.verdict == MeasurementResult.FAILED
    inconclusive = analysis.verdict == MeasurementResult.INCONCLUSIVE
    return status.model_copy(
        update={
            "measurements": [*status.measurements, *analysis.measurements][-MAX_MEASUREMENTS:],
            "last_analysis_at": analysis.at,
            "last_verdict": analysis.verdict,
            "step_failures": status.step_failures + (1 if failed else 0),
            "consecutive_inconclusive": status.consecutive_inconclusive + 1 if inconclusive else 0,
            "sequential": analysis.sequential.status if analysis.sequential is not None else status.sequential,
        }
    )


def _enter_step(spec: CanaryRolloutSpec, status: CanaryRolloutStatus, step: int, now: datetime) -> dict[str, object]:
    """Fields that change when a step (or, with step -1, the shadow step) is entered: its counters; its clock
    waits for the route."""
    return {
        "phase": RolloutPhase.PROGRESSING,
        "current_step": step,
        "current_weight": 0 if step < 0 else spec.steps[step].weight,
        "shadowing": step < 0,
        "step_entered_at": now,
        # The clock starts when the route carries the step (start_clocks), not when it is decided.
        "step_started_at": None,
        "next_step_at": None,
        "step_failures": 0,
        "consecutive_inconclusive": 0,
        "last_verdict": None,
        "paused_at": None,
        "pause_reason": None,
        "sequential": None,  # a new step starts a new sequential test
    }


def _condition(status: CanaryRolloutStatus, new: Condition, now: datetime) -> list[Condition]:
    return set_condition(status.conditions, new, now)


def _conditions(status: CanaryRolloutStatus, generation: int | None, now: datetime) -> list[Condition]:
    progressing = {
        RolloutPhase.PENDING: (ConditionStatus.TRUE, "Pending"),
        RolloutPhase.PROGRESSING: (ConditionStatus.TRUE, "StepProgressing"),
        RolloutPhase.PAUSED: (ConditionStatus.UNKNOWN, "Paused"),
        RolloutPhase.PROMOTED: (ConditionStatus.FALSE, "Promoted"),
        RolloutPhase.ROLLED_BACK: (ConditionStatus.FALSE, "RolledBack"),
        RolloutPhase.FAILED: (ConditionStatus.FALSE, "Failed"),
    }[RolloutPhase(status.phase)]
    conds = _condition(
        status,
        Condition(
            type="Progressing", status=progressing[0], reason=progressing[1], message=status.message,
            observed_generation=generation,
        ),
        now,
    )
    verdict = status.last_verdict
    if status.phase == RolloutPhase.ROLLED_BACK:
        healthy = (ConditionStatus.FALSE, "RolledBack")
    elif verdict is None:
        healthy = (ConditionStatus.UNKNOWN, "NotMeasured")
    else:
        healthy = {
            MeasurementResult.SUCCESSFUL: (ConditionStatus.TRUE, "AnalysisSuccessful"),
            MeasurementResult.FAILED: (ConditionStatus.FALSE, "AnalysisFailed"),
        }.get(MeasurementResult(verdict), (ConditionStatus.UNKNOWN, "AnalysisInconclusive"))
    return _condition(
        status.model_copy(update={"conditions": conds}),
        Condition(type="Healthy", status=healthy[0], reason=healthy[1], observed_generation=generation),
        now,
    )


def apply_action(
    spec: CanaryRolloutSpec,
    status: CanaryRolloutStatus,
    action: Action,
    analysis: AnalysisRound | None,
    now: datetime,
    generation: int | None = None,
    handled: dict[str, str] | None = None,
) -> CanaryRolloutStatus:
    """The status after recording `analysis` and carrying out `action` at `now`.

    HOLD only records the round; every other action appends one history entry, so the history is the exact
    sequence of steps taken (what the restart tests compare).
    """
    new = _record(status, analysis)
    update: dict[str, object] = {"observed_generation": generation}
    if handled is not None:
        update["handled_annotations"] = handled
    kind = action.kind
    update.update(_transition(spec, new, action, now))
    if kind != ActionKind.HOLD:
        new = new.model_copy(update=update)
        update = {"message": _message(spec, new, action)}
        entry = HistoryEntry(
            at=now, action=str(kind), step=new.current_step, weight=new.current_weight, reason=action.reason
        )
        update["history"] = [*new.history, entry][-MAX_HISTORY:]
    elif new.phase == RolloutPhase.PROGRESSING:
        update["message"] = action.reason or _message(spec, new, action)
    elif new.phase == RolloutPhase.PENDING and action.reason:
        update["message"] = action.reason
    new = new.model_copy(update=update)
    return new.model_copy(update={"conditions": _conditions(new, generation, now)})


def _transition(spec: CanaryRolloutSpec, new: CanaryRolloutStatus, action: Action,
                now: datetime) -> dict[str, object]:
    """The status fields an action changes (none for HOLD), by model field name."""
    kind = action.kind
    if kind == ActionKind.START:
        return _enter_step(spec, new, -1 if spec.shadow is not None else 0, now)
    if kind == ActionKind.ADVANCE:
        return _enter_step(spec, new, new.current_step + 1, now)
    if kind == ActionKind.PROMOTE:
        return dict(phase=RolloutPhase.PROMOTED, current_step=len(spec.steps) - 1, current_weight=100,
                    shadowing=False, promoted_at=None, next_step_at=None, paused_at=None, pause_reason=None)
    if kind in (ActionKind.ROLLBACK, ActionKind.FAIL):
        return dict(
            phase=RolloutPhase.ROLLED_BACK if kind == ActionKind.ROLLBACK else RolloutPhase.FAILED,
            current_weight=0, shadowing=False, next_step_at=None, paused_at=None, pause_reason=None,
            # Nothing was ever written to the route before the first step: nothing to restore.
            route_settled_at=None if step_entered(new) else now,
        )
    if kind == ActionKind.PAUSE:
        return dict(phase=RolloutPhase.PAUSED, paused_at=now, pause_reason=action.pause_reason)
    if kind == ActionKind.RESUME:
        shift = now - new.paused_at if new.paused_at is not None else None
        return dict(
            phase=RolloutPhase.PROGRESSING, paused_at=None, pause_reason=None, consecutive_inconclusive=0,
            next_step_at=new.next_step_at + shift if new.next_step_at and shift else new.next_step_at,
        )
    if kind == ActionKind.RELEASE_BASELINE:
        return {"baseline_released_at": now}
    return {}


def _message(spec: CanaryRolloutSpec, status: CanaryRolloutStatus, action: Action) -> str:
    phase = status.phase
    if phase == RolloutPhase.PROMOTED:
        if status.baseline_released_at is not None:
            return "promoted; baseline released from the route"
        return f"promoted; baseline kept in the route (weight 0) for {spec.promotion.keep_baseline_for}"
    if phase == RolloutPhase.ROLLED_BACK:
        return f"rolled back: {action.reason}"
    if phase == RolloutPhase.FAILED:
        return f"failed: {action.reason}"
    if phase == RolloutPhase.PAUSED:
        return f"paused: {action.reason}"
    if status.shadowing:
        return f"shadowing {spec.shadow.percent if spec.shadow else 0}% of requests to the candidate"
    total = len(spec.steps)
    return f"step {min(status.current_step + 1, total)}/{total}: {status.current_weight}% to the candidate"


def stop_clock(status: CanaryRolloutStatus, view: RouteView) -> CanaryRolloutStatus:
    """A running step whose route stopped carrying it (deleted, its baseline removed, or changed by someone else
    and rewritten) starts its pause again once the route carries it: a pause counts only time the gateway
    carried the step's weight without a break, so no outage or drift shortens it.

    >>> from datetime import UTC
    >>> running = CanaryRolloutStatus(phase="Progressing", current_step=0, current_weight=10,
    ...     step_started_at=datetime(2026, 1, 1, tzinfo=UTC), next_step_at=datetime(2026, 1, 1, 1, tzinfo=UTC))
    >>> stop_clock(running, RouteView(True, repaired=True)).next_step_at is None
    True
    >>> stop_clock(running, RouteView(True)) == running
    True
    """
    if status.phase != RolloutPhase.PROGRESSING or status.step_started_at is None:
        return status
    if view.carries and not view.repaired:
        return status
    if view.held_by is not None or view.reason == "NotWritten":
        return status
    return status.model_copy(update={"step_started_at": None, "next_step_at": None})


def start_clocks(
    spec: CanaryRolloutSpec, status: CanaryRolloutStatus, route_carries: bool, now: datetime
) -> CanaryRolloutStatus:
    """Start what waits for the route, once the route carries what the status says: the entered step's clock
    (stepStartedAt, nextStepAt), the promotion's (promotedAt, from which keepBaselineFor counts), and the end
    of the rollout's hold on the route (routeSettledAt, once rolled back or the baseline released).

    >>> from datetime import UTC
    >>> spec = CanaryRolloutSpec.model_validate({"route": {"name": "r"}, "baseline": {"name": "b", "port": 80},
    ...     "candidate": {"service": {"name": "c", "port": 80}}, "steps": [{"weight": 10, "pause": "1m"}]})
    >>> entered = CanaryRolloutStatus(phase="Progressing", current_step=0, current_weight=10,
    ...     step_entered_at=datetime(2026, 1, 1, tzinfo=UTC))
    >>> start_clocks(spec, entered, False, datetime(2026, 1, 1, 0, 5, tzinfo=UTC)).next_step_at is None
    True
    >>> start_clocks(spec, entered, True, datetime(2026, 1, 1, 0, 5, tzinfo=UTC)).next_step_at.isoformat()
    '2026-01-01T00:06:00+00:00'
    """
    if not route_carries:
        return status
    phase = status.phase
    if phase == RolloutPhase.PROGRESSING and step_entered(status) and status.step_started_at is None:
        pause = step_pause(spec, status.current_step)
        return status.model_copy(
            update={"step_started_at": now, "next_step_at": now + pause if pause is not None else None}
        )
    if phase == RolloutPhase.PROMOTED and status.promoted_at is None:
        return status.model_copy(update={"promoted_at": now})
    settled = phase == RolloutPhase.ROLLED_BACK or (
        phase == RolloutPhase.PROMOTED and status.baseline_released_at is not None
    )
    if settled and status.route_settled_at is None:
        return status.model_copy(update={"route_settled_at": now})
    return status


def route_condition(
    status: CanaryRolloutStatus, view: RouteView, generation: int | None, now: datetime
) -> CanaryRolloutStatus:
    """The RouteReady condition: True while the route carries what the status says, else False with the
    view's reason (RouteNotFound, RuleNotFound, BaselineNotInRoute, RouteWriteFailed, RouteConflict ...).
    Unchanged (same status, reason and message) it keeps its transition time, so a broken route is one
    condition, written once, not a write per retry."""
    if view.carries:
        if status.phase in ACTIVE_PHASES and status.shadowing:
            what = "the route mirrors the shadow step's share to the candidate"
        else:
            what = f"the route gives the candidate {status.current_weight}%"
        cond = Condition(type="RouteReady", status=ConditionStatus.TRUE, reason="Ready", message=what,
                         observed_generation=generation)
    else:
        cond = Condition(type="RouteReady", status=ConditionStatus.FALSE, reason=view.reason,
                         message=view.message, observed_generation=generation)
    return status.model_copy(update={"conditions": _condition(status, cond, now)})
