"""What the gateway carries, on the real API server with the real operator: a route that cannot be written
holds the rollout (no step judged or advanced, one condition, no write storm), two rollouts never weight one
rule, and a candidate that disappears rolls traffic back to the baseline."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import yaml

from .conftest import BASELINE, CANDIDATE, ROUTE, Bare, rollout_spec

pytestmark = pytest.mark.e2e


spec = rollout_spec

SHORT = [{"weight": 10, "pause": "2s"}, {"weight": 50, "pause": "2s"}, {"weight": 100, "pause": "2s"}]


def status(bare: Bare, name: str) -> dict[str, Any]:
    return dict(bare.api.rollout(bare.namespace, name).get("status") or {})


def condition(bare: Bare, name: str, type_: str = "RouteReady") -> dict[str, Any]:
    return next((c for c in status(bare, name).get("conditions", []) if c["type"] == type_), {})


def weights(bare: Bare, route: str = ROUTE, rule: int = 0) -> dict[str, int]:
    path = f"/apis/gateway.networking.k8s.io/v1/namespaces/{bare.namespace}/httproutes/{route}"
    refs = bare.api.get(path)["spec"]["rules"][rule].get("backendRefs") or []
    return {r["name"]: r.get("weight", 1) for r in refs}


def warnings(bare: Bare, name: str) -> list[str]:
    events = json.loads(bare.cluster.kubectl(
        "get", "events", "-n", bare.namespace, "-o", "json",
        "--field-selector", f"involvedObject.name={name},type=Warning").stdout)["items"]
    return [e["reason"] for e in events for _ in range(e.get("count") or 1)]


def apply(bare: Bare, manifest: dict[str, Any]) -> None:
    bare.cluster.kubectl("apply", "--server-side", "--force-conflicts", "-n", bare.namespace, "-f", "-",
                         input=yaml.safe_dump(manifest))


def route(name: str, backends: list[tuple[str, int, int]]) -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": name},
            "spec": {"rules": [{"backendRefs": [{"name": n, "port": p, "weight": w} for n, p, w in backends]}]}}


def test_a_route_that_cannot_carry_the_rollout_holds_it(bare: Bare) -> None:
    """shared case 13: a route without the baseline's port and a route that does not exist. Before, both were
    Promoted within ~12 s with the route never written, at ~10 status writes/s."""
    apply(bare, route("wrong-port", [(BASELINE.name, 9999, 100)]))
    bare.rollout("missing-baseline", spec(SHORT, route="wrong-port", promotion={"keepBaselineFor": "2s"}))
    bare.rollout("missing-route", spec(SHORT, route="no-such-route", promotion={"keepBaselineFor": "2s"}))
    for name, reason in (("missing-baseline", "BaselineNotInRoute"), ("missing-route", "RouteNotFound")):
        # Settled: the condition, then the held message (the next reconcile's write, when the route write that
        # found the fault came after the Start); from there on, nothing is written however often it retries.
        def held(n: str = name, r: str = reason) -> bool:
            said = status(bare, n).get("message", "")
            return condition(bare, n).get("reason") == r and "waiting for the route" in said
        bare.api.wait_for(f"{name} RouteReady {reason} and held", held, 20)
    versions = {n: bare.api.rollout(bare.namespace, n)["metadata"]["resourceVersion"]
                for n in ("missing-baseline", "missing-route")}
    time.sleep(12)  # six times a step's pause
    for name in ("missing-baseline", "missing-route"):
        st = status(bare, name)
        assert st["phase"] == "Progressing", st
        assert [h["action"] for h in st["history"]] == ["Start"]
        assert st.get("stepStartedAt") is None and st.get("measurements", []) == []
        assert "waiting for the route to carry 10%" in st["message"]
        # One condition, one Warning: not a write per retry.
        assert bare.api.rollout(bare.namespace, name)["metadata"]["resourceVersion"] == versions[name]
        assert len(warnings(bare, name)) == 1, warnings(bare, name)
    assert weights(bare, "wrong-port") == {BASELINE.name: 100}

    # Fixed by the user: the steps now run, each for its whole pause, on the route.
    apply(bare, route("no-such-route", [(BASELINE.name, BASELINE.port, 100)]))
    seen: list[int] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and status(bare, "missing-route").get("phase") != "Promoted":
        w = weights(bare, "no-such-route").get(CANDIDATE.name)
        if w is not None and (not seen or seen[-1] != w):
            seen.append(w)
        time.sleep(0.1)
    final = status(bare, "missing-route")
    assert final["phase"] == "Promoted", final
    assert seen[:3] == [10, 50, 100], seen
    assert condition(bare, "missing-route")["status"] == "True"
    assert status(bare, "missing-baseline")["phase"] == "Progressing"


def test_two_rollouts_never_weight_one_rule(bare: Bare) -> None:
    """shared case 05: the second rollout on a rule waits, naming the first; weights always sum to 100."""
    bare.rollout("one", spec([{"weight": 10, "pause": "1h"}]))
    bare.api.wait_for("one at 10%", lambda: weights(bare).get(CANDIDATE.name) == 10, 20)
    bare.rollout("two", spec([{"weight": 40, "pause": "1h"}], candidate="student2"))
    bare.api.wait_for("two held", lambda: condition(bare, "two").get("reason") == "RouteConflict", 20)
    assert "CanaryRollout one" in condition(bare, "two")["message"]
    assert status(bare, "two").get("phase", "Pending") == "Pending"
    for _ in range(10):
        w = weights(bare)
        assert w == {BASELINE.name: 90, CANDIDATE.name: 10}, w
        time.sleep(0.3)
    assert warnings(bare, "two") == ["RouteConflict"]

    # The first one ends (rolled back, its route seen at the baseline): the second takes the rule.
    bare.cli("rollout", "abort", "one", "-n", bare.namespace)
    bare.api.wait_for("two at 40%", lambda: weights(bare).get("student2") == 40, 30)
    assert weights(bare) == {BASELINE.name: 60, CANDIDATE.name: 0, "student2": 40}
    assert status(bare, "two")["phase"] == "Progressing"
    assert status(bare, "one")["phase"] == "RolledBack" and status(bare, "one").get("routeSettledAt")


@pytest.mark.parametrize("then", ["nothing", "abort"])
def test_a_deleted_candidate_rolls_traffic_back(bare: Bare, then: str) -> None:
    """shared case 04: the StudentModel goes (its DistillationJob deleted) at 30%; before, traffic stayed on a
    Service that no longer existed and abort was ignored."""
    bare.student_model("stu")
    rollout = spec([{"weight": 30, "pause": "1h"}])
    rollout["candidate"] = {"studentModel": "stu"}
    bare.rollout("c", rollout)
    bare.api.wait_for("the Triton Deployment", lambda: bare.cluster.kubectl(
        "get", "deployment", "stu-triton", "-n", bare.namespace, check=False).returncode == 0, 20)
    bare.mark_ready("stu-triton")
    bare.api.wait_for("stu-triton at 30%", lambda: weights(bare).get("stu-triton") == 30, 20)
    assert status(bare, "c")["candidateBackend"] == {"name": "stu-triton", "port": 8000}

    bare.cluster.kubectl("delete", "studentmodel", "stu", "-n", bare.namespace, "--wait=false")
    if then == "abort":
        bare.cli("rollout", "abort", "c", "-n", bare.namespace)
    bare.api.wait_for("RolledBack", lambda: status(bare, "c").get("phase") == "RolledBack", 20)
    # The status is the intent log, written first; the route follows within the same reconcile.
    bare.api.wait_for("the baseline back at 100%",
                      lambda: weights(bare) == {BASELINE.name: 100, "stu-triton": 0}, 10)
    final = status(bare, "c")
    if then == "abort":  # whichever the operator saw first, the abort was acted on, not ignored
        assert "kubestill.io/abort" in final["handledAnnotations"]
        assert "aborted by user" in final["message"] or "was deleted" in final["message"]
    else:
        assert "candidate StudentModel stu was deleted" in final["message"]
    assert "Rollback" in warnings(bare, "c")


def test_a_rollout_stored_before_a_rule_was_tightened_says_so_and_can_be_aborted(bare: Bare) -> None:
    """shared case 01 from the other side: `analysis.interval: 0s` is refused at apply time now, but one stored
    before (an older CRD) must neither spin the operator nor freeze the route: one SpecValid=False condition,
    and an abort still restores the baseline."""
    crd_name = "canaryrollouts.kubestill.io"
    original = json.loads(bare.cluster.kubectl("get", "crd", crd_name, "-o", "json").stdout)
    relaxed = json.loads(json.dumps(original))
    for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
        relaxed["metadata"].pop(key, None)
    relaxed.pop("status", None)
    version = relaxed["spec"]["versions"][0]
    analysis = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["analysis"]
    analysis["properties"]["interval"].pop("pattern", None)
    analysis["x-kubernetes-validations"] = [r for r in analysis.get("x-kubernetes-validations", [])
                                            if "interval" not in r["rule"]]
    bare.cluster.kubectl("replace", "-f", "-", input=json.dumps(relaxed))
    try:
        rollout = spec([{"weight": 20, "pause": "1h"}])
        rollout["analysis"] = {"prometheusUrl": "http://127.0.0.1:9", "interval": "0s",
                               "metrics": [{"name": "m", "query": "vector(1)", "min": 0.5}]}
        bare.api.wait_for("the relaxed CRD", lambda: bare.cluster.kubectl(
            "apply", "--server-side", "-n", bare.namespace, "-f", "-", check=False,
            input=yaml.safe_dump({"apiVersion": "kubestill.io/v1alpha1", "kind": "CanaryRollout",
                                  "metadata": {"name": "old"}, "spec": rollout})).returncode == 0, 20)
    finally:
        current = json.loads(bare.cluster.kubectl("get", "crd", crd_name, "-o", "json").stdout)
        original["metadata"] = {"name": crd_name, "resourceVersion": current["metadata"]["resourceVersion"]}
        original.pop("status", None)
        bare.cluster.kubectl("replace", "-f", "-", input=json.dumps(original))
    bare.api.wait_for("SpecValid False", lambda: condition(bare, "old", "SpecValid").get("reason"), 20)
    assert "interval" in condition(bare, "old", "SpecValid")["message"]
    version_before = bare.api.rollout(bare.namespace, "old")["metadata"]["resourceVersion"]
    time.sleep(3)
    assert bare.api.rollout(bare.namespace, "old")["metadata"]["resourceVersion"] == version_before
    assert warnings(bare, "old") == ["InvalidSpec"]
    bare.cli("rollout", "abort", "old", "-n", bare.namespace)
    bare.api.wait_for("RolledBack", lambda: status(bare, "old").get("phase") == "RolledBack", 20)
