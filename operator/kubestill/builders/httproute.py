"""The HTTPRoute apply body that sets the baseline and candidate weights (and the shadow step's mirror).

Gateway API declares `spec.rules`, `backendRefs` and `filters` as atomic lists, so server-side apply cannot
own a single weight: an apply must carry the whole `spec.rules`. The builder therefore copies the route's
rules as they are and changes only the two backendRefs' weights, our RequestMirror filter and (after
promotion) the baseline entry; the client sends it with the route's resourceVersion, so a concurrent edit by
anyone else fails the apply instead of being overwritten, and the next tick rebuilds from the new route.

With agreement analysis (spec.analysis.agreement) the mirror goes to the rollout's judge instead of the candidate
(`judge`, `to_judge`), in the shadow step and every weighted step; a filter naming either is ours.

A shadow step mirrored through Traefik (spec.shadow.mirror: TraefikService) has no filter: the baseline's entry
is replaced by a backendRef to the rollout's TraefikService (group traefik.io, kind TraefikService, the
baseline's weight and any other field of its entry kept), which sends every request to the baseline and a copy
to the candidate (builders/traefikservice.py); when the step ends the entry is turned back into the baseline's.

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
from kubestill.api.traefik import TRAEFIK_GROUP, TRAEFIK_SERVICE_KIND
from kubestill.api.v1alpha1.canaryrollout import BackendRef, ShadowMirror

GATEWAY_GROUP = "gateway.networking.k8s.io"
GATEWAY_VERSION = "v1"
HTTPROUTE_API_VERSION = f"{GATEWAY_GROUP}/{GATEWAY_VERSION}"
# The fields of a backendRef that say what it points at; the others (weight, filters) belong to the entry.
_TARGET_KEYS = ("group", "kind", "name", "namespace", "port")


class RouteError(ValueError):
    """The route cannot carry the rollout (missing rule or baseline); the message says what to fix and
    `reason` is the RouteReady condition's reason (RuleNotFound, BaselineNotInRoute)."""

    def __init__(self, message: str, reason: str = "RouteInvalid") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ObservedRoute:
    """What the route says now, in rollout terms: the weights of the baseline's and the candidate's entries
    (None: absent), our RequestMirror filter's percent (None: none) and the weight of the entry naming our
    TraefikService in the baseline's place (None: none); `judged`: our filter mirrors to the judge."""

    baseline_weight: int | None
    candidate_weight: int | None
    mirror_percent: int | None
    shadow_weight: int | None = None
    judged: bool = False


def _is(ref: Mapping[str, Any], backend: BackendRef) -> bool:
    """A backendRef names a Service of ours (core group, kind Service, same namespace)."""
    return (
        ref.get("name") == backend.name
        and ref.get("port") == backend.port
        and ref.get("group", "") in ("", None)
        and ref.get("kind", "Service") == "Service"
        and "namespace" not in ref
    )


def _is_shadow(ref: Mapping[str, Any], traefik_service: str | None) -> bool:
    """A backendRef names our TraefikService (same namespace)."""
    return (
        traefik_service is not None
        and ref.get("name") == traefik_service
        and ref.get("group") == TRAEFIK_GROUP
        and ref.get("kind") == TRAEFIK_SERVICE_KIND
        and "namespace" not in ref
    )


def _baseline_entry(ref: Mapping[str, Any], baseline: BackendRef, traefik_service: str | None,
                    weight: int | None) -> dict[str, Any]:
    """The entry carrying the baseline's share, from `ref` (the baseline's entry or our TraefikService's): the
    TraefikService when `traefik_service` is given, else the baseline Service; `weight` None: no weight key.
    Fields other than the target (e.g. per-backend filters) are kept."""
    entry = {k: v for k, v in ref.items() if k not in (*_TARGET_KEYS, "weight")}
    if traefik_service is not None:
        entry.update(group=TRAEFIK_GROUP, kind=TRAEFIK_SERVICE_KIND, name=traefik_service)
    else:
        entry.update(name=baseline.name, port=baseline.port)
    if weight is not None:
        entry["weight"] = weight
    return entry


