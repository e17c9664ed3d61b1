"""The CanaryRollout's hold on its HTTPRoute: the `kubestill.io/route-restore` finalizer and kubestill's field
ownership, from before the first route write to the route's final state, or to its restore on delete.

Three calls from the rollout's reconcile (handlers/canaryrollout.py), decided by logic/route_guard.py:

- before_route_write: holds the finalizer (with the RouteRecord of the route as it was) before kubestill first
  changes the route; a rollout that finished or was released never writes its route again.
- after_route_write: once the rollout is finished and its route observed final, gives kubestill's ownership of
  the route back (drops `kubestill-canary`'s managedFields entry, the values stay) and releases the finalizer.
- on_deleting: a deleted rollout's route gets its traffic back (a promoted one keeps its promotion), then the
  same release. Bounded: after KUBESTILL_ROUTE_RESTORE_TIMEOUT the rollout is released regardless, with a
  Warning Event saying what was left in the route. A restore that took the rollout's TraefikService out of the
  route holds the finalizer a grace period more: the garbage collector deletes the TraefikService with the
  rollout, and Traefik must have dropped it from the route first (logic/shadow_mirror.py).

Every step is idempotent (a restore of a restored route writes nothing, a give-back with nothing to give
sends nothing), so an operator killed anywhere in between repeats the steps harmlessly.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from kubestill.api.names import (
    ROUTE_LABEL,
    ROUTE_RECORD_ANNOTATION,
    ROUTE_RESTORE_FINALIZER,
    shadow_service_name,
    triton_name,
)
from kubestill.api.route_record import RouteRecord
from kubestill.api.v1alpha1.canaryrollout import BackendRef, CanaryRolloutSpec, CanaryRolloutStatus
from kubestill.builders.httproute import (
    RouteError,
    build_httproute_weights,
    build_route_record,
    build_route_restore,
    describe_rule,
    desired_observation,
    observe_route,
)
from kubestill.builders.judge import judge_backend
from kubestill.builders.meta import build_field_manager_release
from kubestill.clients import gateway, rollouts
from kubestill.clients.events import post_event
from kubestill.clients.kube import ApiError, KubeClient
from kubestill.logic import route_guard
from kubestill.logic.canary_status import route_state
from kubestill.logic.route_guard import Gate, OnDelete
from kubestill.logic.shadow_mirror import MIRROR_RELEASE_GRACE
from kubestill.runtime import Key, newer

log = logging.getLogger("kubestill.canary")

RETRY = 5.0
# Writes conditioned on a resourceVersion are retried this often on 409 before the reconcile is retried.
CONFLICT_RETRIES = 3


@dataclass(frozen=True)
class RouteGate:
    """Whether the reconcile may go on to write the route; if not, when to look again (None: on events)."""

    proceed: bool
    requeue: float | None = None


PROCEED = RouteGate(True)


async def before_route_write(
    api: KubeClient,
    key: Key,
    bodies: MutableMapping[Key, dict[str, Any]],
    spec: CanaryRolloutSpec,
    status: CanaryRolloutStatus,
    candidate: BackendRef,
) -> RouteGate:
    """Hold the finalizer before the route is first changed; stop finished and released rollouts here."""
    body = bodies[key]
    meta = body["metadata"]
    record = route_guard.record_of(meta)
    step = route_guard.gate(route_guard.holds(meta), record, route_guard.route_final(status))
    if step == Gate.WRITE:
        return PROCEED
    if step == Gate.DONE:
        return RouteGate(False)
    if step == Gate.SETTLE:
        # Finished without holding the finalizer (aborted before its first step, or finished under an operator
        # version without it): when the route carries the outcome, give back what kubestill still owns, once,
        # and never write again; otherwise hold first and write the outcome.
        route = await gateway.get_route(api, key[0], spec.route.name)
        if route is None or _at_rest(route, key[1], spec, status, candidate):
            await _give_back(api, key, bodies, spec.route.name)
            await _release(api, key, bodies, record or _fallback_record(spec, candidate))
            return RouteGate(False)
    if record is None:
        route = await gateway.get_route(api, key[0], spec.route.name)
        if route is None:
            return PROCEED  # nothing to record; the route write reports the missing route
        try:
            record = build_route_record(route, spec.route.rule_index, spec.baseline, candidate,
                                        shadow_service_name(key[1]), judge_backend(key[1]))
        except RouteError:
            return PROCEED  # the route write reports it, and writes nothing
    finalizers = [*(meta.get("finalizers") or []), ROUTE_RESTORE_FINALIZER]
    held = {"finalizers": finalizers, "annotations": {ROUTE_RECORD_ANNOTATION: record.dumps()},
            "labels": {ROUTE_LABEL: spec.route.name}}
    written = await _patch_rollout(api, key, bodies, held)
    return PROCEED if written else RouteGate(False, 0.2)


async def after_route_write(
    api: KubeClient,
    key: Key,
    bodies: MutableMapping[Key, dict[str, Any]],
    spec: CanaryRolloutSpec,
    status: CanaryRolloutStatus,
    candidate: BackendRef,
) -> None:
    """A finished rollout whose route is observed in its final state gives the route back."""
    meta = bodies[key]["metadata"]
    if not route_guard.holds(meta) or not route_guard.route_final(status):
        return
    route = await gateway.get_route(api, key[0], spec.route.name)
    if route is not None and not _at_rest(route, key[1], spec, status, candidate):
        return  # not there yet: the next reconcile writes it
    await _give_back(api, key, bodies, spec.route.name)
    await _release(api, key, bodies, route_guard.record_of(meta) or _fallback_record(spec, candidate))
    await _event(api, bodies[key], "Normal", "RouteReleased",
                 f"rollout finished: HTTPRoute {spec.route.name} given back (kubestill no longer owns or writes it)")


async def on_deleting(api: KubeClient, key: Key, bodies: MutableMapping[Key, dict[str, Any]],
                      bound: timedelta) -> float | None:
    """The rollout is being deleted: restore its route (or keep the promotion), give it back, release; after
    `bound` (Settings.route_restore_timeout) released regardless."""
    body = bodies[key]
    meta = body["metadata"]
    if not route_guard.holds(meta):
        return None
    record, status = _record_and_status(body)
    if record is None:
        await _event(api, body, "Warning", "RouteNotRestored",
                     "neither the route record nor the spec can be read: released without touching the route")
        await _drop_finalizer(api, key, bodies)
        return None

    now = datetime.now(UTC)
    action = route_guard.on_delete(status)
    shadow = shadow_service_name(key[1])
    route = None
    try:
        route = await gateway.get_route(api, key[0], record.route)
        if route is not None:
            unmirrored = await _restore(api, route, record, action, status, shadow, judge_backend(key[1]))
            await _give_back(api, key, bodies, record.route)
            if unmirrored:
                return MIRROR_RELEASE_GRACE.total_seconds()  # then released: the route is restored by then
    except (RouteError, ApiError) as err:
        deleted_at = _timestamp(meta.get("deletionTimestamp"))
        if not route_guard.restore_overdue(deleted_at, now, bound):
            log.warning("%s/%s: route not restored yet (%s); retrying", *key, err)
            return 0.2 if isinstance(err, ApiError) and err.status == 409 else RETRY
        try:
            left = describe_rule(await gateway.get_route(api, key[0], record.route), record, shadow)
        except ApiError:
            left = describe_rule(route, record, shadow)
        await _event(api, body, "Warning", "RouteNotRestored",
                     f"released after {bound} without restoring the route ({err}); left as is: {left}")
        await _drop_finalizer(api, key, bodies)
        return None
    await _event(api, body, "Normal", "RouteRestored", _restored(record, action, found=route is not None))
    await _drop_finalizer(api, key, bodies)
    return None


def _record_and_status(body: Mapping[str, Any]) -> tuple[RouteRecord | None, CanaryRolloutStatus]:
    """What a deleted rollout's route is restored to (its record, else what the spec says) and its status;
    either may be unreadable (None, or an empty status)."""
    try:
        spec: CanaryRolloutSpec | None = CanaryRolloutSpec.model_validate(body.get("spec") or {})
    except ValidationError:
        spec = None
    try:
        status = CanaryRolloutStatus.model_validate(body.get("status") or {})
    except ValidationError:
        status = CanaryRolloutStatus()
    record = route_guard.record_of(body["metadata"])
    if record is None and spec is not None:
        record = _fallback_record(spec, _spec_candidate(spec))
    return record, status


def _restored(record: RouteRecord, action: OnDelete, found: bool) -> str:
    """The RouteRestored Event's message."""
    if not found:
        return f"HTTPRoute {record.route} not found: nothing to restore"
    if action == OnDelete.KEEP_PROMOTION:
        return f"promotion kept: HTTPRoute {record.route} sends all traffic to {record.candidate.name}"
    base = "its default weight" if record.baseline_weight is None else f"weight {record.baseline_weight}"
    cand = "at weight 0" if record.candidate_declared else "removed"
    return (f"HTTPRoute {record.route} rule {record.rule_index} restored: {record.baseline.name} at {base}, "
            f"{record.candidate.name} {cand}, no mirror to it")


