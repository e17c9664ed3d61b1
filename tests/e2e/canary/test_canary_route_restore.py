"""A CanaryRollout gives its HTTPRoute back: restored when deleted mid-rollout, left as promoted when deleted after
promotion, and released (no finalizer, no field ownership) as soon as it finishes, so a GitOps tool applies the
route without conflicts. The real operator on the real API server (shared/cases 03 and 06)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import yaml

from kubestill.api.names import ROUTE_RECORD_ANNOTATION, ROUTE_RESTORE_FINALIZER

from .conftest import BASELINE, CANDIDATE, ROUTE, Bare, rollout_spec, route_manifest

pytestmark = pytest.mark.e2e



def spec(steps: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    """rollout_spec with whole fields (route, candidate ...) replaced."""
    return {**rollout_spec(steps), **fields}

def rule(bare: Bare) -> dict[str, Any]:
    got: dict[str, Any] = bare.api.route(bare.namespace)["spec"]["rules"][0]
    return got


def weights(bare: Bare) -> dict[str, int]:
    return {r["name"]: r.get("weight", 1) for r in rule(bare)["backendRefs"]}


def mirrors(bare: Bare) -> list[dict[str, Any]]:
    return [f for f in rule(bare).get("filters") or [] if f.get("type") == "RequestMirror"]


def rollout_or_none(bare: Bare, name: str) -> dict[str, Any] | None:
    out = bare.cluster.kubectl("get", "canaryrollout", name, "-n", bare.namespace, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None


def managers(bare: Bare) -> set[str]:
    route = bare.api.route(bare.namespace)
    return {e["manager"] for e in route["metadata"].get("managedFields") or []}


def events(bare: Bare, name: str) -> list[tuple[str, str, str]]:
    out = bare.cluster.kubectl("get", "events", "-n", bare.namespace, "-o", "json")
    return [(e["type"], e["reason"], e["message"]) for e in json.loads(out.stdout)["items"]
            if e["involvedObject"]["name"] == name]


def delete(bare: Bare, name: str) -> None:
    bare.cluster.kubectl("delete", "canaryrollout", name, "-n", bare.namespace, "--wait=false")


def gitops_apply(bare: Bare, manifest: dict[str, Any], force: bool = False) -> tuple[int, str]:
    args = ["apply", "--server-side", "--field-manager=argocd", "-f", "-"]
    out = bare.cluster.kubectl(*args, *(["--force-conflicts"] if force else []), input=yaml.safe_dump(manifest),
                               check=False)
    return out.returncode, out.stderr


def test_delete_at_a_weight_step_restores_the_baseline(bare: Bare) -> None:
    """Case 03 (a): shadow, promoted to the 30 % step, deleted: baseline 100 %, the candidate entry kubestill
    added is gone, everything else as it was; the rollout goes away."""
    before = rule(bare)
    bare.rollout("c", spec([{"weight": 30, "pause": "1h"}], shadow={"percent": 100, "pause": "1h"}))
    bare.api.wait_for("the shadow step's mirror", lambda: mirrors(bare), timeout=20)
    held = bare.api.rollout(bare.namespace, "c")["metadata"]
    assert ROUTE_RESTORE_FINALIZER in held["finalizers"]
    assert json.loads(held["annotations"][ROUTE_RECORD_ANNOTATION])["candidateDeclared"] is False
    bare.cli("rollout", "promote", "c", "-n", bare.namespace)
    bare.api.wait_for("70/30", lambda: weights(bare) == {BASELINE.name: 70, CANDIDATE.name: 30}, timeout=20)

    delete(bare, "c")
    bare.api.wait_for("the rollout gone", lambda: rollout_or_none(bare, "c") is None, timeout=20)
    assert rule(bare) == before
    assert "kubestill-canary" not in managers(bare)
    assert any(reason == "RouteRestored" for _, reason, _ in events(bare, "c")), events(bare, "c")


def test_delete_during_the_shadow_step_removes_the_mirror(bare: Bare) -> None:
    """Case 03 (b): deleted while 100 % of requests are mirrored to the candidate: the mirror goes."""
    before = rule(bare)
    bare.rollout("c", spec([{"weight": 30, "pause": "1h"}], shadow={"percent": 100, "pause": "1h"}))
    bare.api.wait_for("the shadow step's mirror", lambda: mirrors(bare), timeout=20)
    delete(bare, "c")
    bare.api.wait_for("the rollout gone", lambda: rollout_or_none(bare, "c") is None, timeout=20)
    assert rule(bare) == before
    assert not mirrors(bare)


def test_delete_keeps_a_declared_candidate_at_zero_and_a_promotion(bare: Bare) -> None:
    """A candidate entry the user declared stays (weight 0) on restore; a promoted rollout keeps its promotion."""
    manifest = route_manifest(bare.namespace)
    manifest["spec"]["rules"][0]["backendRefs"].append({"name": CANDIDATE.name, "port": CANDIDATE.port, "weight": 0})
    bare.cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(manifest))
    bare.rollout("declared", spec([{"weight": 40, "pause": "1h"}]))
    bare.api.wait_for("60/40", lambda: weights(bare) == {BASELINE.name: 60, CANDIDATE.name: 40}, timeout=20)
    delete(bare, "declared")
    bare.api.wait_for("the rollout gone", lambda: rollout_or_none(bare, "declared") is None, timeout=20)
    assert weights(bare) == {BASELINE.name: 100, CANDIDATE.name: 0}

    bare.rollout("promoted", spec([{"weight": 40}, {"weight": 80}]))
    bare.api.wait_for("60/40", lambda: weights(bare) == {BASELINE.name: 60, CANDIDATE.name: 40}, timeout=20)
    bare.cli("rollout", "promote", "--full", "promoted", "-n", bare.namespace)
    bare.api.wait_for("0/100", lambda: weights(bare) == {BASELINE.name: 0, CANDIDATE.name: 100}, timeout=20)
    delete(bare, "promoted")
    bare.api.wait_for("the rollout gone", lambda: rollout_or_none(bare, "promoted") is None, timeout=20)
    assert weights(bare) == {BASELINE.name: 0, CANDIDATE.name: 100}


def test_finished_rollouts_hold_nothing(bare: Bare) -> None:
    """Rolled back, or promoted with the baseline released: no finalizer, no field ownership, and no more
    writes, so deleting one is immediate and the route is the GitOps tool's again."""
    bare.rollout("aborted", spec([{"weight": 20, "pause": "1h"}]))
    bare.api.wait_for("80/20", lambda: weights(bare) == {BASELINE.name: 80, CANDIDATE.name: 20}, timeout=20)
    bare.cli("rollout", "abort", "aborted", "-n", bare.namespace)

    def released(name: str) -> bool:
        meta = bare.api.rollout(bare.namespace, name)["metadata"]
        record = json.loads((meta.get("annotations") or {}).get(ROUTE_RECORD_ANNOTATION, "{}"))
        return ROUTE_RESTORE_FINALIZER not in (meta.get("finalizers") or []) and bool(record.get("releasedAt"))

    bare.api.wait_for("released", lambda: released("aborted"), timeout=20)
    assert weights(bare) == {BASELINE.name: 100, CANDIDATE.name: 0}
    assert "kubestill-canary" not in managers(bare)
    started = time.monotonic()
    bare.cluster.kubectl("delete", "canaryrollout", "aborted", "-n", bare.namespace, timeout=20)
    assert time.monotonic() - started < 10 and rollout_or_none(bare, "aborted") is None
    assert weights(bare) == {BASELINE.name: 100, CANDIDATE.name: 0}  # a released rollout's delete writes nothing

    bare.rollout("promoted", spec([{"weight": 50}], promotion={"keepBaselineFor": "1s"}))
    bare.api.wait_for("50/50", lambda: weights(bare) == {BASELINE.name: 50, CANDIDATE.name: 50}, timeout=20)
    bare.cli("rollout", "promote", "promoted", "-n", bare.namespace)
    bare.api.wait_for("released", lambda: released("promoted"), timeout=30)
    assert weights(bare) == {CANDIDATE.name: 100}
    assert "kubestill-canary" not in managers(bare)
    # Released means never written again: a user edit stays, even when the rollout is reconciled again.
    bare.cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(route_manifest(bare.namespace)))
    bare.cluster.kubectl("annotate", "canaryrollout", "promoted", "-n", bare.namespace, "touched=1")
    time.sleep(3)
    assert weights(bare) == {BASELINE.name: 100}