def _is_our_mirror(f: Mapping[str, Any], candidate: BackendRef, judge: BackendRef | None = None) -> bool:
    """A RequestMirror filter of ours: to the candidate, or to the rollout's judge."""
    mirror = f.get("requestMirror") or {}
    target = mirror.get("backendRef") or {}
    return f.get("type") == "RequestMirror" and (_is(target, candidate) or (judge is not None and _is(target, judge)))


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


def _weight(ref: Mapping[str, Any] | None) -> int | None:
    return None if ref is None else int(ref.get("weight", 1))  # Gateway API's default weight is 1


def observe_route(
    route: Mapping[str, Any], rule_index: int, baseline: BackendRef, candidate: BackendRef,
    traefik_service: str | None = None, judge: BackendRef | None = None,
) -> ObservedRoute:
    """Read the weights, our mirror percent (to the candidate or, given it, the judge) and (given its name) the
    weight of our TraefikService's entry."""
    rule = _rule(route, rule_index)
    refs = rule.get("backendRefs") or []
    mirror = next((f for f in rule.get("filters") or [] if _is_our_mirror(f, candidate, judge)), None)
    judged = mirror is not None and judge is not None and _is(mirror["requestMirror"].get("backendRef") or {}, judge)
    return ObservedRoute(
        baseline_weight=_weight(next((r for r in refs if _is(r, baseline)), None)),
        candidate_weight=_weight(next((r for r in refs if _is(r, candidate)), None)),
        mirror_percent=None if mirror is None else int(mirror["requestMirror"].get("percent", 100)),
        shadow_weight=_weight(next((r for r in refs if _is_shadow(r, traefik_service)), None)),
        judged=judged,
    )


def desired_observation(
    candidate_weight: int, mirror_percent: int | None = None, keep_baseline: bool = True,
    mirror: ShadowMirror = ShadowMirror.REQUEST_MIRROR, to_judge: bool = False,
) -> ObservedRoute:
    """The observation a route built with these arguments gives back (to compare before applying). Mirrored
    through a TraefikService, the baseline's share is on the TraefikService's entry and the route carries no
    percent (the TraefikService does, and says where it mirrors to).

    >>> desired_observation(0, 50, mirror=ShadowMirror.TRAEFIK_SERVICE)
    ObservedRoute(baseline_weight=None, candidate_weight=0, mirror_percent=None, shadow_weight=100, judged=False)
    >>> desired_observation(10, 5, to_judge=True)
    ObservedRoute(baseline_weight=90, candidate_weight=10, mirror_percent=5, shadow_weight=None, judged=True)
    """
    share = 100 - candidate_weight if keep_baseline else None
    if mirror == ShadowMirror.TRAEFIK_SERVICE and mirror_percent is not None:
        return ObservedRoute(None, candidate_weight, None, share)
    return ObservedRoute(share, candidate_weight, mirror_percent, judged=to_judge and mirror_percent is not None)


