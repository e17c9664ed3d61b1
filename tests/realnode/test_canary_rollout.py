"""CanaryRollout on the real node, through the real gateway, decided by upstream Prometheus: the baseline and the
candidate are tritonserver Pods of the serving image (the echo model, whose control file the test flips to make
the candidate fail or slow down); Traefik enforces the route's weights and mirrors the shadow step through the
rollout's TraefikService; Prometheus discovers the Pods through the API server (kubernetes_sd_configs), scrapes
the operator's /metrics, and evaluates the rollback alerts as alerting rules; a plain client sending to the
Gateway is the only client, and counts who answered from the responses.

- a healthy candidate is promoted through every step, having been mirrored copies of requests during the shadow
  step while every answer came from the baseline, and the route is given back once the baseline is released;
- a candidate that starts failing or slowing down is rolled back within one analysis interval + 2 s of its alert
  firing, and from then on the gateway sends it nothing;
- a failing analysis metric rolls back without any alert.

The process-node suite (tests/e2e/canary) keeps the scenarios that need no traffic (manual controls, route
faults, route restores, random operator kills, an unreachable Prometheus).
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubestill.clients.prometheus import Prometheus
from kubestill.dev.gateway import Gateway, start_gateway
from kubestill.dev.gateway_client import GatewayClient, tagged_backend_ref
from kubestill.dev.operator_process import OperatorProcess
from kubestill.dev.prometheus import PrometheusProcess, kubernetes_pods_job, start_prometheus
from kubestill.dev.realnode import RealNode

from ..e2e.canary.tritons import make_repository
from .conftest import NodeSession, describe_pods, get_json, new_namespace, operator_process, wait_for
from .test_canary_agreement import PORT, readable, shadow_answer, triton

pytestmark = pytest.mark.realnode

RATE = 20.0  # client requests per second
WINDOW = "5s"  # rate() window of the alerts and the analysis queries; with 1 s scrapes, 5 samples


def selector(namespace: str) -> str:
    """The candidate's tritonserver series, by the labels the kubernetes-pods job gives them."""
    return f'namespace="{namespace}",service="candidate"'


def alert_rules(namespace: str) -> dict[str, Any]:
    """The rollback alerts, as Prometheus alerting rules: any failed inference of the candidate, or a mean latency
    over 100 ms; labelled with the service they are about, as a rollout's rollbackAlerts match them."""
    sel = selector(namespace)
    labels = {"service": "candidate", "severity": "page"}
    return {"groups": [{"name": "kubestill-canary-realnode", "interval": "1s", "rules": [
        {"alert": "CandidateErrors", "expr": f"sum(rate(nv_inference_request_failure{{{sel}}}[{WINDOW}])) > 0",
         "labels": labels, "annotations": {"summary": "the candidate model fails requests"}},
        {"alert": "CandidateSlow",
         "expr": f"sum(rate(nv_inference_request_duration_us{{{sel}}}[{WINDOW}])) / "
                 f"sum(rate(nv_inference_request_success{{{sel}}}[{WINDOW}])) / 1000 > 100",
         "labels": labels, "annotations": {"summary": "the candidate's mean latency is over 100 ms"}},
    ]}]}


def analysis(namespace: str, prometheus_url: str, **extra: Any) -> dict[str, Any]:
    """The candidate's success ratio (min 0.99) and mean latency in ms (max 100) over the window, every second;
    the first rounds of a step see no data until the window holds traffic at the new weight, so up to 10
    inconclusive rounds in a row are tolerated."""
    sel = selector(namespace)
    success, failure = (f"sum(rate(nv_inference_request_{kind}{{{sel}}}[{WINDOW}]))" for kind in ("success",
                                                                                                  "failure"))
    latency = f"sum(rate(nv_inference_request_duration_us{{{sel}}}[{WINDOW}])) / {success} / 1000"
    return {"prometheusUrl": prometheus_url, "interval": "1s", "inconclusiveLimit": 10,
            "metrics": [{"name": "success-ratio", "query": f"{success} / ({success} + {failure})", "min": 0.99},
                        {"name": "mean-latency-ms", "query": latency, "max": 100}],
            **extra}


