"""CanaryRollout: measure, decide, write status, then make the HTTPRoute's weights match the status.

One evaluation per wake-up, serialised per rollout by the shared Reconciler and re-queued for the moment
the pure logic says something may change next (the next analysis round, the end of a pause, the baseline
release; at most 30 s, so drift in the route is repaired). Watch events wake it at once, so annotations
and `kubestill rollout ...` act within a round trip.

Restart safety: the status is written first, with the resourceVersion the decision was based on (a stale
view fails with 409 and is retried on fresh data, so no step is taken twice); the route is then reconciled
to whatever the status says, so a crash between the two writes is repaired by the next evaluation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from kubestill.api.v1alpha1.canaryrollout import BackendRef, CanaryRolloutSpec, CanaryRolloutStatus, RolloutPhase
from kubestill.builders.httproute import RouteError, build_httproute_weights, desired_observation, observe_route
from kubestill.clients import gateway, metrics, prometheus, rollouts
from kubestill.clients.events import post_event
from kubestill.clients.kube import ApiError, KubeClient, client
from kubestill.logic.analysis import AnalysisRound, QueryResult, assess_round, matching_alerts, render_query
from kubestill.logic.canary import (
    Action,
    ActionKind,
    analysis_due,
    handled_controls,
    next_action,
    next_wakeup,
    pending_controls,
)
from kubestill.logic.canary_status import apply_action, route_state, routine_round

from . import canary_finalizer
from .reconciler import Key, Reconciler, newer

log = logging.getLogger("kubestill.canary")

# Latest known body per rollout: the watched one or the one our own write returned, whichever is newer.
_bodies: dict[Key, dict[str, Any]] = {}
# Route observation we last confirmed per rollout, and when (monotonic): skips a GET in steady state.
_route_ok: dict[Key, tuple[Any, float]] = {}
ROUTE_RECHECK = 10.0
# A healthy step's routine rounds are written at most this often (transitions and anything unhealthy are
# written at once): at a thousand rollouts, one status write per round is what the API server feels most.
STATUS_REFRESH = 30.0
_persisted: dict[Key, float] = {}
# Waiting for a StudentModel's Service, a missing route, a bad spec: look again this often.
RETRY = 5.0
WARNING_ACTIONS = (ActionKind.ROLLBACK, ActionKind.PAUSE)
# prometheus-api-client blocks; its queries get their own threads so a thousand rollouts analysing at once
# do not queue behind asyncio's small default pool (cores + 4).
_PROMETHEUS_POOL = ThreadPoolExecutor(max_workers=32, thread_name_prefix="kubestill-prometheus")


async def _reconcile(key: Key) -> float | None:
    return await reconcile(key, client())


RECONCILER = Reconciler("CanaryRollout", _reconcile)


async def on_event(event_type: str | None, body: Mapping[str, Any]) -> None:
    """A CanaryRollout changed (or was listed at start-up): evaluate it now."""
    meta = body["metadata"]
    key = (meta["namespace"], meta["name"])
    if event_type == "DELETED":
        RECONCILER.forget(key)
        _persisted.pop(key, None)
        old = _bodies.pop(key, None)
        _route_ok.pop(key, None)
        names = [m.get("name", "") for m in ((old or {}).get("spec", {}).get("analysis") or {}).get("metrics", [])]
        metrics.forget(*key, names)
        return
    known = _bodies.get(key)
    if known is not None and known["metadata"].get("resourceVersion") == meta.get("resourceVersion"):
        return  # the echo of our own status write: already decided on, and the next wake-up is scheduled
    _bodies[key] = newer(dict(body), known) or dict(body)
    await RECONCILER.run(key)


async def _candidate(
    api: KubeClient, namespace: str, spec: CanaryRolloutSpec, started: bool
) -> BackendRef | str:
    """The candidate Service, or why it is not known yet. A StudentModel must be Ready before the first
    step sends it traffic; once started, its health is the analysis' business, not a reason to stop acting
    (a rollback must still reach the route)."""
    if spec.candidate.service is not None:
        return spec.candidate.service
    name = spec.candidate.student_model or ""
    sm = await api.get("kubestill.io/v1alpha1", "StudentModel", namespace, name)
    if sm is None:
        return f"StudentModel {name} not found"
    sm_status = sm.get("status") or {}
    service = sm_status.get("serviceName")
    if not service:
        return f"waiting for StudentModel {name} to report its Service (status.serviceName)"
    if not started and sm_status.get("phase") != "Ready":
        return f"waiting for StudentModel {name} to be Ready (phase {sm_status.get('phase', 'Pending')})"
    return BackendRef(name=service, port=rollouts.TRITON_HTTP_PORT)


def _measure(spec: CanaryRolloutSpec, namespace: str, candidate: str, step: int, now: datetime) -> tuple[
    AnalysisRound, list[str]
]:
    """One analysis round (blocking: runs in a worker thread): every metric, then the firing alerts."""
    analysis = spec.analysis
    assert analysis is not None
    url = analysis.prometheus_url
    results: dict[str, QueryResult] = {}
    for metric in analysis.metrics:
        query = render_query(metric.query, candidate, spec.baseline.name, namespace)
        try:
            results[metric.name] = QueryResult(value=prometheus.query_value(url, query))
        except prometheus.PrometheusError as err:
            results[metric.name] = QueryResult(error=str(err))
    alerts: list[str] = []
    alerts_error = None
    if spec.rollback_alerts:
        try:
            firing = prometheus.firing_alerts(url)
        except prometheus.PrometheusError as err:
            alerts_error = str(err)
        else:
            subs = {"{{candidate}}": candidate, "{{baseline}}": spec.baseline.name, "{{namespace}}": namespace}
            alerts = matching_alerts(spec.rollback_alerts, firing, subs)
    return assess_round(analysis, results, step, now, alerts_error), alerts


async def reconcile(key: Key, api: KubeClient) -> float | None:
    body = _bodies.get(key)
    if body is None:
        return None
    if body["metadata"].get("deletionTimestamp"):  # route-restore finalizer: restore, then release
        return await canary_finalizer.on_deleting(api, key, _bodies)
    namespace, name = key
    started = time.perf_counter()
    try:
        spec = CanaryRolloutSpec.model_validate(body.get("spec") or {})
        status = CanaryRolloutStatus.model_validate(body.get("status") or {})
    except ValidationError as err:
        # The API server's schema and CEL rules make this rare (e.g. a status written by a newer version).
        log.error("%s/%s: cannot parse: %s", namespace, name, err)
        return RETRY
    meta = body["metadata"]
    generation = meta.get("generation")
    annotations = dict(meta.get("annotations") or {})
    now = datetime.now(UTC)

    candidate = await _candidate(api, namespace, spec, started=status.phase != RolloutPhase.PENDING)
    if isinstance(candidate, str):
        if status.phase == RolloutPhase.PENDING and status.message != candidate:
            fresh = status.model_copy(update={"message": candidate, "observed_generation": generation})
            await _write_status(api, key, body, fresh)
        return RETRY

    round_: AnalysisRound | None = None
    alerts: list[str] = []
    if analysis_due(spec, status, now):
        measured, alerts = await asyncio.get_running_loop().run_in_executor(
            _PROMETHEUS_POOL, _measure, spec, namespace, candidate.name, status.current_step, now
        )
        round_ = measured
        for m in measured.measurements:
            metrics.observe_measurement(namespace, name, m.metric, m.value, m.result)
    controls = pending_controls(annotations, status.handled_annotations)
    action = next_action(spec, status, round_, alerts, now, controls)
    new = apply_action(spec, status, action, round_, now, generation, handled_controls(annotations))
    if new != status:
        if routine_round(status, new) and time.monotonic() - _persisted.get(key, 0.0) < STATUS_REFRESH:
            # Keep it in memory (same resourceVersion) so the next decision sees this round.
            _bodies[key] = {**body, "status": new.model_dump(by_alias=True, mode="json")}
        else:
            written = await _write_status(api, key, body, new)
            if written is None:
                return 0.2  # somebody changed the rollout meanwhile: decide again on the fresh object
            _persisted[key] = time.monotonic()
    if action.kind != ActionKind.HOLD:
        await _announce(api, body, action, new)

    gate = await canary_finalizer.before_route_write(api, key, _bodies, spec, new, candidate)  # route-restore
    if not gate.proceed:  # finalizer: held before the first route write; finished rollouts never write
        return gate.requeue
    state = route_state(spec, new)
    try:
        await _sync_route(api, key, spec, candidate, state.candidate_weight, state.mirror_percent,
                          state.keep_baseline)
    except RouteError as err:
        await _route_problem(api, key, body, new, str(err))
        return RETRY
    except ApiError as err:
        if err.status != 409:
            raise
        return 0.2  # the route changed under us: rebuild from the new version
    await canary_finalizer.after_route_write(api, key, _bodies, spec, new, candidate)  # route-restore: release
    metrics.observe_state(namespace, name, new.phase, new.current_step, new.current_weight)
    metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
    return next_wakeup(spec, new, datetime.now(UTC))


async def _write_status(
    api: KubeClient, key: Key, body: Mapping[str, Any], new: CanaryRolloutStatus
) -> dict[str, Any] | None:
    """Write `new` conditioned on the body's resourceVersion; None on a conflict (stale view)."""
    try:
        written = await rollouts.patch_status(api, *key, body["metadata"].get("resourceVersion"), new)
    except ApiError as err:
        if err.status == 409:
            fresh = await rollouts.get(api, *key)
            if fresh is not None:
                _bodies[key] = newer(fresh, _bodies.get(key)) or fresh
            return None
        if err.status == 404:
            return None
        raise
    _bodies[key] = newer(written, _bodies.get(key)) or written
    return written


