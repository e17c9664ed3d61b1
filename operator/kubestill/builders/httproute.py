"""The HTTPRoute apply body that sets the baseline and candidate weights (and the shadow mirror filter).

Gateway API declares `spec.rules`, `backendRefs` and `filters` as atomic lists, so server-side apply cannot
own a single weight: an apply must carry the whole `spec.rules`. The builder therefore copies the route's
rules as they are and changes only the two backendRefs' weights, our RequestMirror filter and (after
promotion) the baseline entry; the client sends it with the route's resourceVersion, so a concurrent edit by
anyone else fails the apply instead of being overwritten, and the next tick rebuilds from the new route.

The same atomicity makes kubestill the owner of all of `spec.rules` while a rollout runs. At the end the route
is given back (builders/meta.py), and a deleted rollout's rule is restored from the RouteRecord taken before
the first write (`build_route_record`, `build_route_restore` below).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubestill.api.route_record import RouteRecord
from kubestill.api.v1alpha1.canaryrollout import BackendRef

GATEWAY_GROUP = "gateway.networking.k8s.io"
GATEWAY_VERSION = "v1"
HTTPROUTE_API_VERSION = f"{GATEWAY_GROUP}/{GATEWAY_VERSION}"


class RouteError(ValueError):
    """The route cannot carry the rollout (missing rule or baseline); the message says what to fix and
    `reason` is the RouteReady condition's reason (RuleNotFound, BaselineNotInRoute)."""

    def __init__(self, message: str, reason: str = "RouteInvalid") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ObservedRoute:
    """What the route says now, in rollout terms."""

    baseline_weight: int | None
    candidate_weight: int | None
    mirror_percent: int | None


def _is(ref: Mapping[str, Any], backend: BackendRef) -> bool:
    """A backendRef names a Service of ours (core group, kind Service, same namespace)."""
    return (
        ref.get("name") == backend.name
        and ref.get("port") == backend.port
        and ref.get("group", "") in ("", None)
        and ref.get("kind", "Service") == "Service"
        and "namespace" not in ref
    )


def _is_our_mirror(f: Mapping[str, Any], candidate: BackendRef) -> bool:
    mirror = f.get("requestMirror") or {}
    return f.get("type") == "RequestMirror" and _is(mirror.get("backendRef") or {}, candidate)


def _rule(route: Mapping[str, Any], rule_index: int) -> dict[str, Any]:
    rules = (route.get("spec") or {}).get("rules") or []
    if rule_index >= len(rules):
        name = (route.get("metadata") or {}).get("name")
        raise RouteError(
            f"HTTPRoute {name} has {len(rules)} rule(s); spec.route.ruleIndex {rule_index} is out of range",
            "RuleNotFound",
        )
    rule: dict[str, Any] = rules[rule_index]
    return rule


def observe_route(
    route: Mapping[str, Any], rule_index: int, baseline: BackendRef, candidate: BackendRef
) -> ObservedRoute:
    """Read the weights (Gateway API's default weight is 1) and our mirror percent from the route."""
    rule = _rule(route, rule_index)
    refs = rule.get("backendRefs") or []
    base = next((r for r in refs if _is(r, baseline)), None)
    cand = next((r for r in refs if _is(r, candidate)), None)
    mirror = next((f for f in rule.get("filters") or [] if _is_our_mirror(f, candidate)), None)
    return ObservedRoute(
        baseline_weight=None if base is None else int(base.get("weight", 1)),
        candidate_weight=None if cand is None else int(cand.get("weight", 1)),
        mirror_percent=None if mirror is None else int(mirror["requestMirror"].get("percent", 100)),
    )


def desired_observation(
    candidate_weight: int, mirror_percent: int | None = None, keep_baseline: bool = True
) -> ObservedRoute:
    """The observation a route built with these arguments gives back (to compare before applying)."""
    return ObservedRoute(
        baseline_weight=100 - candidate_weight if keep_baseline else None,
        candidate_weight=candidate_weight,
        mirror_percent=mirror_percent,
    )


def build_httproute_weights(
    route: Mapping[str, Any],
    rule_index: int,
    baseline: BackendRef,
    candidate: BackendRef,
    candidate_weight: int,
    mirror_percent: int | None = None,
    keep_baseline: bool = True,
) -> dict[str, Any]:
    """The server-side apply body for `route` giving the candidate `candidate_weight` % (the baseline the
    rest), our RequestMirror filter at `mirror_percent` (None: none) and, unless `keep_baseline` is False,
    the baseline entry; every other field of the rules is copied.

    The candidate entry is added after the baseline when missing; the baseline entry must exist (it is the
    route the user already serves from) unless the baseline was released.
    """
    meta = route.get("metadata") or {}
    rules = copy.deepcopy((route.get("spec") or {}).get("rules") or [])
    _rule(route, rule_index)
    rule = rules[rule_index]
    refs: list[dict[str, Any]] = rule.get("backendRefs") or []
    has_baseline = any(_is(r, baseline) for r in refs)
    if not has_baseline and keep_baseline:
        raise RouteError(
            f"HTTPRoute {meta.get('name')} rule {rule_index} has no backendRef {baseline.name}:{baseline.port}; "
            "add the baseline Service to it",
            "BaselineNotInRoute",
        )
    out_refs: list[dict[str, Any]] = []
    for ref in refs:
        if _is(ref, baseline):
            if keep_baseline:
                out_refs.append({**ref, "weight": 100 - candidate_weight})
        elif _is(ref, candidate):
            out_refs.append({**ref, "weight": candidate_weight})
        else:
            out_refs.append(ref)
    if not any(_is(r, candidate) for r in refs):
        out_refs.append({"name": candidate.name, "port": candidate.port, "weight": candidate_weight})
    rule["backendRefs"] = out_refs

    filters = [f for f in rule.get("filters") or [] if not _is_our_mirror(f, candidate)]
    if mirror_percent is not None:
        filters.append(
            {
                "type": "RequestMirror",
                "requestMirror": {
                    "backendRef": {"name": candidate.name, "port": candidate.port},
                    "percent": mirror_percent,
                },
            }
        )
    if filters:
        rule["filters"] = filters
    else:
        rule.pop("filters", None)

    return _apply_body(route, rules)