# --- steps ----------------------------------------------------------------------------------------------------


async def _restore(
    api: KubeClient, route: Mapping[str, Any], record: RouteRecord, action: OnDelete, status: CanaryRolloutStatus,
    traefik_service: str, judge: BackendRef,
) -> bool:
    """One restore write (or none when the route already is so); 409 propagates: re-read and retry. True when
    the write took the rollout's TraefikService `traefik_service` out of the route. A mirror to the rollout's
    `judge` goes like one to the candidate."""
    seen = observe_route(route, record.rule_index, record.baseline, record.candidate, traefik_service, judge)
    if action == OnDelete.KEEP_PROMOTION:
        keep_baseline = status.baseline_released_at is None
        if seen == desired_observation(100, None, keep_baseline):
            return False
        body = build_httproute_weights(route, record.rule_index, record.baseline, record.candidate, 100, None,
                                       keep_baseline, traefik_service=traefik_service, judge=judge)
    else:
        restored = build_route_restore(route, record, traefik_service, judge)
        if restored is None:
            return False
        body = restored
    await gateway.apply_route(api, body)
    log.info("%s/%s: route restored (%s)", body["metadata"]["namespace"], record.route, action)
    return seen.shadow_weight is not None


async def _give_back(api: KubeClient, key: Key, bodies: MutableMapping[Key, dict[str, Any]], route_name: str) -> None:
    """Drop `kubestill-canary`'s managedFields entry from the route (its values stay) unless another rollout
    on the route still writes it; conflicts are retried on a fresh read.

    The rollout first takes its own route label off: of two rollouts on one route that finish at once, the one
    that lists last then sees no other, so the route is always given back by someone."""
    namespace, name = key
    if ROUTE_LABEL in (bodies[key]["metadata"].get("labels") or {}):
        await _patch_rollout(api, key, bodies, {"labels": {ROUTE_LABEL: None}}, retry=True)
    for _ in range(CONFLICT_RETRIES):
        route = await gateway.get_route(api, namespace, route_name)
        patch = None if route is None else build_field_manager_release(route, gateway.FIELD_MANAGER)
        if patch is None:
            return
        sharing = await rollouts.list_in(api, namespace, f"{ROUTE_LABEL}={route_name}")
        others = route_guard.other_holders(sharing, name, route_name)
        if others:
            log.info("%s/%s: route %s stays owned for %s", *key, route_name, ", ".join(others))
            return
        try:
            await gateway.give_back_fields(api, namespace, route_name, patch)
        except ApiError as err:
            if err.status == 409:
                continue
            if err.status == 404:
                return
            raise
        log.info("%s/%s: field ownership of route %s given back", *key, route_name)
        return
    raise ApiError(409, "Conflict", f"HTTPRoute {route_name} kept changing while its ownership was given back")


