"""Giving the route back: the record taken before the first write, the restore on delete, the managedFields
release, and the decisions of logic/route_guard.py. Pure: no cluster."""

from __future__ import annotations

import copy
import doctest
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubestill.api.names import ROUTE_RECORD_ANNOTATION, ROUTE_RESTORE_FINALIZER
from kubestill.api.route_record import RouteRecord
from kubestill.api.v1alpha1.canaryrollout import BackendRef, CanaryRolloutStatus
from kubestill.builders.httproute import (
    RouteError,
    build_httproute_weights,
    build_route_record,
    build_route_restore,
    describe_rule,
)
from kubestill.builders.meta import PLACEHOLDER_FIELDS, build_field_manager_release
from kubestill.logic import route_guard
from kubestill.logic.route_guard import Gate, OnDelete
from kubestill.settings import from_env

BASE = BackendRef(name="teacher", port=8000)
CAND = BackendRef(name="student", port=8000)
USER_FILTER = {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x", "value": "1"}]}}
USER_MIRROR = {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "audit", "port": 80}}}
OUR_MIRROR = {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "student", "port": 8000},
                                                         "percent": 100}}


def route(refs: list[dict[str, Any]], filters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Rule 1 is the rollout's; rule 0 and the other fields belong to someone else."""
    rule: dict[str, Any] = {"matches": [{"path": {"type": "PathPrefix", "value": "/v2"}}], "backendRefs": refs}
    if filters is not None:
        rule["filters"] = filters
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "r", "namespace": "ns", "resourceVersion": "42"},
        "spec": {"parentRefs": [{"name": "gw"}], "hostnames": ["a.example"],
                 "rules": [{"backendRefs": [{"name": "other", "port": 80}]}, rule]},
    }


def applied(original: dict[str, Any], body: dict[str, Any] | None) -> dict[str, Any]:
    """The route after the API server took `body` (the rules list is atomic: replaced whole)."""
    if body is None:
        return original
    return {**original, "metadata": {**original["metadata"], "resourceVersion": "43"},
            "spec": {**original["spec"], "rules": body["spec"]["rules"]}}


def record(**fields: Any) -> RouteRecord:
    base: dict[str, Any] = {"route": "r", "rule_index": 1, "baseline": BASE, "candidate": CAND,
                            "candidate_declared": False}
    return RouteRecord(**{**base, **fields})


# --- restore: a rollout stopped anywhere gives the rule back exactly as it was --------------------------------

PRISTINE = [
    pytest.param([{"name": "teacher", "port": 8000, "weight": 100}], None, id="baseline-only"),
    pytest.param([{"name": "teacher", "port": 8000}], None, id="baseline-without-weight"),
    pytest.param([{"name": "teacher", "port": 8000, "weight": 100}, {"name": "student", "port": 8000, "weight": 0}],
                 None, id="candidate-declared-at-0"),
    pytest.param([{"name": "teacher", "port": 8000, "weight": 100}, {"name": "x", "port": 1, "weight": 5}],
                 [USER_FILTER, USER_MIRROR], id="other-backend-and-user-filters"),
]
# (candidate weight, mirror percent, keep baseline): where the rollout was when it was deleted.
WHERE = [
    pytest.param(0, 100, True, id="shadow-step"),
    pytest.param(30, None, True, id="at-30"),
    pytest.param(100, None, True, id="promoted-baseline-kept"),
]


@pytest.mark.parametrize(("refs", "filters"), PRISTINE)
@pytest.mark.parametrize(("weight", "mirror", "keep"), WHERE)
def test_restore_gives_back_the_pristine_rule(
    refs: list[dict[str, Any]], filters: list[dict[str, Any]] | None, weight: int, mirror: int | None, keep: bool
) -> None:
    pristine = route(refs, filters)
    # Through the annotation it is kept in, as the operator reads it back after a restart.
    rec = RouteRecord.loads(build_route_record(pristine, 1, BASE, CAND).dumps())
    assert rec is not None
    during = applied(pristine, build_httproute_weights(pristine, 1, BASE, CAND, weight, mirror, keep))
    before = copy.deepcopy(during)
    body = build_route_restore(during, rec)
    assert during == before  # the input is not modified
    assert body is not None
    assert body["metadata"] == {"name": "r", "namespace": "ns", "resourceVersion": "43"}
    assert body["spec"] == {"rules": pristine["spec"]["rules"]}
    # Replayed (an operator killed after the write): nothing to write.
    assert build_route_restore(applied(during, body), rec) is None