@dataclass
class Canary:
    """The module's running stack, shared by its tests: each test rolls out over a route of its own (its own
    hostname on the one Gateway) and leaves the candidate answering `ok` with no alert firing."""

    node: RealNode
    namespace: str
    gateway: Gateway
    prometheus: PrometheusProcess
    operator: OperatorProcess
    control: Path

    def set_candidate(self, mode: str) -> None:
        """ok | fail | slow:<ms> (the echo model re-reads its control file within 100 ms)."""
        self.control.write_text(mode)

    def route(self, name: str) -> str:
        """HTTPRoute `name` (hostname `<name>.canary.test`, baseline 100, candidate 0, each backendRef tagging its
        answers) once it answers through the gateway; returns the hostname."""
        host = f"{name}.canary.test"
        route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                 "metadata": {"name": name, "namespace": self.namespace},
                 "spec": {"parentRefs": [self.gateway.parent_ref()], "hostnames": [host], "rules": [{"backendRefs": [
                     tagged_backend_ref("baseline", PORT, 100, "baseline"),
                     tagged_backend_ref("candidate", PORT, 0, "candidate")]}]}}
        self.node.cluster.kubectl("apply", "-f", "-", input=json.dumps(route))
        probe = GatewayClient(self.gateway.url, "echo", host=host)
        conn = http.client.HTTPConnection(self.gateway.host, self.gateway.port, timeout=10)
        try:
            wait_for(lambda: probe.send(conn, 0) == "baseline", 60, f"route {name} to answer through the gateway")
        finally:
            conn.close()
        return host

    def client(self, host: str) -> GatewayClient:
        return GatewayClient(self.gateway.url, "echo", rate=RATE, max_seconds=300, host=host, untagged=shadow_answer)

    def rollout(self, name: str, spec: dict[str, Any]) -> None:
        body = {"apiVersion": "kubestill.io/v1alpha1", "kind": "CanaryRollout",
                "metadata": {"name": name, "namespace": self.namespace}, "spec": spec}
        self.node.cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(body))

    def get(self, name: str) -> dict[str, Any]:
        return get_json(self.node, "canaryrollout", name, "-n", self.namespace)

    def status(self, name: str) -> dict[str, Any]:
        return self.get(name).get("status") or {}

    def weights(self, route: str) -> dict[str, int]:
        body = get_json(self.node, "httproute", route, "-n", self.namespace)
        return {r["name"]: r.get("weight", 1) for r in body["spec"]["rules"][0]["backendRefs"]}

    def firing(self) -> list[str]:
        return [a.get("alertname", "") for a in Prometheus(alerts_ttl=0).firing_alerts(self.prometheus.url)]

    def candidate_served(self, at: datetime | None = None) -> float:
        """Requests the candidate's tritonserver answered by `at` (default: now), from its own metrics."""
        query = f"sum(nv_inference_request_success{{{selector(self.namespace)}}})"
        return Prometheus(alerts_ttl=0).query_value(self.prometheus.url, query, at) or 0.0

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus.url}/api/v1/query?query={urllib.parse.quote(promql)}"
        with urllib.request.urlopen(url, timeout=5) as resp:
            result: list[dict[str, Any]] = json.loads(resp.read())["data"]["result"]
            return result

    def until(self, what: str, check: Callable[[], Any], timeout: float, client: GatewayClient | None = None,
              rollout: str = "", interval: float = 0.2) -> Any:
        """wait_for `check`, marking the client's answers with the rollout's step as it goes, and saying what the
        rollout, the client, the Pods and the operator were doing if it times out."""
        def step() -> Any:
            if client is not None and rollout:
                status = self.status(rollout)
                client.mark(f"{status.get('phase', 'Pending')} step {status.get('currentStep', '-')}")
            return check()

        try:
            return wait_for(step, timeout, what, interval=interval)
        except AssertionError as err:
            raise AssertionError(
                f"{err}\nstatus {json.dumps(self.status(rollout))[:3000] if rollout else ''}\n"
                f"answers {client.snapshot() if client else ''}\n{describe_pods(self.node, self.namespace)}\n"
                f"--- operator ---\n{self.operator.log_tail(40)}") from None


@pytest.fixture(scope="module")
def running(node_session: NodeSession, loaded: Callable[[RealNode, str], str],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Canary]:
    """tritonservers `baseline` and `candidate` (the echo model) as Pods of the serving image, Traefik's Gateway,
    Prometheus discovering the namespace's Pods with the alert rules and scraping the operator, and the operator
    (a host process with its default images)."""
    node = node_session.node
    root = tmp_path_factory.mktemp("canary")
    serving = loaded(node, "serving")
    with new_namespace(node) as namespace:
        manifests: list[dict[str, Any]] = []
        for name in ("baseline", "candidate"):
            directory = root / name
            directory.mkdir()
            make_repository(directory, directory / "control")
            readable(directory)
            manifests += triton(name, serving, directory)
        node.cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(manifests))
        operator = operator_process(node, root / "operator.log").start()
        scrape = kubernetes_pods_job("kubernetes-pods", node.cluster.kubeconfig, [namespace])
        try:
            with start_gateway(node.cluster.kubeconfig, name=f"canary-{namespace[-6:]}",
                               workdir=root / "traefik") as gateway, \
                    start_prometheus({"kubestill-operator": [f"127.0.0.1:{operator.metrics_port}"]},
                                     alert_rules(namespace), workdir=root / "prometheus",
                                     scrape_configs=[scrape]) as prom:
                canary = Canary(node, namespace, gateway, prom, operator, root / "candidate" / "control")
                up = f'count_over_time(up{{{selector(namespace)}}}[10s])'
                canary.until("Prometheus scraping the candidate's Pod",
                             lambda: float((canary.query(up) or [{"value": [0, "0"]}])[0]["value"][1]) >= 3, 300,
                             interval=1)
                yield canary
        finally:
            operator.stop()