def test_route_gone_or_unrestorable_never_blocks_a_delete(bare: Bare) -> None:
    """No route: released at once. A route that cannot be restored (its baseline removed by someone else):
    released after KUBESTILL_ROUTE_RESTORE_TIMEOUT (the e2e operator runs with 10s), with a Warning Event
    saying what was left."""
    bare.rollout("gone", spec([{"weight": 20, "pause": "1h"}]))
    bare.api.wait_for("80/20", lambda: weights(bare) == {BASELINE.name: 80, CANDIDATE.name: 20}, timeout=20)
    bare.cluster.kubectl("delete", "httproute", ROUTE, "-n", bare.namespace)
    delete(bare, "gone")
    bare.api.wait_for("the rollout gone", lambda: rollout_or_none(bare, "gone") is None, timeout=20)

    bare.cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(route_manifest(bare.namespace)))
    bare.rollout("stuck", spec([{"weight": 20, "pause": "1h"}]))
    bare.api.wait_for("80/20", lambda: weights(bare) == {BASELINE.name: 80, CANDIDATE.name: 20}, timeout=20)
    manifest = route_manifest(bare.namespace)
    manifest["spec"]["rules"][0]["backendRefs"] = [{"name": CANDIDATE.name, "port": CANDIDATE.port, "weight": 20},
                                                   {"name": "other", "port": 80, "weight": 80}]
    bare.cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump(manifest))
    started = time.monotonic()
    delete(bare, "stuck")
    time.sleep(3)
    assert rollout_or_none(bare, "stuck") is not None  # held while it may still be restored
    bare.api.wait_for("the rollout gone", lambda: rollout_or_none(bare, "stuck") is None, timeout=40)
    assert time.monotonic() - started >= 8
    warnings = [m for t, r, m in events(bare, "stuck") if (t, r) == ("Warning", "RouteNotRestored")]
    assert warnings and f"{CANDIDATE.name} weight 20" in warnings[0], events(bare, "stuck")