async def _sync_route(
    api: KubeClient,
    key: Key,
    spec: CanaryRolloutSpec,
    candidate: BackendRef,
    weight: int,
    mirror: int | None,
    keep_baseline: bool,
) -> None:
    """Make the route match; a GET only when the wanted weights changed or the last check is old."""
    want = desired_observation(weight, mirror, keep_baseline)
    seen = _route_ok.get(key)
    if seen is not None and seen[0] == want and time.monotonic() - seen[1] < ROUTE_RECHECK:
        return
    route = await gateway.get_route(api, key[0], spec.route.name)
    if route is None:
        raise RouteError(f"HTTPRoute {spec.route.name} not found in namespace {key[0]}")
    rule = spec.route.rule_index
    if observe_route(route, rule, spec.baseline, candidate) != want:
        body = build_httproute_weights(route, rule, spec.baseline, candidate, weight, mirror, keep_baseline)
        await gateway.apply_route(api, body)
        log.info("%s/%s: route %s weights %d/%d", *key, spec.route.name, 100 - weight, weight)
    _route_ok[key] = (want, time.monotonic())


async def _route_problem(
    api: KubeClient, key: Key, body: Mapping[str, Any], status: CanaryRolloutStatus, problem: str
) -> None:
    """The route cannot carry the rollout: say so in status (once) and as a Warning event."""
    _route_ok.pop(key, None)
    if status.message == problem:
        return
    latest = _bodies.get(key, body)
    await _write_status(api, key, latest, status.model_copy(update={"message": problem}))
    await post_event(api, latest, "Warning", "RouteInvalid", problem)


async def _announce(api: KubeClient, body: Mapping[str, Any], action: Action, new: CanaryRolloutStatus) -> None:
    """An Event per transition, and the rollback/promotion counters."""
    meta = body["metadata"]
    metrics.count_transition(meta["namespace"], meta["name"], str(action.kind))
    type_ = "Warning" if action.kind in WARNING_ACTIONS else "Normal"
    message = new.message if not action.reason else f"{new.message} ({action.reason})"
    try:
        await post_event(api, body, type_, str(action.kind), message[:1000])
    except ApiError as err:  # an Event is best effort; the status already tells the story
        log.warning("%s/%s: event not posted: %s", meta["namespace"], meta["name"], err)
