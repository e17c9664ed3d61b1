"""A shadow step mirrored through Traefik (spec.shadow.mirror: TraefikService), pure: the TraefikService manifest,
the route rule with the TraefikService in the baseline's place and back, the record and the restore of such a rule,
and when the TraefikService may go. No cluster."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubestill.api.names import MANAGED_BY, MANAGER
from kubestill.api.route_record import RouteRecord
from kubestill.api.v1alpha1.canaryrollout import BackendRef, CanaryRolloutSpec, CanaryRolloutStatus, ShadowMirror
from kubestill.builders.httproute import (
    ObservedRoute,
    RouteError,
    build_httproute_weights,
    build_route_record,
    build_route_restore,
    describe_rule,
    desired_observation,
    observe_route,
)
from kubestill.builders.traefikservice import build_traefik_mirror, mirror_current
from kubestill.logic.canary_status import RouteState, route_state
from kubestill.logic.shadow_mirror import MIRROR_RELEASE_GRACE, mirror_release_at

BASE = BackendRef(name="teacher", port=8000)
CAND = BackendRef(name="student", port=8000)
TS = "rollout-shadow"
TRAEFIK = ShadowMirror.TRAEFIK_SERVICE
OURS = {"group": "traefik.io", "kind": "TraefikService", "name": TS}
USER_FILTER = {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x", "value": "1"}]}}
ROLLOUT = {"apiVersion": "kubestill.io/v1alpha1", "kind": "CanaryRollout",
           "metadata": {"name": "rollout", "namespace": "ml", "uid": "uid-7"}}


def route(refs: list[dict[str, Any]], filters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Rule 1 is the rollout's; rule 0 belongs to someone else."""
    rule: dict[str, Any] = {"matches": [{"path": {"type": "PathPrefix", "value": "/v2"}}], "backendRefs": refs}
    if filters is not None:
        rule["filters"] = filters
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "r", "namespace": "ml", "resourceVersion": "42"},
            "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [{"name": "other", "port": 80}]}, rule]}}


def applied(original: dict[str, Any], body: dict[str, Any] | None) -> dict[str, Any]:
    """The route after the API server took `body` (rules are atomic: replaced whole)."""
    if body is None:
        return original
    return {**original, "spec": {**original["spec"], "rules": body["spec"]["rules"]}}


def build(original: dict[str, Any], state: RouteState) -> dict[str, Any]:
    return build_httproute_weights(original, 1, BASE, CAND, state.candidate_weight, state.mirror_percent,
                                   state.keep_baseline, state.mirror, TS)


