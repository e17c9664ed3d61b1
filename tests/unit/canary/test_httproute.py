"""build_httproute_weights / observe_route: only the two weights and our mirror change; the rest is copied."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kubestill.api.v1alpha1.canaryrollout import BackendRef
from kubestill.builders.httproute import (
    ObservedRoute,
    RouteError,
    build_httproute_weights,
    desired_observation,
    observe_route,
)
from kubestill.logic.canary_status import RouteState

BASE = BackendRef(name="teacher", port=8000)
CAND = BackendRef(name="student", port=8000)
OTHER_FILTER = {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x", "value": "1"}]}}


def route(refs: list[dict[str, Any]], filters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"matches": [{"path": {"type": "PathPrefix", "value": "/v2"}}], "backendRefs": refs}
    if filters is not None:
        rule["filters"] = filters
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "r", "namespace": "ns", "resourceVersion": "42", "labels": {"a": "b"}},
        "spec": {
            "parentRefs": [{"name": "gw"}],
            "rules": [{"backendRefs": [{"name": "other", "port": 80}]}, rule],
        },
    }


@pytest.mark.parametrize(
    ("refs", "filters", "state", "want_refs", "want_filters"),
    [
        # Candidate missing: added after the existing entries.
        ([{"name": "teacher", "port": 8000}], None, RouteState(10),
         [{"name": "teacher", "port": 8000, "weight": 90}, {"name": "student", "port": 8000, "weight": 10}], None),
        # Both present: only weights change; unrelated backends and fields stay.
        ([{"name": "teacher", "port": 8000, "weight": 100}, {"name": "x", "port": 1, "weight": 3},
          {"name": "student", "port": 8000, "weight": 0, "filters": []}], [OTHER_FILTER], RouteState(50),
         [{"name": "teacher", "port": 8000, "weight": 50}, {"name": "x", "port": 1, "weight": 3},
          {"name": "student", "port": 8000, "weight": 50, "filters": []}], [OTHER_FILTER]),
        # Shadow: our mirror appended next to the user's filters.
        ([{"name": "teacher", "port": 8000}], [OTHER_FILTER], RouteState(0, 25),
         [{"name": "teacher", "port": 8000, "weight": 100}, {"name": "student", "port": 8000, "weight": 0}],
         [OTHER_FILTER, {"type": "RequestMirror", "requestMirror": {
             "backendRef": {"name": "student", "port": 8000}, "percent": 25}}]),
        # Leaving the shadow step removes only our mirror, and the filters key when it is empty.
        ([{"name": "teacher", "port": 8000}], [{"type": "RequestMirror", "requestMirror": {
            "backendRef": {"name": "student", "port": 8000}, "percent": 25}}], RouteState(5),
         [{"name": "teacher", "port": 8000, "weight": 95}, {"name": "student", "port": 8000, "weight": 5}], None),
        # Baseline released after promotion.
        ([{"name": "teacher", "port": 8000, "weight": 0}, {"name": "student", "port": 8000, "weight": 100}], None,
         RouteState(100, None, keep_baseline=False), [{"name": "student", "port": 8000, "weight": 100}], None),
        # Same name, other port: not ours.
        ([{"name": "teacher", "port": 8000}, {"name": "student", "port": 9000, "weight": 7}], None, RouteState(0),
         [{"name": "teacher", "port": 8000, "weight": 100}, {"name": "student", "port": 9000, "weight": 7},
          {"name": "student", "port": 8000, "weight": 0}], None),
    ],
)
def test_build(
    refs: list[dict[str, Any]],
    filters: list[dict[str, Any]] | None,
    state: RouteState,
    want_refs: list[dict[str, Any]],
    want_filters: list[dict[str, Any]] | None,
) -> None:
    original = route(refs, filters)
    before = copy.deepcopy(original)
    body = build_httproute_weights(
        original, 1, BASE, CAND, state.candidate_weight, state.mirror_percent, state.keep_baseline
    )
    assert original == before  # the input is not modified
    assert body["metadata"] == {"name": "r", "namespace": "ns", "resourceVersion": "42"}
    assert set(body["spec"]) == {"rules"}
    rules = body["spec"]["rules"]
    assert rules[0] == original["spec"]["rules"][0]
    assert rules[1]["matches"] == original["spec"]["rules"][1]["matches"]
    assert rules[1]["backendRefs"] == want_refs
    assert rules[1].get("filters") == want_filters
    # What we built reads back as what we asked for.
    applied = {**original, "spec": {**original["spec"], "rules": rules}}
    want = desired_observation(state.candidate_weight, state.mirror_percent, state.keep_baseline)
    assert observe_route(applied, 1, BASE, CAND) == want


def test_missing_baseline_is_an_error_naming_it() -> None:
    with pytest.raises(RouteError, match="no backendRef teacher:8000"):
        build_httproute_weights(route([{"name": "x", "port": 1}]), 1, BASE, CAND, 10)


def test_rule_index_out_of_range() -> None:
    with pytest.raises(RouteError, match="ruleIndex 5 is out of range"):
        build_httproute_weights(route([]), 5, BASE, CAND, 10)


def test_observe_defaults_weight_to_one() -> None:
    got = observe_route(route([{"name": "teacher", "port": 8000}]), 1, BASE, CAND)
    assert got == ObservedRoute(baseline_weight=1, candidate_weight=None, mirror_percent=None)
