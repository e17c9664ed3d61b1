"""A CanaryRollout's HTTPRoute, as I/O: make it carry what the status says and report what it carries
(RouteView), and find which rollout holds a route rule (kopf's index of claims; the choice is
logic/canary_route.route_holder). What it remembers per rollout lives in one RouteSync, built with the
CanaryRollout controller.

A shadow step mirrored through Traefik also needs its TraefikService: applied before the route names it, so the
route never points at a TraefikService that does not exist, and deleted a grace period after the route stopped
naming it (logic/shadow_mirror.py says when). With agreement analysis the mirror (filter or TraefikService) goes to
the rollout's judge, which the caller applies first (handlers/canary_judge.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from kubestill.api.names import shadow_service_name
from kubestill.api.v1alpha1.canaryrollout import BackendRef, CanaryRolloutSpec, CanaryRolloutStatus, ShadowMirror
from kubestill.builders.httproute import RouteError, build_httproute_weights, desired_observation, observe_route
from kubestill.builders.judge import judge_backend
from kubestill.builders.traefikservice import build_traefik_mirror, mirror_current
from kubestill.clients import gateway, traefik
from kubestill.clients.kube import ApiError, KubeClient
from kubestill.logic.canary import ROUTE_OK, RouteView, holds_route
from kubestill.logic.canary_route import RouteClaim, route_holder
from kubestill.logic.canary_status import RouteState, route_state
from kubestill.logic.shadow_mirror import MIRROR_SETTLE_GRACE, mirror_release_at, mirror_settled_at
from kubestill.runtime import Key

log = logging.getLogger("kubestill.canary")

# A route observation confirmed this recently (seconds) is not read again: skips a GET in steady state.
ROUTE_RECHECK = 10.0
# A route that cannot carry the rollout is retried after RETRY, doubling up to ROUTE_BACKOFF_MAX.
RETRY = 5.0
ROUTE_BACKOFF_MAX = 60.0
# The route changed between our read and our apply (409): read it again at once.
ROUTE_RETRY = RouteView(False, "Conflict", "the route changed while it was written")
# RouteView reason: the rollout's TraefikService is too new for the route to name it (logic/shadow_mirror.py); the
# handler looks again after MIRROR_POLL, no backoff, no Warning.
MIRROR_SETTLING = "TraefikServiceSettling"
MIRROR_POLL = 1.0  # seconds
# Every rollout's claim on its route rule, kept by kopf's index (complete before the first event is handled).
CLAIMS_INDEX = "canary_claims"


def index_claim(body: Mapping[str, Any]) -> dict[tuple[str, str, int], RouteClaim] | None:
    """A rollout's claim on its route rule, keyed by (namespace, route, ruleIndex)."""
    meta = body["metadata"]
    try:
        spec = CanaryRolloutSpec.model_validate(body.get("spec") or {})
        status = CanaryRolloutStatus.model_validate(body.get("status") or {})
    except ValidationError:
        return None
    claim = RouteClaim(meta.get("creationTimestamp") or "", meta["name"], spec.route.name, spec.route.rule_index,
                       holds_route(status))
    return {(meta["namespace"], spec.route.name, spec.route.rule_index): claim}


def claims(indexes: Mapping[str, Any], namespace: str, route: str, rule: int) -> list[RouteClaim]:
    """The claims of every rollout on one route rule (kopf's index of claims in `indexes`)."""
    store = indexes.get(CLAIMS_INDEX)
    if store is None:
        return []
    return list(store.get((namespace, route, rule), ()))


def holder(indexes: Mapping[str, Any], key: Key, spec: CanaryRolloutSpec, status: CanaryRolloutStatus,
           meta: Mapping[str, Any]) -> str | None:
    """The rollout holding this rollout's route rule (see logic/canary_route.py), from the index of every
    CanaryRollout, with this rollout's own claim taken from its latest status."""
    namespace, name = key
    mine = RouteClaim(meta.get("creationTimestamp") or "", name, spec.route.name, spec.route.rule_index,
                      holds_route(status))
    others = [c for c in claims(indexes, namespace, spec.route.name, spec.route.rule_index) if c.name != name]
    return route_holder([*others, mine], spec.route.name, spec.route.rule_index)


