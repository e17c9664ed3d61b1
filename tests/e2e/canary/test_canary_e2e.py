"""CanaryRollout end to end: real control plane, operator, Prometheus and two tritonservers.

Scenarios: a healthy candidate is promoted through every step; a candidate that starts failing or slowing is
rolled back within one analysis interval + 2 s of the alert firing; an unreachable Prometheus never lets a
rollout be promoted; killing the operator mid-rollout neither skips nor repeats a step.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from .conftest import BASELINE, CANDIDATE, ROUTE, Stack, analysis

pytestmark = pytest.mark.e2e


def weights(route: dict[str, Any]) -> dict[str, int]:
    return {r["name"]: r.get("weight", 1) for r in route["spec"]["rules"][0]["backendRefs"]}


def history(rollout: dict[str, Any]) -> list[tuple[str, int, int]]:
    return [(h["action"], h["step"], h["weight"]) for h in rollout["status"].get("history", [])]


def phase(stack: Stack, name: str) -> str:
    return str(stack.api.rollout(stack.namespace, name).get("status", {}).get("phase", ""))


def base_spec(prometheus_url: str, steps: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "route": {"name": ROUTE},
        "baseline": {"name": BASELINE.name, "port": BASELINE.port},
        "candidate": {"service": {"name": CANDIDATE.name, "port": CANDIDATE.port}},
        "steps": steps,
        "analysis": analysis(prometheus_url),
        "rollbackAlerts": [{"labels": {"service": "{{candidate}}", "severity": "page"}}],
        **extra,
    }


def test_healthy_candidate_is_promoted_through_every_step(stack: Stack) -> None:
    load = stack.loadgen()
    try:
        spec = base_spec(
            stack.prometheus.url,
            [{"weight": 20, "pause": "3s"}, {"weight": 50, "pause": "3s"}, {"weight": 100, "pause": "2s"}],
            shadow={"percent": 50, "pause": "3s"},
            promotion={"keepBaselineFor": "3s"},
        )
        stack.rollout("healthy", spec)
        stack.api.wait_for("Promoted", lambda: phase(stack, "healthy") == "Promoted", timeout=60,
                           context=lambda: stack.api.rollout(stack.namespace, "healthy").get("status"))
        rollout = stack.api.rollout(stack.namespace, "healthy")
        assert history(rollout) == [
            ("Start", -1, 0), ("Advance", 0, 20), ("Advance", 1, 50), ("Advance", 2, 100), ("Promote", 2, 100)
        ]
        # Every step lasted at least its pause, and ended on a successful round measured after it.
        at = [datetime.fromisoformat(h["at"]) for h in rollout["status"]["history"]]
        pauses = [3, 3, 3, 2]
        for i, pause in enumerate(pauses):
            assert (at[i + 1] - at[i]).total_seconds() >= pause
        # Early rounds of a step may see no data yet (Inconclusive); nothing failed.
        results = {m["result"] for m in rollout["status"]["measurements"]}
        assert "Successful" in results and not results & {"Failed", "Error"}
        # Baseline kept at weight 0, then released after keepBaselineFor.
        assert weights(stack.api.route(stack.namespace)) == {BASELINE.name: 0, CANDIDATE.name: 100}
        stack.api.wait_for(
            "baseline released",
            lambda: weights(stack.api.route(stack.namespace)) == {CANDIDATE.name: 100},
            timeout=10, context=lambda: stack.api.rollout(stack.namespace, "healthy").get("status"),
        )
        # The operator's own /metrics, scraped by the same Prometheus.
        stack.api.wait_for(
            "operator metrics in Prometheus",
            lambda: [r["value"][1] for r in stack.query('kubestill_canary_weight_percent{name="healthy"}')] == ["100"]
            and stack.query('kubestill_canary_promotions_total{name="healthy"} == 1'),
            timeout=10,
        )
        conditions = {c["type"]: c for c in stack.api.rollout(stack.namespace, "healthy")["status"]["conditions"]}
        assert conditions["Progressing"]["reason"] == "Promoted"
        assert conditions["Healthy"]["status"] == "True"
    finally:
        load.stop()
    tallies = load.snapshot()
    # The data plane followed the route: the shadow step mirrored, then real traffic reached the candidate.
    assert tallies["candidate"].mirrored > 0
    assert tallies["candidate"].ok > 0 and tallies["candidate"].failed == 0
    seen = [w for _, w in load.changes]
    assert (50, 50, None) in seen and (0, 100, None) in seen
    # Promoted and the baseline released: the rollout is over, and kubestill has given the route back (no field
    # ownership left, no finalizer), so GitOps applies it again without conflicts.
    stack.api.wait_for(
        "route given back",
        lambda: "kubestill.io/route-restore" not in (
            stack.api.rollout(stack.namespace, "healthy")["metadata"].get("finalizers") or []),
        timeout=10,
    )
    managers = {m["manager"] for m in stack.api.route(stack.namespace)["metadata"]["managedFields"]}
    assert "kubestill-canary" not in managers


@pytest.mark.parametrize(("mode", "alert"), [("fail", "CandidateErrors"), ("slow:250", "CandidateSlow")])
def test_degrading_candidate_is_rolled_back_when_the_alert_fires(stack: Stack, mode: str, alert: str) -> None:
    interval = 2.0
    load = stack.loadgen()
    try:
        spec = base_spec(stack.prometheus.url, [{"weight": 30, "pause": "60s"}, {"weight": 60, "pause": "60s"}])
        # Alerts only, so the alert path is what acts (the metrics path is the next test).
        spec["analysis"] = {"prometheusUrl": stack.prometheus.url, "interval": "2s"}
        stack.rollout("degrading", spec)
        stack.api.wait_for(
            "candidate at 30%", lambda: weights(stack.api.route(stack.namespace)).get(CANDIDATE.name) == 30, 30
        )
        # Let the candidate serve healthily for a few rounds, then break it.
        time.sleep(4)
        assert phase(stack, "degrading") == "Progressing"
        stack.set_candidate(mode)
        fired = stack.api.wait_for("alert firing", lambda: alert in stack.firing(), timeout=20, interval=0.05)
        fired_at = time.monotonic()
        assert fired
        stack.api.wait_for(
            "candidate weight 0",
            lambda: weights(stack.api.route(stack.namespace)).get(CANDIDATE.name) == 0,
            timeout=interval + 2,
            interval=0.05,
        )
        reaction = time.monotonic() - fired_at
        assert reaction <= interval + 2
    finally:
        load.stop()
    status = stack.api.rollout(stack.namespace, "degrading")["status"]
    assert status["phase"] == "RolledBack"
    assert alert in status["message"]
    assert weights(stack.api.route(stack.namespace)) == {BASELINE.name: 100, CANDIDATE.name: 0}
    assert history(stack.api.rollout(stack.namespace, "degrading"))[-1] == ("Rollback", 0, 0)


def test_failing_analysis_rolls_back_without_alerts(stack: Stack) -> None:
    load = stack.loadgen()
    try:
        spec = base_spec(stack.prometheus.url, [{"weight": 40, "pause": "60s"}, {"weight": 80, "pause": "60s"}])
        spec["rollbackAlerts"] = []
        spec["analysis"] = {**analysis(stack.prometheus.url), "failureLimit": 1}
        stack.rollout("metrics", spec)
        stack.api.wait_for(
            "candidate at 40%", lambda: weights(stack.api.route(stack.namespace)).get(CANDIDATE.name) == 40, 30
        )
        time.sleep(3)
        stack.set_candidate("fail")
        stack.api.wait_for("RolledBack", lambda: phase(stack, "metrics") == "RolledBack", timeout=20)
    finally:
        load.stop()
    status = stack.api.rollout(stack.namespace, "metrics")["status"]
    # failureLimit 1: the second failed round rolls back, and the message names the metric and threshold.
    assert "analysis failed 2 time(s)" in status["message"] and "success-ratio" in status["message"]
    assert "< min 0.99" in status["message"]
    assert weights(stack.api.route(stack.namespace))[CANDIDATE.name] == 0


def test_unreachable_prometheus_is_never_promoted(stack: Stack) -> None:
    from kubestill.dev.controlplane import free_port

    nowhere = f"http://127.0.0.1:{free_port()}"
    spec = base_spec(nowhere, [{"weight": 10, "pause": "1s"}, {"weight": 100, "pause": "1s"}])
    spec["analysis"] = {**analysis(nowhere), "inconclusiveLimit": 3}
    stack.rollout("blind", spec)
    stack.api.wait_for("Paused", lambda: phase(stack, "blind") == "Paused", timeout=30)
    time.sleep(3)  # and it stays there
    status = stack.api.rollout(stack.namespace, "blind")["status"]
    assert status["phase"] == "Paused"
    assert status["pauseReason"] == "Inconclusive"
    assert status["currentStep"] == 0 and status["currentWeight"] == 10
    assert "promotedAt" not in status or status["promotedAt"] is None
    assert {m["result"] for m in status["measurements"]} == {"Error"}
    assert "Connection" in status["message"] or "connect" in status["message"].lower()
    assert weights(stack.api.route(stack.namespace))[CANDIDATE.name] == 10


def test_operator_killed_mid_rollout_resumes_without_skipping_or_repeating(stack: Stack) -> None:
    load = stack.loadgen()
    try:
        steps = [{"weight": 10, "pause": "3s"}, {"weight": 30, "pause": "3s"}, {"weight": 60, "pause": "3s"},
                 {"weight": 100, "pause": "1s"}]
        stack.rollout("restart", base_spec(stack.prometheus.url, steps))
        stack.api.wait_for(
            "step 1", lambda: stack.api.rollout(stack.namespace, "restart").get("status", {}).get("currentStep") == 1,
            timeout=30,
        )
        stack.operator.kill()
        killed = time.monotonic()
        time.sleep(5)  # step 1's pause ends while nobody is watching
        assert stack.api.rollout(stack.namespace, "restart")["status"]["currentStep"] == 1
        restarted = datetime.now(UTC)
        stack.operator.start()
        stack.api.wait_for("Promoted", lambda: phase(stack, "restart") == "Promoted", timeout=60)
        down = time.monotonic() - killed
    finally:
        load.stop()
    rollout = stack.api.rollout(stack.namespace, "restart")
    assert history(rollout) == [
        ("Start", 0, 10), ("Advance", 1, 30), ("Advance", 2, 60), ("Advance", 3, 100), ("Promote", 3, 100)
    ]
    at = [datetime.fromisoformat(h["at"]) for h in rollout["status"]["history"]]
    # Step 1 outlasted its pause by the outage; step 2 began after the restart and ran its full pause.
    assert (at[2] - at[1]).total_seconds() >= 5
    assert at[2] >= restarted
    assert (at[3] - at[2]).total_seconds() >= 3
    assert down > 5