def test_restore_of_a_route_never_written_writes_nothing() -> None:
    pristine = route([{"name": "teacher", "port": 8000, "weight": 100}], [USER_FILTER])
    assert build_route_restore(pristine, build_route_record(pristine, 1, BASE, CAND)) is None


@pytest.mark.parametrize(
    ("refs", "filters", "rec", "want_refs", "want_filters"),
    [
        # Recorded after kubestill had already written (older operator): baseline 100, candidate kept at 0.
        ([{"name": "teacher", "port": 8000, "weight": 70}, {"name": "student", "port": 8000, "weight": 30}], None,
         record(candidate_declared=True),
         [{"name": "teacher", "port": 8000, "weight": 100}, {"name": "student", "port": 8000, "weight": 0}], None),
        # Only our mirror goes; the user's mirror to another backend and their filters stay, in order.
        ([{"name": "teacher", "port": 8000, "weight": 100}, {"name": "student", "port": 8000, "weight": 0}],
         [USER_FILTER, OUR_MIRROR, USER_MIRROR], record(),
         [{"name": "teacher", "port": 8000, "weight": 100}], [USER_FILTER, USER_MIRROR]),
        # Same name, other port: not ours, untouched.
        ([{"name": "teacher", "port": 8000, "weight": 90}, {"name": "student", "port": 9000, "weight": 3},
          {"name": "student", "port": 8000, "weight": 10}], None, record(),
         [{"name": "teacher", "port": 8000, "weight": 100}, {"name": "student", "port": 9000, "weight": 3}], None),
    ],
)
def test_restore_cases(
    refs: list[dict[str, Any]],
    filters: list[dict[str, Any]] | None,
    rec: RouteRecord,
    want_refs: list[dict[str, Any]],
    want_filters: list[dict[str, Any]] | None,
) -> None:
    body = build_route_restore(route(refs, filters), rec)
    assert body is not None
    rules = body["spec"]["rules"]
    assert rules[0] == {"backendRefs": [{"name": "other", "port": 80}]}
    assert rules[1]["matches"] == [{"path": {"type": "PathPrefix", "value": "/v2"}}]
    assert rules[1]["backendRefs"] == want_refs
    assert rules[1].get("filters") == want_filters


def test_restore_without_baseline_or_rule_is_an_error() -> None:
    with pytest.raises(RouteError, match="no backendRef teacher:8000 to give the traffic back to"):
        build_route_restore(route([{"name": "student", "port": 8000, "weight": 100}]), record())
    with pytest.raises(RouteError, match="out of range"):
        build_route_restore(route([]), record(rule_index=4))


def test_record_of_a_route_already_weighted_does_not_trust_its_baseline_weight() -> None:
    rec = build_route_record(route([{"name": "teacher", "port": 8000, "weight": 70},
                                    {"name": "student", "port": 8000, "weight": 30}]), 1, BASE, CAND)
    assert (rec.baseline_weight, rec.candidate_declared) == (100, True)
    assert RouteRecord.loads(rec.dumps()) == rec
    assert RouteRecord.loads("{not json") is None and RouteRecord.loads(None) is None


def test_describe_rule_says_what_was_left() -> None:
    left = route([{"name": "teacher", "port": 8000, "weight": 70}, {"name": "student", "port": 8000, "weight": 30}],
                 [OUR_MIRROR])
    assert describe_rule(left, record()) == (
        "HTTPRoute r rule 1: teacher weight 70, student weight 30, 100% mirrored to student"
    )
    assert describe_rule(None, record()) == "HTTPRoute r not found"


# --- managedFields: give ownership back, keep the data --------------------------------------------------------

OURS = {"manager": "kubestill-canary", "operation": "Apply", "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": {"f:rules": {}}}}
ARGO = {"manager": "argocd", "operation": "Apply", "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": {"f:parentRefs": {}}}}
STATUS = {"manager": "gateway", "operation": "Update", "subresource": "status", "fieldsType": "FieldsV1",
          "fieldsV1": {"f:status": {}}}


@pytest.mark.parametrize(
    ("entries", "want"),
    [
        ([ARGO, OURS, STATUS], [ARGO, STATUS]),
        ([OURS, {**OURS, "operation": "Update"}, ARGO], [ARGO]),
        # Alone: shrunk to metadata.name (an object without managedFields is all "before-first-apply"'s).
        ([OURS], [{**OURS, "fieldsV1": PLACEHOLDER_FIELDS}]),
        ([OURS, {**OURS, "operation": "Update"}], [{**OURS, "fieldsV1": PLACEHOLDER_FIELDS}]),
        ([{**OURS, "fieldsV1": PLACEHOLDER_FIELDS}], None),
        ([ARGO, STATUS], None),
        ([], None),
    ],
)
def test_field_manager_release(entries: list[dict[str, Any]], want: list[dict[str, Any]] | None) -> None:
    obj = {"metadata": {"name": "r", "resourceVersion": "7", "managedFields": entries}}
    patch = build_field_manager_release(obj, "kubestill-canary")
    if want is None:
        assert patch is None
    else:
        assert patch == {"metadata": {"resourceVersion": "7", "managedFields": want}}