class RouteSync:
    """What the route writer remembers per rollout: the observation last confirmed and when (monotonic), and
    how many times in a row the route could not carry the rollout (its backoff)."""

    def __init__(self) -> None:
        self._route_ok: dict[Key, tuple[Any, float]] = {}
        self._route_failures: dict[Key, int] = {}
        # Rollouts whose TraefikService was deleted (by this process): not deleted again.
        self._mirror_gone: set[Key] = set()
        # The TraefikService (uid) each rollout's route waits for, and when this process first saw it (monotonic):
        # bounds the wait by this clock too, should the API server's clock run ahead of ours.
        self._mirror_seen: dict[Key, tuple[str, float]] = {}

    def forget(self, key: Key) -> None:
        self._route_ok.pop(key, None)
        self._route_failures.pop(key, None)
        self._mirror_gone.discard(key)
        self._mirror_seen.pop(key, None)

    def routable(self, key: Key) -> None:
        """The route carries the rollout again: the next problem starts its backoff from the beginning."""
        self._route_failures.pop(key, None)

    async def sync_route(
        self, api: KubeClient, key: Key, spec: CanaryRolloutSpec, status: CanaryRolloutStatus, candidate: BackendRef,
        rollout: Mapping[str, Any],
    ) -> RouteView:
        """Make the route (and, for a shadow step mirrored through Traefik, the TraefikService first) carry what
        `status` implies and say whether it does (from the route as read, or as the API server returned it after
        our apply). A GET only when the wanted weights changed or the last check is old. ROUTE_RETRY: the route
        changed under us (409), read it again. `rollout`: the rollout's manifest (the TraefikService's owner)."""
        state = route_state(spec, status)
        want = desired_observation(state.candidate_weight, state.mirror_percent, state.keep_baseline, state.mirror,
                                   state.to_judge)
        seen = self._route_ok.get(key)
        if seen is not None and seen[0] == want and time.monotonic() - seen[1] < ROUTE_RECHECK:
            return ROUTE_OK
        self._route_ok.pop(key, None)
        route_name, rule = spec.route.name, spec.route.rule_index
        # Always named, so an entry of it is recognised (and turned back into the baseline's) in any state.
        shadow = shadow_service_name(key[1])
        judge = judge_backend(key[1])  # likewise: a mirror to it is ours in any state
        mirrored = await self._sync_mirror(api, key, rollout, spec, state, judge if state.to_judge else candidate)
        if isinstance(mirrored, RouteView):
            return mirrored
        try:
            route = await gateway.get_route(api, key[0], route_name)
            if route is None:
                return RouteView(False, "RouteNotFound", f"HTTPRoute {route_name} not found in namespace {key[0]}")
            repaired = observe_route(route, rule, spec.baseline, candidate, shadow, judge) != want
            if repaired:
                patch = build_httproute_weights(route, rule, spec.baseline, candidate, state.candidate_weight,
                                                state.mirror_percent, state.keep_baseline, state.mirror, shadow,
                                                judge, state.to_judge)
                route = await gateway.apply_route(api, patch)
                log.info("%s/%s: route %s weights %d/%d", *key, route_name, 100 - state.candidate_weight,
                         state.candidate_weight)
            if observe_route(route, rule, spec.baseline, candidate, shadow, judge) != want:
                return RouteView(False, "RouteWriteFailed", f"HTTPRoute {route_name} does not keep the weights written "
                                 "to it (an admission webhook or another controller changes them)")
        except RouteError as err:
            return RouteView(False, err.reason, str(err))
        except ApiError as err:
            if err.status == 409:
                return ROUTE_RETRY
            if err.status == 404:
                return RouteView(False, "RouteNotFound", f"HTTPRoute {route_name} not found in namespace {key[0]}")
            return RouteView(False, "RouteWriteFailed", f"cannot write HTTPRoute {route_name}: {err}")
        self._route_ok[key] = (want, time.monotonic())
        return RouteView(True, repaired=True) if repaired or mirrored else ROUTE_OK

    async def _sync_mirror(self, api: KubeClient, key: Key, rollout: Mapping[str, Any], spec: CanaryRolloutSpec,
                           state: RouteState, target: BackendRef) -> RouteView | bool:
        """In a step mirrored through Traefik, make the rollout's TraefikService mirror to `target` (the candidate,
        or the judge) what the step wants:
        True when it had to be written (created, or changed by someone else), False when it already did (or the
        state needs none); a RouteView saying why not when it cannot be written, or MIRROR_SETTLING while it is
        too new for the route to name (logic/shadow_mirror.mirror_settled_at)."""
        if state.mirror != ShadowMirror.TRAEFIK_SERVICE or state.mirror_percent is None:
            return False
        namespace = rollout["metadata"]["namespace"]
        want = build_traefik_mirror(rollout, spec.baseline, target, state.mirror_percent)
        name = want["metadata"]["name"]
        try:
            live = await traefik.get_traefik_service(api, namespace, name)
            written = not mirror_current(live, want)
            if written:
                live = await traefik.apply_traefik_service(api, want)
        except traefik.MirrorUnavailable:
            return RouteView(False, "TraefikServiceUnavailable", "spec.shadow.mirror is TraefikService but the "
                             "cluster serves no TraefikService (traefik.io/v1alpha1): install Traefik's CRDs, or "
                             "use mirror RequestMirror on a gateway that implements it; the route is left as it was")
        except ApiError as err:
            return RouteView(False, "MirrorWriteFailed", f"cannot write TraefikService {name}: {err}")
        if written:
            log.info("%s/%s: TraefikService %s mirrors %d%% to %s", namespace, rollout["metadata"]["name"], name,
                     state.mirror_percent, target.name)
        settling = self._settling(key, live or {})
        return settling if settling is not None else written

    def _settling(self, key: Key, live: Mapping[str, Any]) -> RouteView | None:
        """MIRROR_SETTLING while the TraefikService `live` is younger than MIRROR_SETTLE_GRACE by the API server's
        creationTimestamp and by the time this process first saw it; None once the route may name it."""
        meta = live.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        seen = self._mirror_seen.get(key)
        if seen is None or seen[0] != uid:
            seen = self._mirror_seen[key] = (uid, time.monotonic())
        stamp = meta.get("creationTimestamp")
        created = datetime.fromisoformat(stamp) if isinstance(stamp, str) else None
        settled = mirror_settled_at(created)
        grace = MIRROR_SETTLE_GRACE.total_seconds()
        if (settled is not None and datetime.now(UTC) >= settled) or time.monotonic() - seen[1] >= grace:
            return None
        return RouteView(False, MIRROR_SETTLING, f"TraefikService {meta.get('name')} is new: the route names it "
                         f"{grace:g} s after its creation, once Traefik has loaded it (a route naming a "
                         "TraefikService Traefik does not have yet is dropped, and its requests answered 404)")

    async def release_mirror(self, api: KubeClient, key: Key, spec: CanaryRolloutSpec, status: CanaryRolloutStatus,
                             now: datetime) -> float | None:
        """Delete the rollout's TraefikService once the route has been without it long enough
        (logic/shadow_mirror.py); seconds until that is due (or a retry after a refused delete), None when
        there is nothing left to do."""
        if key in self._mirror_gone:
            return None
        due = mirror_release_at(spec, status)
        if due is None:
            return None
        if now < due:
            return (due - now).total_seconds()
        name = shadow_service_name(key[1])
        try:
            await traefik.delete_traefik_service(api, key[0], name)
        except ApiError as err:
            log.warning("%s/%s: TraefikService %s not deleted yet: %s", *key, name, err)
            return RETRY
        self._mirror_gone.add(key)
        log.info("%s/%s: TraefikService %s deleted (the shadow step is over)", *key, name)
        return None


    def backoff(self, key: Key) -> float:
        """Retry a route that cannot carry the rollout after 5 s, doubling to at most ROUTE_BACKOFF_MAX."""
        failures = self._route_failures.get(key, 0)
        self._route_failures[key] = failures + 1
        return min(RETRY * 2.0**failures, ROUTE_BACKOFF_MAX)