# --- the route rule -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("refs", "filters", "state", "want_refs", "want_filters"),
    [
        # Entering the shadow step: the TraefikService takes the baseline's place and share; no filter is added.
        ([{"name": "teacher", "port": 8000}], [USER_FILTER], RouteState(0, 25, mirror=TRAEFIK),
         [{**OURS, "weight": 100}, {"name": "student", "port": 8000, "weight": 0}], [USER_FILTER]),
        # The baseline entry's own fields (a per-backend filter) stay with the entry that carries its share.
        ([{"name": "teacher", "port": 8000, "weight": 70, "filters": [USER_FILTER]},
          {"name": "x", "port": 1, "weight": 30}], None, RouteState(0, 100, mirror=TRAEFIK),
         [{"filters": [USER_FILTER], **OURS, "weight": 100}, {"name": "x", "port": 1, "weight": 30},
          {"name": "student", "port": 8000, "weight": 0}], None),
        # Leaving it for the first step: the baseline is back, weighted, and the TraefikService's entry gone.
        ([{**OURS, "weight": 100}, {"name": "student", "port": 8000, "weight": 0}], None, RouteState(10),
         [{"name": "teacher", "port": 8000, "weight": 90}, {"name": "student", "port": 8000, "weight": 10}], None),
        # Rolled back from the shadow step.
        ([{**OURS, "weight": 100}, {"name": "student", "port": 8000, "weight": 0}], None, RouteState(0),
         [{"name": "teacher", "port": 8000, "weight": 100}, {"name": "student", "port": 8000, "weight": 0}], None),
        # Promoted straight from the shadow step, baseline kept at 0.
        ([{**OURS, "weight": 100}], None, RouteState(100),
         [{"name": "teacher", "port": 8000, "weight": 0}, {"name": "student", "port": 8000, "weight": 100}], None),
        # Both the baseline and the TraefikService in the rule (edited by hand): one entry carries the share.
        ([{"name": "teacher", "port": 8000, "weight": 50}, {**OURS, "weight": 50}], None,
         RouteState(0, 100, mirror=TRAEFIK), [{**OURS, "weight": 100}, {"name": "student", "port": 8000, "weight": 0}],
         None),
        # Switched to the standard filter mid-shadow: the TraefikService's entry turns back, the filter is added.
        ([{**OURS, "weight": 100}], None, RouteState(0, 50),
         [{"name": "teacher", "port": 8000, "weight": 100}, {"name": "student", "port": 8000, "weight": 0}],
         [{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "student", "port": 8000},
                                                      "percent": 50}}]),
        # Another rollout's TraefikService (other name) is not ours: left as it is, the baseline is needed.
        ([{"name": "teacher", "port": 8000}, {**OURS, "name": "other-shadow", "weight": 1}], None, RouteState(10),
         [{"name": "teacher", "port": 8000, "weight": 90}, {**OURS, "name": "other-shadow", "weight": 1},
          {"name": "student", "port": 8000, "weight": 10}], None),
    ],
    ids=["enter-shadow", "entry-fields-kept", "first-step", "rollback", "promote", "both-present",
         "switched-to-filter", "other-rollouts-service"],
)
def test_the_rule_with_and_without_the_traefik_service(
    refs: list[dict[str, Any]], filters: list[dict[str, Any]] | None, state: RouteState,
    want_refs: list[dict[str, Any]], want_filters: list[dict[str, Any]] | None,
) -> None:
    original = route(refs, filters)
    before = copy.deepcopy(original)
    body = build(original, state)
    assert original == before  # pure
    assert body["spec"]["rules"][0] == original["spec"]["rules"][0]
    assert body["spec"]["rules"][1]["backendRefs"] == want_refs
    assert body["spec"]["rules"][1].get("filters") == want_filters
    want = desired_observation(state.candidate_weight, state.mirror_percent, state.keep_baseline, state.mirror)
    assert observe_route(applied(original, body), 1, BASE, CAND, TS) == want  # reads back as asked


def test_observed_shadow_differs_from_every_other_state() -> None:
    shadow = desired_observation(0, 100, mirror=TRAEFIK)
    assert shadow == ObservedRoute(None, 0, None, 100)
    assert shadow not in (desired_observation(0), desired_observation(0, 100), desired_observation(100))
    # A route carrying the standard filter does not pass for a TraefikService shadow, nor the other way round.
    with_filter = applied(route([{"name": "teacher", "port": 8000}]),
                          build(route([{"name": "teacher", "port": 8000}]), RouteState(0, 100)))
    assert observe_route(with_filter, 1, BASE, CAND, TS) != shadow


def test_a_traefik_service_mirror_needs_its_name_and_a_baseline() -> None:
    with pytest.raises(ValueError, match="needs the TraefikService's name"):
        build_httproute_weights(route([{"name": "teacher", "port": 8000}]), 1, BASE, CAND, 0, 100, True, TRAEFIK)
    with pytest.raises(RouteError, match="no backendRef teacher:8000") as err:
        build(route([{"name": "x", "port": 1}]), RouteState(0, 100, mirror=TRAEFIK))
    assert err.value.reason == "BaselineNotInRoute"