@pytest.fixture
def canary(running: Canary) -> Iterator[Canary]:
    """The stack, with the candidate answering `ok` and no alert firing (a previous test may have broken it)."""
    running.set_candidate("ok")
    running.until("no alert firing", lambda: not running.firing(), 30)
    yield running
    running.set_candidate("ok")


def spec(canary: Canary, route: str, steps: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"route": {"name": route}, "baseline": {"name": "baseline", "port": PORT},
            "candidate": {"service": {"name": "candidate", "port": PORT}}, "steps": steps,
            "analysis": analysis(canary.namespace, canary.prometheus.url),
            "rollbackAlerts": [{"labels": {"service": "{{candidate}}", "severity": "page"}}], **extra}


def history(status: dict[str, Any]) -> list[tuple[str, int, int]]:
    return [(h["action"], h["step"], h["weight"]) for h in status.get("history", [])]


def test_healthy_candidate_is_promoted_through_every_step(canary: Canary) -> None:
    host = canary.route("healthy")
    client = canary.client(host).start()
    try:
        canary.rollout("healthy", spec(
            canary, "healthy",
            [{"weight": 20, "pause": "3s"}, {"weight": 50, "pause": "3s"}, {"weight": 100, "pause": "2s"}],
            shadow={"percent": 50, "pause": "4s", "mirror": "TraefikService"},
            promotion={"keepBaselineFor": "3s"}))
        canary.until("the rollout to be Promoted", lambda: canary.status("healthy").get("phase") == "Promoted",
                     120, client, "healthy")
        canary.until("the baseline released", lambda: canary.weights("healthy") == {"candidate": 100}, 15)
        client.mark("released")
        time.sleep(2)  # Traefik puts the last route in force
        client.mark("after")
        time.sleep(3)
    finally:
        client.stop()
    status = canary.status("healthy")
    assert history(status) == [
        ("Start", -1, 0), ("Advance", 0, 20), ("Advance", 1, 50), ("Advance", 2, 100), ("Promote", 2, 100),
        ("ReleaseBaseline", 2, 100)], status["history"]
    # Every step lasted at least its pause, and ended on a successful round measured after it.
    at = [datetime.fromisoformat(h["at"]) for h in status["history"]]
    # ... and the baseline was kept in the route (weight 0) for keepBaselineFor before its release.
    for i, pause in enumerate([4, 3, 3, 2, 3]):
        assert (at[i + 1] - at[i]).total_seconds() >= pause, status["history"]
    results = {m["result"] for m in status["measurements"]}
    assert "Successful" in results and not results & {"Failed", "Error"}, status["measurements"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Progressing"]["reason"] == "Promoted" and conditions["Healthy"]["status"] == "True"

    answers = client.total()
    snapshot = dict(client.snapshot())
    # Every request answered 200 through the gateway, by the baseline (its backendRef, or the TraefikService's
    # main service in the shadow step), then by the candidate; after the release, by the candidate alone.
    assert set(answers) <= {"baseline", "shadow:ok", "candidate"}, client.snapshot()
    assert answers["shadow:ok"] > 0 and answers["candidate"] > 0, client.snapshot()
    assert set(snapshot["after"]) == {"candidate"}, client.snapshot()
    # Mirrored copies reached the candidate before any live request could: what its own tritonserver had answered
    # a second before the first weighted step was written, while its weight was 0, was mirrored traffic, at most
    # one copy per request that went through the TraefikService (50 %).
    mirrored = canary.candidate_served(at[1] - timedelta(seconds=1))
    assert 0 < mirrored <= answers["shadow:ok"], (mirrored, client.snapshot())
    # The operator's own /metrics, scraped by the same Prometheus.
    canary.until("the operator's metrics in Prometheus", lambda: [
        r["value"][1] for r in canary.query(f'kubestill_canary_weight_percent{{name="healthy",'
                                            f'namespace="{canary.namespace}"}}')] == ["100"], 15)
    # Promoted and released: kubestill has given the route back (no field ownership, no finalizer), so GitOps
    # applies it again without conflicts.
    canary.until("the route given back", lambda: "kubestill.io/route-restore" not in (
        canary.get("healthy")["metadata"].get("finalizers") or []), 15)
    route = get_json(canary.node, "httproute", "healthy", "-n", canary.namespace, "--show-managed-fields")
    assert "kubestill-canary" not in {m["manager"] for m in route["metadata"]["managedFields"]}
    print(yaml.safe_dump({"answers by step": {p: dict(c) for p, c in client.snapshot()},
                          "mirrored to the candidate": mirrored}))


@pytest.mark.parametrize(("mode", "alert"), [("fail", "CandidateErrors"), ("slow:250", "CandidateSlow")])
def test_degrading_candidate_is_rolled_back_when_the_alert_fires(canary: Canary, mode: str, alert: str) -> None:
    name = "degrading-" + mode.split(":")[0]
    interval = 2.0
    host = canary.route(name)
    client = canary.client(host).start()
    try:
        rollout = spec(canary, name, [{"weight": 30, "pause": "60s"}, {"weight": 60, "pause": "60s"}])
        # Alerts only, so the alert path is what acts (the metrics path is the next test).
        rollout["analysis"] = {"prometheusUrl": canary.prometheus.url, "interval": "2s"}
        canary.rollout(name, rollout)
        canary.until("the candidate at 30%", lambda: canary.weights(name).get("candidate") == 30, 30, client, name)
        # Let the candidate serve healthily through the gateway for a few rounds, then break it.
        canary.until("the candidate answering through the gateway", lambda: client.total()["candidate"] >= 10,
                     30, client, name)
        time.sleep(2)
        assert canary.status(name).get("phase") == "Progressing", canary.status(name)
        canary.set_candidate(mode)
        client.mark("degraded")
        canary.until(f"{alert} firing", lambda: alert in canary.firing(), 30, interval=0.05)
        fired_at = time.monotonic()
        canary.until("the candidate's weight back to 0", lambda: canary.weights(name).get("candidate") == 0,
                     interval + 2, interval=0.05)
        reaction = time.monotonic() - fired_at
        client.mark("rolled back")
        time.sleep(3)  # Traefik puts the route in force
        client.mark("after")
        time.sleep(3)
    finally:
        client.stop()
    assert reaction <= interval + 2
    status = canary.status(name)
    assert status["phase"] == "RolledBack" and alert in status["message"], status
    assert canary.weights(name) == {"baseline": 100, "candidate": 0}
    assert history(status)[-1] == ("Rollback", 0, 0), status["history"]
    snapshot = dict(client.snapshot())
    # The broken candidate answered some live requests until the rollback (errors, or slow 200s), and none after.
    assert set(snapshot["after"]) == {"baseline"}, client.snapshot()
    print(yaml.safe_dump({"seconds from firing to weight 0": round(reaction, 2),
                          "answers": {p: dict(c) for p, c in client.snapshot()}}))


def test_failing_analysis_rolls_back_without_alerts(canary: Canary) -> None:
    host = canary.route("metrics")
    client = canary.client(host).start()
    try:
        rollout = spec(canary, "metrics", [{"weight": 40, "pause": "60s"}, {"weight": 80, "pause": "60s"}])
        rollout["rollbackAlerts"] = []
        rollout["analysis"]["failureLimit"] = 1
        canary.rollout("metrics", rollout)
        canary.until("the candidate at 40%", lambda: canary.weights("metrics").get("candidate") == 40, 30, client,
                     "metrics")
        canary.until("the candidate answering through the gateway", lambda: client.total()["candidate"] >= 10,
                     30, client, "metrics")
        canary.set_candidate("fail")
        canary.until("RolledBack", lambda: canary.status("metrics").get("phase") == "RolledBack", 30, client,
                     "metrics")
    finally:
        client.stop()
    status = canary.status("metrics")
    # failureLimit 1: the second failed round rolls back, and the message names the metric and its threshold.
    assert "analysis failed 2 time(s)" in status["message"] and "success-ratio" in status["message"], status
    assert "< min 0.99" in status["message"], status
    assert canary.weights("metrics")["candidate"] == 0
    # The gateway passed the candidate's errors on (tagged with its backendRef) until the rollback.
    assert any(who.startswith("candidate:") for who in client.total()), client.snapshot()