def test_operator_down_during_the_delete(bare: Bare) -> None:
    """The finalizer holds the rollout while no operator runs; the restarted operator restores and releases."""
    before = rule(bare)
    bare.rollout("c", spec([{"weight": 30, "pause": "1h"}]))
    bare.api.wait_for("70/30", lambda: weights(bare) == {BASELINE.name: 70, CANDIDATE.name: 30}, timeout=20)
    bare.operator.kill()
    try:
        delete(bare, "c")
        time.sleep(2)
        held = rollout_or_none(bare, "c")
        assert held is not None and held["metadata"].get("deletionTimestamp")
        assert weights(bare) == {BASELINE.name: 70, CANDIDATE.name: 30}
    finally:
        bare.operator.start()
    bare.api.wait_for("the rollout gone", lambda: rollout_or_none(bare, "c") is None, timeout=30)
    assert rule(bare) == before


def test_gitops_applies_the_route_before_during_and_after(bare: Bare) -> None:
    """Case 06: a second field manager (argocd) applies the route. Before: fine. During: the Git manifest
    conflicts with kubestill-canary on .spec.rules (atomic), and when forced kubestill re-weights the route
    keeping the forced path match. After promotion and baseline release: a clean apply, no force, and
    kubestill does not fight it."""
    git = route_manifest(bare.namespace)
    # The route as GitOps creates it. (Applying the same manifest over the fixture's kubectl-applied route would
    # conflict with "kubectl": atomic lists are compared without their defaults.)
    bare.cluster.kubectl("delete", "httproute", ROUTE, "-n", bare.namespace)
    assert gitops_apply(bare, git) == (0, "")
    assert gitops_apply(bare, git) == (0, "")
    bare.rollout("c", spec([{"weight": 10, "pause": "1h"}, {"weight": 50, "pause": "1h"}],
                           promotion={"keepBaselineFor": "2s"}))
    bare.api.wait_for("90/10", lambda: weights(bare) == {BASELINE.name: 90, CANDIDATE.name: 10}, timeout=20)

    code, err = gitops_apply(bare, git)
    assert code != 0 and 'conflict with "kubestill-canary"' in err and ".spec.rules" in err, err
    git["spec"]["rules"][0]["matches"][0]["path"]["value"] = "/v2/models/other"
    assert gitops_apply(bare, git, force=True)[0] == 0
    bare.api.wait_for("the weights re-asserted", lambda: weights(bare) == {BASELINE.name: 90, CANDIDATE.name: 10},
                      timeout=45, interval=0.5)
    assert rule(bare)["matches"] == [{"path": {"type": "PathPrefix", "value": "/v2/models/other"}}]

    bare.cli("rollout", "promote", "--full", "c", "-n", bare.namespace)

    def released() -> bool:
        meta = bare.api.rollout(bare.namespace, "c")["metadata"]
        return ROUTE_RESTORE_FINALIZER not in (meta.get("finalizers") or []) and "kubestill-canary" not in managers(
            bare)

    bare.api.wait_for("promoted and released", released, timeout=30)
    assert weights(bare) == {CANDIDATE.name: 100}
    promoted = route_manifest(bare.namespace)
    promoted["spec"]["rules"][0]["backendRefs"] = [{"name": CANDIDATE.name, "port": CANDIDATE.port, "weight": 100}]
    assert gitops_apply(bare, promoted) == (0, "")
    assert gitops_apply(bare, git) == (0, "")  # even a Git revert goes through: the route is Git's again
    bare.cluster.kubectl("annotate", "canaryrollout", "c", "-n", bare.namespace, "touched=1")
    time.sleep(3)
    assert weights(bare) == {BASELINE.name: 100}