def _apply_body(route: Mapping[str, Any], rules: list[dict[str, Any]]) -> dict[str, Any]:
    """An apply body carrying `rules` (all of them: the list is atomic), conditioned on the route's
    resourceVersion."""
    meta = route.get("metadata") or {}
    metadata: dict[str, Any] = {"name": meta.get("name"), "namespace": meta.get("namespace")}
    if meta.get("resourceVersion"):
        metadata["resourceVersion"] = meta["resourceVersion"]
    return {
        "apiVersion": route.get("apiVersion", HTTPROUTE_API_VERSION),
        "kind": "HTTPRoute",
        "metadata": metadata,
        "spec": {"rules": rules},
    }


# --- Giving the route back: the record taken before the first write, and the restore on delete -------------


def build_route_record(
    route: Mapping[str, Any], rule_index: int, baseline: BackendRef, candidate: BackendRef
) -> RouteRecord:
    """What a restore needs to know of `route` before kubestill first changes it: whether the user declared the
    candidate backendRef (kept at weight 0 on restore, not removed) and the baseline's weight.

    A route that already carries candidate traffic or our mirror (a rollout started by an operator version
    without the record) is not pristine: its baseline weight is then not known and restored as 100.
    """
    rule = _rule(route, rule_index)
    refs = rule.get("backendRefs") or []
    base = next((r for r in refs if _is(r, baseline)), None)
    seen = observe_route(route, rule_index, baseline, candidate)
    pristine = not seen.candidate_weight and seen.mirror_percent is None
    weight: int | None = 100
    if base is not None and pristine:
        weight = (int(base["weight"]) or 100) if "weight" in base else None
    return RouteRecord(
        route=(route.get("metadata") or {}).get("name", ""),
        rule_index=rule_index,
        baseline=baseline,
        baseline_weight=weight,
        candidate=candidate,
        candidate_declared=seen.candidate_weight is not None,
    )


def build_route_restore(route: Mapping[str, Any], record: RouteRecord) -> dict[str, Any] | None:
    """The server-side apply body that gives the recorded rule its traffic back: the baseline at its recorded
    weight, the candidate backendRef removed when kubestill added it (at weight 0 when the user had declared it),
    our RequestMirror filter removed; every other field copied. None when the route already is so, so a restore
    replayed after an operator kill writes nothing.

    Raises RouteError when the rule or the baseline backendRef is gone: there is nothing to give traffic back to,
    and guessing where it should go is the user's call.
    """
    meta = route.get("metadata") or {}
    live = (route.get("spec") or {}).get("rules") or []
    _rule(route, record.rule_index)
    rules = copy.deepcopy(live)
    rule = rules[record.rule_index]
    refs: list[dict[str, Any]] = rule.get("backendRefs") or []
    if not any(_is(r, record.baseline) for r in refs):
        raise RouteError(
            f"HTTPRoute {meta.get('name')} rule {record.rule_index} has no backendRef "
            f"{record.baseline.name}:{record.baseline.port} to give the traffic back to"
        )
    out_refs: list[dict[str, Any]] = []
    for ref in refs:
        if _is(ref, record.baseline):
            ref = {k: v for k, v in ref.items() if k != "weight"}
            if record.baseline_weight is not None:
                ref["weight"] = record.baseline_weight
        elif _is(ref, record.candidate):
            if not record.candidate_declared:
                continue
            ref = {**ref, "weight": 0}
        out_refs.append(ref)
    rule["backendRefs"] = out_refs
    filters = [f for f in rule.get("filters") or [] if not _is_our_mirror(f, record.candidate)]
    if filters:
        rule["filters"] = filters
    else:
        rule.pop("filters", None)
    if rules == live:
        return None
    return _apply_body(route, rules)


def describe_rule(route: Mapping[str, Any] | None, record: RouteRecord) -> str:
    """The recorded rule's traffic in words, for the Event that says what a released rollout left behind."""
    if route is None:
        return f"HTTPRoute {record.route} not found"
    try:
        seen = observe_route(route, record.rule_index, record.baseline, record.candidate)
    except RouteError as err:
        return str(err)
    parts = [
        f"{record.baseline.name} weight {'absent' if seen.baseline_weight is None else seen.baseline_weight}",
        f"{record.candidate.name} weight {'absent' if seen.candidate_weight is None else seen.candidate_weight}",
    ]
    if seen.mirror_percent is not None:
        parts.append(f"{seen.mirror_percent}% mirrored to {record.candidate.name}")
    return f"HTTPRoute {record.route} rule {record.rule_index}: " + ", ".join(parts)