# --- decisions -----------------------------------------------------------------------------------------------

T0 = datetime(2026, 3, 1, tzinfo=UTC)
RELEASED = record(released_at=T0)


@pytest.mark.parametrize(
    ("holding", "rec", "final", "want"),
    [
        (False, None, False, Gate.HOLD),  # about to write for the first time
        (False, record(), False, Gate.HOLD),  # finalizer removed by hand while stepping: held again, same record
        (True, record(), False, Gate.WRITE),
        (True, record(), True, Gate.WRITE),  # final weights written, then released after the write
        (False, None, True, Gate.SETTLE),  # aborted before its first step, or finished under an older operator
        (False, RELEASED, True, Gate.DONE),
        (True, RELEASED, True, Gate.DONE),
    ],
)
def test_gate(holding: bool, rec: RouteRecord | None, final: bool, want: Gate) -> None:
    assert route_guard.gate(holding, rec, final) == want


@pytest.mark.parametrize(
    ("status", "final", "on_delete"),
    [
        (CanaryRolloutStatus(), False, OnDelete.RESTORE),
        (CanaryRolloutStatus(phase="Progressing", shadowing=True), False, OnDelete.RESTORE),
        (CanaryRolloutStatus(phase="Paused", current_weight=30), False, OnDelete.RESTORE),
        (CanaryRolloutStatus(phase="RolledBack"), True, OnDelete.RESTORE),
        (CanaryRolloutStatus(phase="Failed"), True, OnDelete.RESTORE),
        (CanaryRolloutStatus(phase="Promoted", current_weight=100), False, OnDelete.KEEP_PROMOTION),
        (CanaryRolloutStatus(phase="Promoted", current_weight=100, baseline_released_at=T0), True,
         OnDelete.KEEP_PROMOTION),
    ],
)
def test_final_and_on_delete(status: CanaryRolloutStatus, final: bool, on_delete: OnDelete) -> None:
    assert route_guard.route_final(status) is final
    assert route_guard.on_delete(status) == on_delete


def test_restore_overdue() -> None:
    bound = timedelta(minutes=5)
    assert not route_guard.restore_overdue(T0, T0 + timedelta(seconds=299), bound)
    assert route_guard.restore_overdue(T0, T0 + bound, bound)
    assert not route_guard.restore_overdue(None, T0, bound)


def _rollout(name: str, route: str = "r", phase: str = "Progressing", holding: bool = False,
             released: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "finalizers": [ROUTE_RESTORE_FINALIZER] if holding else []}
    if released:
        meta["annotations"] = {ROUTE_RECORD_ANNOTATION: RELEASED.dumps()}
    return {"metadata": meta, "spec": {"route": {"name": route}}, "status": {"phase": phase}}


def test_other_holders() -> None:
    rollouts = [
        _rollout("me", holding=True),
        _rollout("stepping", holding=True),
        _rollout("older-operator-stepping"),  # no finalizer yet, still writes
        _rollout("pending", phase="Pending"),  # has not written; forces its way in when it does
        _rollout("rolled-back", phase="RolledBack"),
        _rollout("promoted-kept", phase="Promoted"),  # may still roll back while the baseline is kept
        _rollout("released", phase="Promoted", released=True),
        _rollout("elsewhere", route="other", holding=True),
    ]
    assert route_guard.other_holders(rollouts, "me", "r") == ["older-operator-stepping", "promoted-kept", "stepping"]


def test_docstring_examples() -> None:
    result = doctest.testmod(route_guard)
    assert result.attempted > 0 and result.failed == 0


def test_restore_timeout_setting() -> None:
    assert from_env({}).route_restore_timeout == timedelta(minutes=5)
    assert from_env({"KUBESTILL_ROUTE_RESTORE_TIMEOUT": "90s"}).route_restore_timeout == timedelta(seconds=90)
    with pytest.raises(ValueError, match="KUBESTILL_ROUTE_RESTORE_TIMEOUT: invalid duration 'soon'"):
        from_env({"KUBESTILL_ROUTE_RESTORE_TIMEOUT": "soon"})