def test_the_last_rollout_on_a_route_gives_it_back(bare: Bare) -> None:
    """Two rollouts on two rules of one route share kubestill's field manager: the first to finish keeps the
    ownership for the other, the last gives it back."""
    manifest = route_manifest(bare.namespace)
    second = {"matches": [{"path": {"type": "PathPrefix", "value": "/v2/models/other"}}],
              "backendRefs": [{"name": "teacher-b", "port": 8000, "weight": 100}]}
    manifest["spec"]["rules"].append(second)
    bare.cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(manifest))
    bare.rollout("a", spec([{"weight": 20, "pause": "1h"}]))
    other = spec([{"weight": 30, "pause": "1h"}], route={"name": ROUTE, "ruleIndex": 1},
                  baseline={"name": "teacher-b", "port": 8000}, candidate={"service": {"name": "student-b",
                                                                                       "port": 8000}})
    bare.rollout("b", other)

    def rule_weights(index: int) -> dict[str, int]:
        refs = bare.api.route(bare.namespace)["spec"]["rules"][index]["backendRefs"]
        return {r["name"]: r.get("weight", 1) for r in refs}

    bare.api.wait_for("both stepping", lambda: rule_weights(0) == {BASELINE.name: 80, CANDIDATE.name: 20}
                      and rule_weights(1) == {"teacher-b": 70, "student-b": 30}, timeout=20)
    bare.cli("rollout", "abort", "a", "-n", bare.namespace)
    bare.api.wait_for("a released", lambda: ROUTE_RESTORE_FINALIZER not in (
        bare.api.rollout(bare.namespace, "a")["metadata"].get("finalizers") or []), timeout=20)
    assert "kubestill-canary" in managers(bare)  # b still moves traffic in this route
    delete(bare, "b")
    bare.api.wait_for("b gone", lambda: rollout_or_none(bare, "b") is None, timeout=20)
    assert rule_weights(1) == {"teacher-b": 100}
    assert "kubestill-canary" not in managers(bare)
