"""One CanaryRollout evaluation as a pure decision: what the rollout's reconcile observed (the candidate, the
route, an analysis round, the control annotations) -> the new status and the action taken. Time passed in.

The steps are the ones logic/canary.py and logic/canary_status.py define and table-test; this module only
puts them in order, as the handler ran them inline before: stop a step's clock when the route was seen
drifting, start clocks the route now carries, pick the action, record it, then note the route condition.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from kubestill.api.v1alpha1.canaryrollout import BackendRef, CanaryRolloutSpec, CanaryRolloutStatus

from .analysis import AnalysisRound
from .canary import ROUTE_UNSEEN, Action, RouteView, next_action, step_entered
from .canary_controls import handled_controls, pending_controls
from .canary_status import apply_action, route_condition, route_state, start_clocks, stop_clock


@dataclass(frozen=True)
class CanaryObserved:
    """What a rollout's reconcile found: its generation and control annotations, the candidate's Service (or
    why there is none), whether the route carries the status, and the analysis round measured now (if due)."""

    generation: int | None
    annotations: Mapping[str, str]
    route: RouteView
    candidate: BackendRef | None = None
    candidate_gone: str | None = None  # the StudentModel was deleted after the first step, or not ready before
    candidate_invalid: str | None = None
    analysis: AnalysisRound | None = None
    alerts: Sequence[str] = field(default_factory=tuple)


@dataclass(frozen=True)
class CanaryDecision:
    """The new status; `clocked`, the status before the action (its route state is what the route carries);
    `drifted`: the route had stopped carrying the current step (someone else changed it)."""

    status: CanaryRolloutStatus
    clocked: CanaryRolloutStatus
    action: Action
    drifted: bool


def decide(spec: CanaryRolloutSpec, status: CanaryRolloutStatus, observed: CanaryObserved,
           now: datetime) -> CanaryDecision:
    """The next status of a CanaryRollout and the action it records (see logic/canary.next_action)."""
    view = observed.route
    controls = pending_controls(observed.annotations, status.handled_annotations)
    stopped = stop_clock(status, view)
    clocked = start_clocks(spec, stopped, view.carries, now)
    action = next_action(spec, clocked, observed.analysis, list(observed.alerts), now, controls, route=view,
                         candidate_gone=observed.candidate_gone, candidate_invalid=observed.candidate_invalid)
    handled = handled_controls(observed.annotations, status.handled_annotations, action.defer)
    new = apply_action(spec, clocked, action, observed.analysis, now, observed.generation, handled)
    if new.candidate_backend is None and step_entered(new) and observed.candidate is not None:
        new = new.model_copy(update={"candidate_backend": observed.candidate})
    if view.carries and route_state(spec, new) == route_state(spec, clocked):
        new = start_clocks(spec, new, True, now)  # e.g. promoted from a last step already at 100%
    if view is not ROUTE_UNSEEN:
        new = route_condition(new, view, observed.generation, now)
    return CanaryDecision(new, clocked, action, drifted=stopped is not status and view.carries)