# --- record and restore -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pristine",
    [
        [{"name": "teacher", "port": 8000, "weight": 100}],
        [{"name": "teacher", "port": 8000}],
        [{"name": "teacher", "port": 8000, "weight": 100}, {"name": "student", "port": 8000, "weight": 0}],
        [{"name": "teacher", "port": 8000, "weight": 60, "filters": [USER_FILTER]}, {"name": "x", "port": 1,
                                                                                      "weight": 40}],
    ],
    ids=["baseline-100", "baseline-no-weight", "candidate-declared", "entry-filter-and-other-backend"],
)
def test_a_rollout_deleted_while_shadowing_through_traefik_gives_the_rule_back(pristine: list[dict[str, Any]]) -> None:
    original = route(pristine, [USER_FILTER])
    rec = build_route_record(original, 1, BASE, CAND, TS)
    during = applied(original, build(original, RouteState(0, 100, mirror=TRAEFIK)))
    assert observe_route(during, 1, BASE, CAND, TS).shadow_weight == 100
    restored = applied(during, build_route_restore(during, rec, TS))
    assert restored["spec"]["rules"] == original["spec"]["rules"]
    assert build_route_restore(restored, rec, TS) is None  # replayed after a kill: nothing to write


def test_a_route_already_shadowing_is_not_pristine() -> None:
    # The baseline's 70 is not its own weight from before the rollout: the TraefikService carries a share too.
    shadowing = route([{"name": "teacher", "port": 8000, "weight": 70}, {**OURS, "weight": 30}])
    assert build_route_record(shadowing, 1, BASE, CAND, TS).baseline_weight == 100  # not known: restored as 100
    assert build_route_record(shadowing, 1, BASE, CAND).baseline_weight == 70  # (not knowing the name)


def test_restore_without_baseline_or_traefik_service_is_an_error() -> None:
    rec = RouteRecord(route="r", rule_index=1, baseline=BASE, candidate=CAND, candidate_declared=False)
    with pytest.raises(RouteError, match="to give the traffic back to"):
        build_route_restore(route([{**OURS, "name": "not-ours"}]), rec, TS)


def test_describe_rule_names_the_traefik_service() -> None:
    rec = RouteRecord(route="r", rule_index=1, baseline=BASE, candidate=CAND, candidate_declared=False)
    text = describe_rule(route([{**OURS, "weight": 100}, {"name": "student", "port": 8000, "weight": 0}]), rec, TS)
    assert text == ("HTTPRoute r rule 1: teacher weight absent, student weight 0, TraefikService rollout-shadow "
                    "(mirroring teacher to student) weight 100")


# --- the TraefikService ---------------------------------------------------------------------------------------------


def test_the_traefik_service_mirrors_the_baseline_to_the_candidate() -> None:
    body = build_traefik_mirror(ROLLOUT, BASE, CAND, 30)
    assert (body["apiVersion"], body["kind"]) == ("traefik.io/v1alpha1", "TraefikService")
    meta = body["metadata"]
    assert (meta["name"], meta["namespace"]) == ("rollout-shadow", "ml")
    assert meta["labels"] == {MANAGED_BY: MANAGER}
    assert meta["ownerReferences"] == [{"apiVersion": "kubestill.io/v1alpha1", "kind": "CanaryRollout",
                                        "name": "rollout", "uid": "uid-7", "controller": True,
                                        "blockOwnerDeletion": True}]
    assert body["spec"] == {"mirroring": {"name": "teacher", "port": 8000,
                                          "mirrors": [{"name": "student", "port": 8000, "percent": 30}]}}


