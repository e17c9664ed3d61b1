"""A CanaryRollout's HTTPRoute, as I/O: make it carry what the status says and report what it carries
(RouteView), and find which rollout holds a route rule (kopf's index of claims; the choice is
logic/canary_route.route_holder). What it remembers per rollout lives in one RouteSync, built with the
CanaryRollout controller."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from kubestill.api.v1alpha1.canaryrollout import BackendRef, CanaryRolloutSpec, CanaryRolloutStatus
from kubestill.builders.httproute import RouteError, build_httproute_weights, desired_observation, observe_route
from kubestill.clients import gateway
from kubestill.clients.kube import ApiError, KubeClient
from kubestill.logic.canary import ROUTE_OK, RouteView, holds_route
from kubestill.logic.canary_route import RouteClaim, route_holder
from kubestill.logic.canary_status import route_state
from kubestill.runtime import Key

log = logging.getLogger("kubestill.canary")

# A route observation confirmed this recently (seconds) is not read again: skips a GET in steady state.
ROUTE_RECHECK = 10.0
# A route that cannot carry the rollout is retried after RETRY, doubling up to ROUTE_BACKOFF_MAX.
RETRY = 5.0
ROUTE_BACKOFF_MAX = 60.0
# The route changed between our read and our apply (409): read it again at once.
ROUTE_RETRY = RouteView(False, "Conflict", "the route changed while it was written")
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

    def forget(self, key: Key) -> None:
        self._route_ok.pop(key, None)
        self._route_failures.pop(key, None)

    def routable(self, key: Key) -> None:
        """The route carries the rollout again: the next problem starts its backoff from the beginning."""
        self._route_failures.pop(key, None)

    async def sync_route(
        self, api: KubeClient, key: Key, spec: CanaryRolloutSpec, status: CanaryRolloutStatus, candidate: BackendRef
    ) -> RouteView:
        """Make the route carry what `status` implies and say whether it does (from the route as read, or as the
        API server returned it after our apply). A GET only when the wanted weights changed or the last check
        is old. ROUTE_RETRY: the route changed under us (409), read it again."""
        state = route_state(spec, status)
        want = desired_observation(state.candidate_weight, state.mirror_percent, state.keep_baseline)
        seen = self._route_ok.get(key)
        if seen is not None and seen[0] == want and time.monotonic() - seen[1] < ROUTE_RECHECK:
            return ROUTE_OK
        self._route_ok.pop(key, None)
        route_name, rule = spec.route.name, spec.route.rule_index
        try:
            route = await gateway.get_route(api, key[0], route_name)
            if route is None:
                return RouteView(False, "RouteNotFound", f"HTTPRoute {route_name} not found in namespace {key[0]}")
            repaired = observe_route(route, rule, spec.baseline, candidate) != want
            if repaired:
                patch = build_httproute_weights(route, rule, spec.baseline, candidate, state.candidate_weight,
                                                state.mirror_percent, state.keep_baseline)
                route = await gateway.apply_route(api, patch)
                log.info("%s/%s: route %s weights %d/%d", *key, route_name, 100 - state.candidate_weight,
                         state.candidate_weight)
            if observe_route(route, rule, spec.baseline, candidate) != want:
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
        return RouteView(True, repaired=True) if repaired else ROUTE_OK


    def backoff(self, key: Key) -> float:
        """Retry a route that cannot carry the rollout after 5 s, doubling to at most ROUTE_BACKOFF_MAX."""
        failures = self._route_failures.get(key, 0)
        self._route_failures[key] = failures + 1
        return min(RETRY * 2.0**failures, ROUTE_BACKOFF_MAX)
