"""CanaryRollout: observe the route, measure, decide, write status, then make the route match the status.

One evaluation per wake-up, serialised per rollout by the shared Reconciler and re-queued for the moment
the pure logic says something may change next (the next analysis round, the end of a pause, the baseline
release; at most 30 s, so drift in the route is repaired). Watch events wake it at once, so annotations
and `kubestill rollout ...` act within a round trip.

Restart safety: the status is written first, with the resourceVersion the decision was based on (a stale
view fails with 409 and is retried on fresh data, so no step is taken twice); the route is then reconciled
to whatever the status says, so a crash between the two writes is repaired by the next evaluation. A step's
clock starts only once the route is seen carrying its weight (start_clocks), so what the gateway carries
never skips a step or shortens its pause, whenever the operator dies; a route that cannot carry the rollout
(missing, no baseline, another rollout on the same rule) holds it with one RouteReady=False condition, one
Warning Event per new reason, and retries backing off to a minute.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from kubestill.api.names import shadow_service_name
from kubestill.api.v1alpha1._base import Condition, ConditionStatus
from kubestill.api.v1alpha1.canaryrollout import (
    BackendRef,
    CanaryRolloutSpec,
    CanaryRolloutStatus,
    CandidateRef,
    RolloutPhase,
    RouteRef,
)
from kubestill.builders.httproute import RouteError, build_httproute_weights
from kubestill.builders.judge import judge_backend
from kubestill.clients import gateway, metrics
from kubestill.clients.events import post_event
from kubestill.clients.kube import ApiError, KubeClient
from kubestill.clients.prometheus import Prometheus
from kubestill.logic.agreement_queries import AGREEMENT_METRICS
from kubestill.logic.analysis import AnalysisRound
from kubestill.logic.canary import (
    ROUTE_UNSEEN,
    Action,
    ActionKind,
    RouteView,
    analysis_due,
    holds_route,
    next_wakeup,
    step_entered,
)
from kubestill.logic.canary_controls import handled_controls, pending_controls
from kubestill.logic.canary_decision import CanaryDecision, CanaryObserved, decide
from kubestill.logic.canary_route import candidate_invalid, conflict_message
from kubestill.logic.canary_status import route_condition, route_state, routine_round, start_clocks
from kubestill.logic.conditions import set_condition
from kubestill.runtime import Controller, Key, Kind
from kubestill.settings import Settings

from . import canary_finalizer
from . import canary_route_sync as route_sync
from .canary_analysis import measure
from .canary_candidate import CandidateView, resolve_candidate
from .canary_judge import JUDGE_NOT_READY, JUDGE_POLL, JudgeSync

log = logging.getLogger("kubestill.canary")

# A healthy step's routine rounds are written at most this often (transitions and anything unhealthy are
# written at once): at a thousand rollouts, one status write per round is what the API server feels most.
STATUS_REFRESH = 30.0
# Waiting for a StudentModel's Service, a missing route, a bad spec: look again this often.
RETRY = 5.0
# The route changed while it was written, or the rollout changed under a status write: decide again soon.
AGAIN = 0.2
WARNING_ACTIONS = (ActionKind.ROLLBACK, ActionKind.PAUSE, ActionKind.FAIL)
# prometheus-api-client blocks; its queries get their own threads (an Executor built at start-up, see
# handlers/operator.py) so a thousand rollouts analysing at once do not queue behind asyncio's small default
# pool (cores + 4).
PROMETHEUS_THREADS = 32

CanaryController = Controller[CanaryRolloutSpec, CanaryRolloutStatus]


def index_claim(body: Mapping[str, Any]) -> Any:
    """A rollout's claim on its route rule, for kopf's index (see canary_route_sync)."""
    return route_sync.index_claim(body)


@dataclass(frozen=True)
class Stop:
    """The reconcile ends early (the route is being changed under us, or the rollout was released)."""

    requeue: float | None


class CanaryRollouts(Kind[CanaryRolloutSpec, CanaryRolloutStatus]):
    """The CanaryRollout kind: observe the candidate, the route and the metrics; decide
    (logic/canary_decision.py); write the status (conditioned on resourceVersion), then the route."""

    def __init__(self, settings: Settings, prometheus_pool: Executor, prometheus: Prometheus) -> None:
        self.settings = settings
        self.pool = prometheus_pool
        self.prometheus = prometheus
        self.routes = route_sync.RouteSync()
        self.judges = JudgeSync(settings)
        # When each rollout's status was last written (monotonic): routine rounds are kept in memory between.
        self._persisted: dict[Key, float] = {}

    def forget(self, key: Key) -> None:
        self._persisted.pop(key, None)
        self.routes.forget(key)
        self.judges.forget(key)

    # --- events -------------------------------------------------------------------------------------------

    async def on_event(self, ctl: CanaryController, event_type: str | None, body: Mapping[str, Any],
                       kwargs: Mapping[str, Any]) -> None:
        """A CanaryRollout changed (or was listed at start-up): evaluate it now."""
        ctl.cache.refresh(kwargs)
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        deleted = event_type == "DELETED"
        self._wake_waiting(ctl, key, body, deleted)
        if deleted:
            old = ctl.cache.latest(key)
            names = [m.get("name", "") for m in ((old or {}).get("spec", {}).get("analysis") or {}).get(
                "metrics", [])]
            metrics.forget(*key, [*names, *AGREEMENT_METRICS])
        await ctl.on_event(event_type, body, kwargs)

    def _wake_waiting(self, ctl: CanaryController, key: Key, body: Mapping[str, Any], deleted: bool) -> None:
        """A rollout that no longer holds its rule (ended, or deleted) wakes the rollouts waiting for that rule."""
        claim = route_sync.index_claim(body)
        if claim is None:
            return
        ((_, route, rule), mine), = claim.items()
        if mine.holds and not deleted:
            return
        for other in route_sync.claims(ctl.cache.indexes, key[0], route, rule):
            if other.name != key[1] and other.holds:
                ctl.requeue((key[0], other.name), 0.0)

    def on_candidate_event(self, ctl: CanaryController, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A StudentModel was deleted or changed: the rollouts that roll it out decide now (a deleted candidate
        rolls back at once, not at the next periodic wake-up)."""
        if event_type not in ("DELETED", "MODIFIED"):
            return
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        for (ns, rollout), known in ctl.cache.known():
            if ns == namespace and ((known.get("spec") or {}).get("candidate") or {}).get("studentModel") == name:
                ctl.requeue((ns, rollout), 0.0)

    # --- one reconcile ------------------------------------------------------------------------------------

    async def reconcile(self, ctl: CanaryController, key: Key, body: dict[str, Any]) -> float | None:
        api = ctl.api()
        if body["metadata"].get("deletionTimestamp"):  # route-restore finalizer: restore, then release
            return await canary_finalizer.on_deleting(api, key, ctl.cache.bodies,
                                                      self.settings.route_restore_timeout)
        started = time.perf_counter()
        try:
            spec = ctl.spec_of(body)
            status = ctl.status.parse(body)
        except ValidationError as err:
            # The API server's schema and CEL rules make this rare: an object stored before a rule was tightened
            # (e.g. analysis.interval 0s), or a status written by a newer version.
            return await self._unparsable(ctl, key, body, err)
        now = datetime.now(UTC)
        observed = await self._observe(ctl, key, body, spec, status, now)
        if isinstance(observed, Stop):
            return observed.requeue
        body = ctl.cache.latest(key) or body  # the finalizer patch moved the resourceVersion
        decision = decide(spec, status, observed, now)
        if decision.drifted:
            await _event(api, body, "Warning", "RouteDrifted",
                         f"HTTPRoute {spec.route.name} no longer gave the candidate {status.current_weight}% (changed "
                         "by someone else) and was rewritten; the step's pause starts again")
        requeue = await self._apply(ctl, key, body, spec, status, observed, decision)
        metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
        return requeue

    async def _observe(self, ctl: CanaryController, key: Key, body: dict[str, Any], spec: CanaryRolloutSpec,
                       status: CanaryRolloutStatus, now: datetime) -> CanaryObserved | Stop:
        """The candidate, the route (made to carry what the status says first), and an analysis round if due."""
        api = ctl.api()
        meta = body["metadata"]
        cand = await resolve_candidate(api, key[0], spec, status)
        view = await self._route_view(ctl, key, body, spec, status, cand)
        if isinstance(view, Stop):
            return view
        round_: AnalysisRound | None = None
        alerts: list[str] = []
        if view.carries and analysis_due(spec, status, now) and cand.backend is not None:
            measured, alerts = await asyncio.get_running_loop().run_in_executor(
                self.pool, measure, self.prometheus, spec, status, key, cand.backend.name, now)
            round_ = measured
            for m in measured.measurements:
                metrics.observe_measurement(*key, m.metric, m.value, m.result)
        invalid = candidate_invalid(spec.baseline, cand.backend) if cand.backend is not None else None
        return CanaryObserved(meta.get("generation"), dict(meta.get("annotations") or {}), view, cand.backend,
                              cand.gone or cand.waiting, invalid, round_, alerts)

    async def _route_view(self, ctl: CanaryController, key: Key, body: dict[str, Any], spec: CanaryRolloutSpec,
                          status: CanaryRolloutStatus, cand: CandidateView) -> RouteView | Stop:
        holder = route_sync.holder(ctl.cache.indexes, key, spec, status, body["metadata"])
        if holder is not None and holder != key[1]:
            return RouteView(False, "RouteConflict", conflict_message(spec.route.name, spec.route.rule_index, holder),
                             held_by=holder)
        if cand.backend is None or not step_entered(status) or not holds_route(status):
            return ROUTE_UNSEEN  # nothing of ours in the route yet, or nothing left to do there
        # Make the route carry what the status says before deciding anything: after a restart between the
        # status write and the route write, this is where the route catches up, before the step's clock.
        api = ctl.api()
        gate = await canary_finalizer.before_route_write(api, key, ctl.cache.bodies, spec, status, cand.backend)
        if not gate.proceed:
            return Stop(gate.requeue)  # released: this rollout never writes its route again
        view = await self._sync_route(api, key, spec, status, cand.backend, body)
        return Stop(AGAIN) if view is route_sync.ROUTE_RETRY else view

    async def _sync_route(self, api: KubeClient, key: Key, spec: CanaryRolloutSpec, status: CanaryRolloutStatus,
                          backend: BackendRef, body: Mapping[str, Any]) -> RouteView:
        """Make the route carry `status`; when it mirrors to the agreement judge, the judge is applied first, so
        the route never names a Service that does not exist."""
        if route_state(spec, status).to_judge:
            problem = await self.judges.ensure(api, key, body, spec, backend)
            if problem is not None:
                return problem
        return await self.routes.sync_route(api, key, spec, status, backend, body)

    async def _apply(self, ctl: CanaryController, key: Key, body: dict[str, Any], spec: CanaryRolloutSpec,
                     status: CanaryRolloutStatus, observed: CanaryObserved, decision: CanaryDecision) -> float | None:
        """Write the status, announce the action, move the route when the decision did; when to look again."""
        api = ctl.api()
        new, view, backend = decision.status, observed.route, observed.candidate
        if not await self._persist(ctl, key, body, status, new, view):
            return AGAIN  # somebody changed the rollout meanwhile: decide again on the fresh object
        if decision.action.kind != ActionKind.HOLD:
            await _announce(api, body, decision.action, new)
        if route_state(spec, new) != route_state(spec, decision.clocked) and backend is not None \
                and holds_route(new) and view.held_by is None and step_entered(new):
            moved = await self._move_route(ctl, key, body, spec, new, backend)
            if isinstance(moved, Stop):
                return moved.requeue
            new, view = moved
        if backend is not None and (view.carries or new.route_settled_at is not None):
            # Finished and the route seen in its final state: give the route back (ownership, finalizer).
            await canary_finalizer.after_route_write(api, key, ctl.cache.bodies, spec, new, backend)
        metrics.observe_state(*key, new.phase, new.current_step, new.current_weight)
        look = self._next_look(key, spec, new, view, observed)
        mirror = await self.routes.release_mirror(api, key, spec, new, datetime.now(UTC))
        return look if mirror is None or (look is not None and look <= mirror) else mirror

    async def _move_route(self, ctl: CanaryController, key: Key, body: dict[str, Any], spec: CanaryRolloutSpec,
                          new: CanaryRolloutStatus, backend: BackendRef
                          ) -> tuple[CanaryRolloutStatus, RouteView] | Stop:
        """The decision moved the route (a new step, promotion, rollback): write it now, and start what waits
        for it as soon as the route carries it. The route-restore finalizer is held before the first write."""
        api = ctl.api()
        gate = await canary_finalizer.before_route_write(api, key, ctl.cache.bodies, spec, new, backend)
        if not gate.proceed:
            return Stop(gate.requeue)
        latest = ctl.cache.latest(key) or body
        view = await self._sync_route(api, key, spec, new, backend, latest)
        if view is route_sync.ROUTE_RETRY:
            return Stop(AGAIN)
        generation = body["metadata"].get("generation")
        now = datetime.now(UTC)
        after = route_condition(start_clocks(spec, new, view.carries, now), view, generation, now)
        if not await self._persist(ctl, key, latest, new, after, view):
            return Stop(AGAIN)
        return after, view

    def _next_look(self, key: Key, spec: CanaryRolloutSpec, new: CanaryRolloutStatus, view: RouteView,
                   observed: CanaryObserved) -> float | None:
        if view.held_by is not None:
            return RETRY  # the holder's end wakes this one at once (on_event); this is a safety net
        if view.reason == JUDGE_NOT_READY:
            return JUDGE_POLL  # a Pod starting, not a fault: no backoff
        if view.reason == route_sync.MIRROR_SETTLING:
            return route_sync.MIRROR_POLL  # Traefik loading the TraefikService: no backoff
        if not view.carries and view is not ROUTE_UNSEEN:
            return self.routes.backoff(key)
        self.routes.routable(key)
        if observed.candidate is None and observed.candidate_gone is not None and new.phase == RolloutPhase.PENDING:
            return RETRY
        return next_wakeup(spec, new, datetime.now(UTC))

    async def _persist(self, ctl: CanaryController, key: Key, body: Mapping[str, Any], old: CanaryRolloutStatus,
                       new: CanaryRolloutStatus, view: RouteView) -> bool:
        """Write `new` when it differs from `old` (routine healthy rounds at most every STATUS_REFRESH); a Warning
        Event when the RouteReady condition turns False or changes its reason. False on a conflict."""
        if new == old:
            return True
        if routine_round(old, new) and time.monotonic() - self._persisted.get(key, 0.0) < STATUS_REFRESH:
            # Keep it in memory (same resourceVersion) so the next decision sees this round.
            ctl.cache.remember(key, {**body, "status": new.model_dump(by_alias=True, mode="json")})
            return True
        written = await ctl.status.write(key, body, old, new)
        if written is None:
            return False
        self._persisted[key] = time.monotonic()
        before = next((c for c in old.conditions if c.type == "RouteReady"), None)
        after = next((c for c in new.conditions if c.type == "RouteReady"), None)
        # A TraefikService Traefik is still loading is a few seconds' wait, not a fault: the condition says it.
        if after is not None and after.status == ConditionStatus.FALSE and after.reason != route_sync.MIRROR_SETTLING:
            said = None if before is None else (before.status, before.reason, before.message)
            if said != (after.status, after.reason, after.message):
                await _event(ctl.api(), written, "Warning", after.reason, after.message)
        return True

    async def _unparsable(self, ctl: CanaryController, key: Key, body: Mapping[str, Any],
                          err: ValidationError) -> float:
        """A stored rollout the models refuse: say so once (a SpecValid=False condition and a Warning Event), and
        still honour an abort, which needs only the route, the baseline and the candidate's Service."""
        first = err.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        problem = f"spec.{where}: {first.get('msg', '')}; fix the spec (or abort the rollout)"
        api = ctl.api()
        meta = body["metadata"]
        raw_spec, raw_status = dict(body.get("spec") or {}), dict(body.get("status") or {})
        try:
            status = CanaryRolloutStatus.model_validate(raw_status)
        except ValidationError:
            log.error("%s/%s: cannot parse spec or status: %s", *key, err)
            return route_sync.ROUTE_BACKOFF_MAX
        controls = pending_controls(dict(meta.get("annotations") or {}), status.handled_annotations)
        now = datetime.now(UTC)
        new = status
        if controls.abort is not None and status.phase not in (RolloutPhase.ROLLED_BACK, RolloutPhase.FAILED):
            try:
                route = RouteRef.model_validate(raw_spec.get("route") or {})
                baseline = BackendRef.model_validate(raw_spec.get("baseline") or {})
                candidate = status.candidate_backend or CandidateRef.model_validate(
                    raw_spec.get("candidate") or {}).service
            except ValidationError:
                route = baseline = candidate = None  # type: ignore[assignment]
            if route is not None and baseline is not None and candidate is not None and step_entered(status):
                current = await gateway.get_route(api, key[0], route.name)
                if current is not None:
                    try:
                        patch = build_httproute_weights(current, route.rule_index, baseline, candidate, 0,
                                                        traefik_service=shadow_service_name(key[1]),
                                                        judge=judge_backend(key[1]))
                        await gateway.apply_route(api, patch)
                    except (RouteError, ApiError) as write_err:
                        problem = f"{problem}; the abort could not restore the route: {write_err}"
            new = new.model_copy(update={"phase": RolloutPhase.ROLLED_BACK, "current_weight": 0, "shadowing": False,
                                         "next_step_at": None, "message": "rolled back: aborted by user"})
            new = new.model_copy(update={"handled_annotations": handled_controls(dict(meta.get("annotations") or {}))})
        cond = Condition(type="SpecValid", status=ConditionStatus.FALSE, reason="InvalidSpec", message=problem[:1000],
                         observed_generation=meta.get("generation"))
        new = new.model_copy(update={"conditions": set_condition(new.conditions, cond, now)})
        if new != status:
            written = await ctl.status.write(key, body, status, new)
            if written is not None and not any(c.type == "SpecValid" and c.message == cond.message
                                               for c in status.conditions):
                await _event(api, written, "Warning", "InvalidSpec", cond.message)
        return route_sync.ROUTE_BACKOFF_MAX


async def _event(api: KubeClient, body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    try:
        await post_event(api, body, type_, reason, message[:1000])
    except ApiError as err:  # an Event is best effort; the status already tells the story
        log.warning("%s/%s: event not posted: %s", body["metadata"]["namespace"], body["metadata"]["name"], err)


async def _announce(api: KubeClient, body: Mapping[str, Any], action: Action, new: CanaryRolloutStatus) -> None:
    """An Event per transition, and the rollback/promotion counters."""
    meta = body["metadata"]
    metrics.count_transition(meta["namespace"], meta["name"], str(action.kind))
    type_ = "Warning" if action.kind in WARNING_ACTIONS else "Normal"
    message = new.message if not action.reason else f"{new.message} ({action.reason})"
    await _event(api, body, type_, str(action.kind), message)