def build_httproute_weights(
    route: Mapping[str, Any],
    rule_index: int,
    baseline: BackendRef,
    candidate: BackendRef,
    candidate_weight: int,
    mirror_percent: int | None = None,
    keep_baseline: bool = True,
    mirror: ShadowMirror = ShadowMirror.REQUEST_MIRROR,
    traefik_service: str | None = None,
    judge: BackendRef | None = None,
    to_judge: bool = False,
) -> dict[str, Any]:
    """The server-side apply body for `route` giving the candidate `candidate_weight` % (the baseline the
    rest), a mirror of `mirror_percent` % to the candidate, or with `to_judge` to the rollout's `judge` (None:
    no mirror) and, unless `keep_baseline` is False, the baseline entry; every other field of the rules is
    copied. A mirror filter to the candidate or to `judge` that the state does not want is removed.

    The mirror is our RequestMirror filter, or with `mirror` TraefikService the entry of our TraefikService
    `traefik_service` in the baseline's place. Given `traefik_service`, an entry naming it in a state without
    that mirror is turned back into the baseline's. The candidate entry is added after the baseline when
    missing; the baseline entry (or our TraefikService's) must exist (it is the route the user already serves
    from) unless the baseline was released. Raises RouteError (reason BaselineNotInRoute, RuleNotFound), and
    ValueError for a TraefikService mirror without its name, or a mirror to the judge without it.
    """
    if to_judge and judge is None:
        raise ValueError("a mirror to the judge needs the judge's Service")
    via = traefik_service if mirror == ShadowMirror.TRAEFIK_SERVICE and mirror_percent is not None else None
    if mirror == ShadowMirror.TRAEFIK_SERVICE and mirror_percent is not None and traefik_service is None:
        raise ValueError("a TraefikService mirror needs the TraefikService's name")
    meta = route.get("metadata") or {}
    rules = copy.deepcopy((route.get("spec") or {}).get("rules") or [])
    _rule(route, rule_index)
    rule = rules[rule_index]
    refs: list[dict[str, Any]] = rule.get("backendRefs") or []
    if keep_baseline and not any(_is(r, baseline) or _is_shadow(r, traefik_service) for r in refs):
        raise RouteError(
            f"HTTPRoute {meta.get('name')} rule {rule_index} has no backendRef {baseline.name}:{baseline.port}; "
            "add the baseline Service to it",
            "BaselineNotInRoute",
        )
    share = 100 - candidate_weight if keep_baseline else None
    rule["backendRefs"] = _weighted(refs, baseline, candidate, traefik_service, share, candidate_weight, via)

    filters = [f for f in rule.get("filters") or [] if not _is_our_mirror(f, candidate, judge)]
    if mirror_percent is not None and via is None:
        target = judge if to_judge and judge is not None else candidate
        filters.append(
            {
                "type": "RequestMirror",
                "requestMirror": {
                    "backendRef": {"name": target.name, "port": target.port},
                    "percent": mirror_percent,
                },
            }
        )
    if filters:
        rule["filters"] = filters
    else:
        rule.pop("filters", None)

    return _apply_body(route, rules)


def _weighted(refs: list[dict[str, Any]], baseline: BackendRef, candidate: BackendRef, traefik_service: str | None,
              share: int | None, candidate_weight: int, via: str | None) -> list[dict[str, Any]]:
    """The rule's backendRefs with the baseline's share (None: its entry removed) on one entry, the baseline's
    or, with `via`, our TraefikService's; the candidate at `candidate_weight` (added last when missing)."""
    out: list[dict[str, Any]] = []
    placed = False
    for ref in refs:
        if _is(ref, baseline) or _is_shadow(ref, traefik_service):
            if share is not None and not placed:  # one entry carries the share, even if both were there
                kept = via is None and _is(ref, baseline)
                out.append({**ref, "weight": share} if kept else _baseline_entry(ref, baseline, via, share))
                placed = True
        elif _is(ref, candidate):
            out.append({**ref, "weight": candidate_weight})
        else:
            out.append(ref)
    if not any(_is(r, candidate) for r in refs):
        out.append({"name": candidate.name, "port": candidate.port, "weight": candidate_weight})
    return out


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
    route: Mapping[str, Any], rule_index: int, baseline: BackendRef, candidate: BackendRef,
    traefik_service: str | None = None, judge: BackendRef | None = None,
) -> RouteRecord:
    """What a restore needs to know of `route` before kubestill first changes it: whether the user declared the
    candidate backendRef (kept at weight 0 on restore, not removed) and the baseline's weight.

    A route that already carries candidate traffic or our mirror (a rollout started by an operator version
    without the record, or our TraefikService in the baseline's place) is not pristine: its baseline weight is
    then not known and restored as 100.
    """
    rule = _rule(route, rule_index)
    refs = rule.get("backendRefs") or []
    base = next((r for r in refs if _is(r, baseline)), None)
    seen = observe_route(route, rule_index, baseline, candidate, traefik_service, judge)
    pristine = not seen.candidate_weight and seen.mirror_percent is None and seen.shadow_weight is None
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