async def _release(api: KubeClient, key: Key, bodies: MutableMapping[Key, dict[str, Any]], record: RouteRecord) -> None:
    """Mark the rollout released (never writes its route again) and drop the finalizer, in one write."""
    released = record.model_copy(update={"released_at": datetime.now(UTC)})
    meta = bodies[key]["metadata"]
    finalizers = [f for f in meta.get("finalizers") or [] if f != ROUTE_RESTORE_FINALIZER]
    done = {"finalizers": finalizers or None, "annotations": {ROUTE_RECORD_ANNOTATION: released.dumps()},
            "labels": {ROUTE_LABEL: None}}
    await _patch_rollout(api, key, bodies, done, retry=True)


async def _drop_finalizer(api: KubeClient, key: Key, bodies: MutableMapping[Key, dict[str, Any]]) -> None:
    finalizers = [f for f in bodies[key]["metadata"].get("finalizers") or [] if f != ROUTE_RESTORE_FINALIZER]
    await _patch_rollout(api, key, bodies, {"finalizers": finalizers or None, "labels": {ROUTE_LABEL: None}},
                         retry=True)


async def _patch_rollout(
    api: KubeClient,
    key: Key,
    bodies: MutableMapping[Key, dict[str, Any]],
    metadata: dict[str, Any],
    retry: bool = False,
) -> bool:
    """Patch the rollout's metadata conditioned on its resourceVersion; False on a conflict (the fresh object is
    cached for the next decision) unless `retry`, which recomputes a removal on the fresh object."""
    for _ in range(CONFLICT_RETRIES if retry else 1):
        body = bodies[key]
        if retry and "finalizers" in metadata:
            fresh = [f for f in body["metadata"].get("finalizers") or [] if f != ROUTE_RESTORE_FINALIZER]
            metadata = {**metadata, "finalizers": fresh or None}
        try:
            written = await rollouts.patch_metadata(api, *key, body["metadata"].get("resourceVersion"), metadata)
        except ApiError as err:
            if err.status == 404:
                return False
            if err.status != 409:
                raise
            fresh_body = await rollouts.get(api, *key)
            if fresh_body is None:
                return False
            bodies[key] = newer(fresh_body, bodies.get(key)) or fresh_body
            continue
        bodies[key] = newer(written, bodies.get(key)) or written
        return True
    if retry:
        raise ApiError(409, "Conflict", f"CanaryRollout {key[1]} kept changing while its finalizer was updated")
    return False