@pytest.mark.parametrize(
    ("change", "current"),
    [
        (lambda o: None, True),
        (lambda o: o["spec"]["mirroring"].update(maxBodySize=-1, mirrorBody=True), True),  # defaults added
        (lambda o: o["metadata"]["labels"].update(team="ml"), True),
        (lambda o: o["spec"]["mirroring"]["mirrors"][0].update(percent=100), False),  # edited by someone
        (lambda o: o["spec"]["mirroring"]["mirrors"].append({"name": "x", "port": 1, "percent": 5}), False),
        (lambda o: o["spec"]["mirroring"].update(name="other"), False),
        (lambda o: o["metadata"].update(ownerReferences=[]), False),  # not ours (any more)
    ],
    ids=["same", "server-defaults", "other-labels", "percent-changed", "extra-mirror", "other-main", "no-owner"],
)
def test_mirror_current(change: Any, current: bool) -> None:
    want = build_traefik_mirror(ROLLOUT, BASE, CAND, 30)
    live = copy.deepcopy(want)
    change(live)
    assert mirror_current(live, want) is current
    assert mirror_current(None, want) is False


# --- when the TraefikService may go ---------------------------------------------------------------------------------

T = datetime(2026, 1, 1, tzinfo=UTC)
LATER = T + MIRROR_RELEASE_GRACE


def spec(mirror: str | None = "TraefikService") -> CanaryRolloutSpec:
    body: dict[str, Any] = {"route": {"name": "r"}, "baseline": {"name": "teacher", "port": 8000},
                            "candidate": {"service": {"name": "student", "port": 8000}},
                            "steps": [{"weight": 10, "pause": "1m"}, {"weight": 100}]}
    if mirror is not None:
        body["shadow"] = {"pause": "1m", "percent": 40, "mirror": mirror}
    return CanaryRolloutSpec.model_validate(body)


def status(**fields: Any) -> CanaryRolloutStatus:
    return CanaryRolloutStatus(**{"step_entered_at": T - timedelta(minutes=5), **fields})


@pytest.mark.parametrize(
    ("spec_", "status_", "at"),
    [
        (spec(), CanaryRolloutStatus(), None),  # Pending: never entered
        (spec(), status(phase="Progressing", shadowing=True, step_started_at=T), None),
        (spec(), status(phase="Paused", shadowing=True, step_started_at=T), None),
        (spec(), status(phase="Progressing", current_step=0, current_weight=10), None),  # not yet carried
        (spec(), status(phase="Progressing", current_step=0, current_weight=10, step_started_at=T), LATER),
        (spec(), status(phase="Paused", current_step=1, current_weight=100, step_started_at=T), LATER),
        (spec(), status(phase="Promoted", current_weight=100), None),  # promotion decided, not yet carried
        (spec(), status(phase="Promoted", current_weight=100, promoted_at=T), LATER),
        (spec(), status(phase="RolledBack"), None),  # rollback decided, the route not yet seen at the baseline
        (spec(), status(phase="RolledBack", route_settled_at=T), LATER),
        (spec("RequestMirror"), status(phase="RolledBack", route_settled_at=T), None),  # no TraefikService
        (spec(None), status(phase="Progressing", current_step=0, step_started_at=T), None),
    ],
    ids=["pending", "shadowing", "paused-shadowing", "step-0-not-carried", "step-0-carried", "paused-later",
         "promotion-not-carried", "promoted", "rollback-not-carried", "rolled-back", "request-mirror", "no-shadow"],
)
def test_when_the_traefik_service_may_go(spec_: CanaryRolloutSpec, status_: CanaryRolloutStatus,
                                         at: datetime | None) -> None:
    assert mirror_release_at(spec_, status_) == at


def test_route_state_of_a_traefik_shadow() -> None:
    shadowing = CanaryRolloutStatus(phase="Progressing", shadowing=True)
    assert route_state(spec(), shadowing) == RouteState(0, 40, mirror=TRAEFIK)
    assert route_state(spec("RequestMirror"), shadowing) == RouteState(0, 40)
    # After the shadow step the mirror kind no longer matters: the same state as any other step.
    stepping = CanaryRolloutStatus(phase="Progressing", current_step=0, current_weight=10)
    assert route_state(spec(), stepping) == route_state(spec("RequestMirror"), stepping) == RouteState(10)