def build_route_restore(
    route: Mapping[str, Any], record: RouteRecord, traefik_service: str | None = None,
    judge: BackendRef | None = None,
) -> dict[str, Any] | None:
    """The server-side apply body that gives the recorded rule its traffic back: the baseline at its recorded
    weight (in the place of our TraefikService `traefik_service` when a shadow step put it there), the candidate
    backendRef removed when kubestill added it (at weight 0 when the user had declared it), our RequestMirror
    filter (to the candidate, or to the rollout's `judge`) removed; every other field copied. None when the route
    already is so, so a restore replayed after an operator kill writes nothing.

    Raises RouteError when the rule or the baseline backendRef is gone: there is nothing to give traffic back to,
    and guessing where it should go is the user's call.
    """
    meta = route.get("metadata") or {}
    live = (route.get("spec") or {}).get("rules") or []
    _rule(route, record.rule_index)
    rules = copy.deepcopy(live)
    rule = rules[record.rule_index]
    refs: list[dict[str, Any]] = rule.get("backendRefs") or []
    if not any(_is(r, record.baseline) or _is_shadow(r, traefik_service) for r in refs):
        raise RouteError(
            f"HTTPRoute {meta.get('name')} rule {record.rule_index} has no backendRef "
            f"{record.baseline.name}:{record.baseline.port} to give the traffic back to"
        )
    rule["backendRefs"] = _restored_refs(refs, record, traefik_service)
    filters = [f for f in rule.get("filters") or [] if not _is_our_mirror(f, record.candidate, judge)]
    if filters:
        rule["filters"] = filters
    else:
        rule.pop("filters", None)
    if rules == live:
        return None
    return _apply_body(route, rules)


def _restored_refs(refs: list[dict[str, Any]], record: RouteRecord,
                   traefik_service: str | None) -> list[dict[str, Any]]:
    """The rule's backendRefs as recorded: one baseline entry (ours or the TraefikService's turned back) at its
    recorded weight, the candidate's removed or at 0."""
    out: list[dict[str, Any]] = []
    placed = False
    for ref in refs:
        if _is(ref, record.baseline) or _is_shadow(ref, traefik_service):
            if placed:
                continue
            ref = _baseline_entry(ref, record.baseline, None, record.baseline_weight) if _is_shadow(
                ref, traefik_service) else {k: v for k, v in ref.items() if k != "weight"}
            if record.baseline_weight is not None:
                ref["weight"] = record.baseline_weight  # the recorded weight, or Gateway API's default (no key)
            placed = True
        elif _is(ref, record.candidate):
            if not record.candidate_declared:
                continue
            ref = {**ref, "weight": 0}
        out.append(ref)
    return out


def describe_rule(route: Mapping[str, Any] | None, record: RouteRecord, traefik_service: str | None = None) -> str:
    """The recorded rule's traffic in words, for the Event that says what a released rollout left behind."""
    if route is None:
        return f"HTTPRoute {record.route} not found"
    try:
        seen = observe_route(route, record.rule_index, record.baseline, record.candidate, traefik_service)
    except RouteError as err:
        return str(err)
    parts = [
        f"{record.baseline.name} weight {'absent' if seen.baseline_weight is None else seen.baseline_weight}",
        f"{record.candidate.name} weight {'absent' if seen.candidate_weight is None else seen.candidate_weight}",
    ]
    if seen.mirror_percent is not None:
        parts.append(f"{seen.mirror_percent}% mirrored to {record.candidate.name}")
    if seen.shadow_weight is not None:
        parts.append(f"TraefikService {traefik_service} (mirroring {record.baseline.name} to "
                     f"{record.candidate.name}) weight {seen.shadow_weight}")
    return f"HTTPRoute {record.route} rule {record.rule_index}: " + ", ".join(parts)