# --- helpers ----------------------------------------------------------------------------------------------------


def _at_rest(
    route: Mapping[str, Any], name: str, spec: CanaryRolloutSpec, status: CanaryRolloutStatus, candidate: BackendRef
) -> bool:
    """The route carries the finished rollout's outcome: exactly the final weights, or, after a rollback, no
    traffic and no mirror to the candidate (a rollout aborted before its first step never added it). `name`:
    the rollout's (its TraefikService is named after it)."""
    try:
        seen = observe_route(route, spec.route.rule_index, spec.baseline, candidate, shadow_service_name(name),
                             judge_backend(name))
    except RouteError:
        return True  # the rule is gone: there is no outcome kubestill could still write
    state = route_state(spec, status)
    if seen == desired_observation(state.candidate_weight, state.mirror_percent, state.keep_baseline, state.mirror,
                                   state.to_judge):
        return True
    return (state.candidate_weight == 0 and not seen.candidate_weight and seen.mirror_percent is None
            and seen.shadow_weight is None)


def _spec_candidate(spec: CanaryRolloutSpec) -> BackendRef:
    """The candidate Service from the spec alone (a StudentModel's Service name is deterministic)."""
    if spec.candidate.service is not None:
        return spec.candidate.service
    return BackendRef(name=triton_name(spec.candidate.student_model or ""), port=rollouts.TRITON_HTTP_PORT)


def _fallback_record(spec: CanaryRolloutSpec, candidate: BackendRef) -> RouteRecord:
    """When the record annotation is gone (removed by hand): restore to baseline 100 and keep the candidate at
    weight 0 (whether kubestill added it is not known; weight 0 sends it nothing)."""
    return RouteRecord(
        route=spec.route.name, rule_index=spec.route.rule_index, baseline=spec.baseline, candidate=candidate,
        candidate_declared=True,
    )


def _timestamp(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def _event(api: KubeClient, body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    try:
        await post_event(api, body, type_, reason, message)
    except ApiError as err:  # best effort: the route and the finalizer tell the story too
        log.warning("%s/%s: event %s not posted: %s", body["metadata"]["namespace"], body["metadata"]["name"],
                    reason, err)
