"""Live agreement on the real node, through the real gateway (issue #17): the operator (a host process with its
default images) deploys the judge as a Pod of the operator image; Traefik mirrors the route's traffic to it through
the rollout's TraefikService (spec.shadow.mirror: TraefikService; Traefik ignores the standard RequestMirror
filter); the judge asks the baseline and the candidate, two tritonserver Pods of the serving image with a tiny
python-backend model, through their Services' cluster DNS names; upstream Prometheus discovers the judge's Pod
through the API server; a plain client (kubestill.dev.gateway_client) sending to the Gateway is the only client.

bench/agreement_live.py makes the same decision on the process node (it starts the judge itself and lets the load
generator stand in for the gateway), to compare the SPRT with the fixed window; this is where users run it.

- a candidate that serves fine but answers differently is rolled back by the SPRT during the shadow step, with
  every answer the client got coming from the baseline;
- a candidate that agrees ends its steps early and is promoted, and what the judge counted matches what the two
  models answer to the same requests, asked directly;
- the judge's Pod going away during the shadow step (scaled to 0, then back) takes no request down: Traefik keeps
  the TraefikService and its main service while the mirror has no endpoints (providers.kubernetescrd.
  allowEmptyServices, set by kubestill.dev.gateway; without it every request was a 404 then).
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubestill.builders.judge import judge_backend
from kubestill.clients.prometheus import Prometheus
from kubestill.dev.gateway import Gateway, start_gateway
from kubestill.dev.gateway_client import GatewayClient, infer_body, tagged_backend_ref
from kubestill.dev.operator_process import OperatorProcess
from kubestill.dev.prometheus import PrometheusProcess, kubernetes_pods_job, start_prometheus
from kubestill.dev.realnode import RealNode

from ..e2e.canary.tritons import make_repository
from .conftest import describe_pods, get_json, operator_process, wait_for

pytestmark = pytest.mark.realnode

ROLLOUT = "agreement"
JUDGE = judge_backend(ROLLOUT).name
PORT = 8000  # tritonserver's http port, the Services' port
METRICS_PORT = 8002
RATE = 20.0  # client requests per second
# ~140 judged requests decide the SPRT at 20/s, plus the judge Pod's start and Prometheus' discovery of it.
BOUND_S = 150.0


def triton(name: str, image: str, directory: Path) -> list[dict[str, Any]]:
    """Deployment and Service `name`: tritonserver of the serving image on the model repository `directory`/repo,
    `directory` mounted from the host at the same path, so what the repository names by absolute path (the echo
    model's control file, which the test writes to flip the candidate's behaviour; a real model's export) is the
    host's."""
    labels = {"app.kubernetes.io/instance": name}
    container = {"name": "tritonserver", "image": image, "imagePullPolicy": "Never",
                 "command": ["tritonserver", f"--model-repository={directory / 'repo'}", f"--http-port={PORT}",
                             f"--metrics-port={METRICS_PORT}"],
                 "ports": [{"name": "http", "containerPort": PORT}],
                 "volumeMounts": [{"name": "models", "mountPath": str(directory), "readOnly": True}],
                 "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": PORT}, "periodSeconds": 1}}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels, "annotations": {"prometheus.io/scrape": "true",
                                                           "prometheus.io/port": str(METRICS_PORT)}},
            "spec": {"containers": [container],
                     "volumes": [{"name": "models", "hostPath": {"path": str(directory), "type": "Directory"}}]}}},
    }
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
               "spec": {"selector": labels, "ports": [{"name": "http", "port": PORT, "targetPort": PORT}]}}
    return [deployment, service]


def readable(root: Path) -> None:
    """The serving image's user (65532) reads the repository through the hostPath: pytest's tmp dirs are 0700."""
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o666 if path.name == "control" else 0o644)


def shadow_answer(body: bytes) -> str:
    """Who answered a request that went through the rollout's TraefikService (Traefik applies no backendRef
    filter there, so no header says): `shadow:ok` for the echo model's `ok:<text>` (the baseline, or a candidate
    that agrees), `shadow:wrong` for `wrong:<text>` (the disagreeing candidate)."""
    label = str(json.loads(body)["outputs"][0]["data"][0])
    return f"shadow:{label.split(':', 1)[0]}"


@dataclass
class Stack:
    """What a test drives: the rollout of `model` (the baseline's and the candidate's Triton model name), a
    client sending `texts` (empty: "request <n>"), and `min_rate`/`delta` of the agreement analysis."""

    node: RealNode
    namespace: str
    gateway: Gateway
    prometheus: PrometheusProcess
    operator: OperatorProcess
    candidate_control: Path
    model: str = "echo"
    untagged: Callable[[bytes], str] = shadow_answer
    texts: Sequence[str] = field(default_factory=list)
    min_rate: float = 0.95
    delta: float = 0.02

    def status(self) -> dict[str, Any]:
        return get_json(self.node, "canaryrollout", ROLLOUT, "-n", self.namespace).get("status") or {}

    def rollout(self, *, sequential: bool = True) -> None:
        """The CanaryRollout; without `sequential` the shadow step holds for its 1h pause (agreement checked each
        interval, no early decision)."""
        spec: dict[str, Any] = {
            "route": {"name": "route"},
            "baseline": {"name": "baseline", "port": PORT},
            "candidate": {"service": {"name": "candidate", "port": PORT}},
            "steps": [{"weight": 50, "pause": "1h"}],
            "shadow": {"percent": 100, "pause": "1h", "mirror": "TraefikService"},
            "analysis": {"prometheusUrl": self.prometheus.url, "interval": "1s", "inconclusiveLimit": 90,
                         "agreement": {"minRate": self.min_rate, "task": "classification", "samplePercent": 100,
                                       "maxBaselineRps": 100, "window": "1m"},
                         "sequential": {"minPause": "3s", "delta": self.delta}},
            "promotion": {"keepBaselineFor": "0s"},
        }
        if not sequential:
            del spec["analysis"]["sequential"]
        body = {"apiVersion": "kubestill.io/v1alpha1", "kind": "CanaryRollout",
                "metadata": {"name": ROLLOUT, "namespace": self.namespace}, "spec": spec}
        self.node.cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(body))

    def client(self) -> GatewayClient:
        return GatewayClient(self.gateway.url, self.model, rate=RATE, max_seconds=2 * BOUND_S,
                             untagged=self.untagged, texts=self.texts)

    def wait_phase(self, phase: str, client: GatewayClient) -> dict[str, Any]:
        def done() -> dict[str, Any]:
            status = self.status()
            client.mark(str(status.get("phase", "Pending")))
            return status if status.get("phase") == phase else {}

        try:
            return wait_for(done, BOUND_S, f"the rollout to be {phase}", interval=0.5)
        except AssertionError as err:
            raise AssertionError(f"{err}\nstatus {json.dumps(self.status())[:3000]}\nanswers {client.snapshot()}\n"
                                 f"{describe_pods(self.node, self.namespace)}\n--- operator ---\n"
                                 f"{self.operator.log_tail(40)}") from None

    def decide(self, phase: str) -> tuple[dict[str, Any], GatewayClient]:
        """Apply the rollout with the client sending, until status shows `phase`: (that status, the client)."""
        client = self.client().start()
        try:
            self.rollout()
            return self.wait_phase(phase, client), client
        finally:
            client.stop()

    def judge_counts(self) -> dict[str, float]:
        """The judge's samples by result, as Prometheus scraped them from its Pod; a result it never counted is
        left out (the judge exports both at 0 from its start)."""
        query = (f'sum by (result) (kubestill_judge_samples_total{{namespace="{self.namespace}",'
                 f'service="{JUDGE}"}})')
        url = f"{self.prometheus.url}/api/v1/query?query=" + urllib.parse.quote(query)
        with urllib.request.urlopen(url, timeout=5) as resp:
            result = json.loads(resp.read())["data"]["result"]
        return {r["metric"]["result"]: float(r["value"][1]) for r in result if float(r["value"][1]) > 0}

    def judged(self, expected: float) -> dict[str, float]:
        """The judge's samples by result once Prometheus has scraped `expected` of them (the last scrape after
        15 s)."""
        def scraped() -> dict[str, float]:
            counts = self.judge_counts()
            return counts if sum(counts.values()) >= expected else {}

        try:
            return wait_for(scraped, 15, f"{expected:g} judged samples in Prometheus")
        except AssertionError:
            return self.judge_counts()

    def candidate_served(self) -> float:
        """Requests the candidate's tritonserver answered, from its own metrics (the judge's asks included)."""
        query = f'sum(nv_inference_request_success{{namespace="{self.namespace}",service="candidate"}})'
        return Prometheus(alerts_ttl=0).query_value(self.prometheus.url, query) or 0.0


@contextmanager
def serving_stack(real_node: RealNode, namespace: str, loaded: Callable[[RealNode, str], str], tmp_path: Path,
                  repositories: dict[str, Path], model: str) -> Iterator[Stack]:
    """tritonservers "baseline" and "candidate" of the serving image on `repositories`' directories (each
    holding repo/), the route through a Traefik Gateway to the baseline (answering `model` through the gateway),
    upstream Prometheus discovering the namespace's Pods, and the operator; the rollout is deleted on exit."""
    serving = loaded(real_node, "serving")
    loaded(real_node, "operator")  # the judge's image
    cluster = real_node.cluster
    manifests: list[dict[str, Any]] = []
    for name, directory in repositories.items():
        readable(directory)
        manifests += triton(name, serving, directory)
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(manifests))
    operator = operator_process(real_node, tmp_path / "operator.log").start()
    scrape = kubernetes_pods_job("kubernetes-pods", cluster.kubeconfig, [namespace])
    gateway_name = f"agree-{namespace[-6:]}"
    try:
        with start_gateway(cluster.kubeconfig, name=gateway_name, workdir=tmp_path / "traefik") as gateway, \
                start_prometheus({}, workdir=tmp_path / "prometheus", scrape_configs=[scrape]) as prom:
            route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                     "metadata": {"name": "route", "namespace": namespace},
                     "spec": {"parentRefs": [gateway.parent_ref()], "rules": [{"backendRefs": [
                         tagged_backend_ref("baseline", PORT, 100, "baseline"),
                         tagged_backend_ref("candidate", PORT, 0, "candidate")]}]}}
            cluster.kubectl("apply", "-f", "-", input=json.dumps(route))
            probe = GatewayClient(gateway.url, model)
            conn = http.client.HTTPConnection(gateway.host, gateway.port, timeout=10)
            try:
                wait_for(lambda: probe.send(conn, 0) == "baseline", 300,
                         "the baseline's tritonserver Pod to answer through the gateway", interval=1)
            except AssertionError as err:
                raise AssertionError(f"{err}\n{describe_pods(real_node, namespace)}") from None
            conn.close()
            yield Stack(real_node, namespace, gateway, prom, operator, repositories["candidate"] / "control",
                        model=model)
    finally:
        cluster.kubectl("delete", "canaryrollout", ROLLOUT, "-n", namespace, "--ignore-not-found", "--wait=false",
                        check=False)
        operator.stop()


@pytest.fixture
def stack(real_node: RealNode, namespace: str, loaded: Callable[[RealNode, str], str],
          tmp_path: Path) -> Iterator[Stack]:
    """The echo model (tests/e2e/canary/tritons.py) as baseline and candidate; the candidate's control file
    switches it between agreeing and answering `wrong:<text>`."""
    repositories = {}
    for name in ("baseline", "candidate"):
        directory = tmp_path / name
        directory.mkdir()
        make_repository(directory, directory / "control")
        repositories[name] = directory
    with serving_stack(real_node, namespace, loaded, tmp_path, repositories, "echo") as ready:
        yield ready


def infer(node: RealNode, namespace: str, service: str, text: str) -> str:
    """The echo model's LABEL for `text`, asked of `service`'s Pod directly (not through the gateway)."""
    pod = get_json(node, "pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={service}")["items"][0]
    request = urllib.request.Request(f"http://{pod['status']['podIP']}:{PORT}/v2/models/echo/infer",
                                     data=infer_body(text), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return str(json.load(resp)["outputs"][0]["data"][0])


def test_a_disagreeing_candidate_is_rolled_back_from_the_shadow_step(stack: Stack) -> None:
    stack.candidate_control.write_text("wrong")
    status, client = stack.decide("RolledBack")
    assert "rolled back: agreement 0.000 < 0.95 - 0.02 (SPRT alpha=0.05 beta=0.05" in status["message"], status
    assert [h["action"] for h in status["history"]] == ["Start", "Rollback"], status["history"]
    assert status["sequential"]["step"] == -1 and status["sequential"]["outcome"] == "Reject", status
    # Every answer the client got came from the baseline, through the gateway: its own backendRef before and
    # after the shadow step, the TraefikService's main service during it (never a 404 while the judge started,
    # never the candidate's `wrong:` answer).
    # How many went through it is not a fixed share of the step: the SPRT may reject after minPause (3 s from
    # the step's start, when the route is written), and Traefik takes its share of that to put the route in
    # force (32 and 59 answers in two runs at 20/s); at least the judge's samples did.
    answers = client.total()
    assert set(answers) == {"baseline", "shadow:ok"}, client.snapshot()
    assert answers["shadow:ok"] >= status["sequential"]["samples"] > 0, (client.snapshot(), status["sequential"])
    # The judge got a copy of every request that went through the TraefikService and found every pair
    # different; the candidate answered only the judge.
    counts = stack.judged(answers["shadow:ok"])
    samples = status["sequential"]["samples"]
    assert counts == {"disagree": answers["shadow:ok"]}, (counts, answers)
    assert counts["disagree"] >= samples > 0, (counts, status["sequential"])
    served = stack.candidate_served()
    assert served <= counts["disagree"], (served, counts)  # its own counter, scraped after the last sample
    print(yaml.safe_dump({"decision": status["message"], "answers": dict(answers), "judge samples": counts,
                          "candidate served": served, "sequential": status["sequential"]}))


def test_an_agreeing_candidate_ends_its_steps_early_and_the_judge_counts_what_the_models_answer(
        stack: Stack) -> None:
    client = stack.client().start()
    started = time.monotonic()
    try:
        stack.rollout()
        status = stack.wait_phase("Promoted", client)
    finally:
        client.stop()
    elapsed = time.monotonic() - started
    history = status["history"]
    assert [h["action"] for h in history[:3]] == ["Start", "Advance", "Promote"], history
    assert "shadow step passed early: agreement 1.000 >= 0.95 accepted" in history[1]["reason"], history
    assert "all steps passed early" in history[2]["reason"], history
    answers = client.total()
    assert set(answers) <= {"baseline", "shadow:ok", "candidate"} and answers["candidate"] > 0, client.snapshot()

    # The judge's verdict against the same requests asked of both models directly: the client's texts are
    # `request <n>`; each pair the judge compared was one of them.
    sent = sum(answers.values())
    offline = [infer(stack.node, stack.namespace, "baseline", f"request {n}")
               == infer(stack.node, stack.namespace, "candidate", f"request {n}") for n in range(0, sent, 10)]
    counts = stack.judged(answers["shadow:ok"])
    assert counts.get("agree", 0) / sum(counts.values()) == sum(offline) / len(offline) == 1.0, (counts, offline)
    # samplePercent 100: the judge compared a copy of each request that went through the TraefikService (all of
    # the shadow step's, the baseline's share of the weighted step's), no more, no fewer.
    assert sum(counts.values()) == answers["shadow:ok"], (counts, answers)
    print(yaml.safe_dump({"seconds to promotion": round(elapsed, 1), "answers": dict(answers),
                          "judge samples": counts, "history": history}))


def test_the_judge_going_away_during_the_shadow_step_takes_no_request_down(stack: Stack) -> None:
    """Scale the judge's Deployment to 0 while the route goes through the TraefikService, hold it there, scale
    it back: the client sees the baseline's 200 throughout (issue #17: a TraefikService whose mirror had no
    endpoints was dropped by Traefik with the route, and every request got a 404)."""
    node, ns = stack.node, stack.namespace
    client = stack.client().start()

    def judge_pods() -> int:
        return len(get_json(node, "pods", "-n", ns, "-l", f"app.kubernetes.io/instance={JUDGE}").get("items", []))

    def ready_endpoints() -> int:
        slices = get_json(node, "endpointslices", "-n", ns, "-l", f"kubernetes.io/service-name={JUDGE}")
        return sum(1 for s in slices.get("items", []) for e in s.get("endpoints") or []
                   if (e.get("conditions") or {}).get("ready"))

    try:
        stack.rollout(sequential=False)
        client.mark("until mirrored")
        wait_for(lambda: client.total()["shadow:ok"] >= RATE * 3, BOUND_S, "the route to go through the "
                 "TraefikService (shadow step, judge ready)")
        client.mark("mirrored, judge up")
        time.sleep(3)
        node.cluster.kubectl("scale", "deployment", JUDGE, "-n", ns, "--replicas=0")
        wait_for(lambda: judge_pods() == 0 and ready_endpoints() == 0, 60, "the judge's Pod to be gone")
        client.mark("judge gone")
        # Longer than Traefik's provider throttle and its Kubernetes watch: the TraefikService is rebuilt without
        # the mirror's servers well within this.
        time.sleep(15)
        client.mark("judge coming back")
        node.cluster.kubectl("scale", "deployment", JUDGE, "-n", ns, "--replicas=1")
        wait_for(lambda: ready_endpoints() >= 1, 120, "the judge's Pod to be ready again")
        client.mark("judge back")
        mirrored = stack.judge_counts()
        time.sleep(10)
        status = stack.status()
    finally:
        client.stop()
    snapshot = dict(client.snapshot())
    print(yaml.safe_dump({"answers by phase": {p: dict(c) for p, c in snapshot.items()}, "phase": status.get("phase"),
                          "judge samples when back": mirrored}))
    # Every request answered 200 by the baseline: its own backendRef until the route moved, the TraefikService's
    # main service after, while the judge was up, gone and back.
    assert set(client.total()) <= {"baseline", "shadow:ok"}, client.snapshot()
    for phase in ("judge gone", "judge coming back", "judge back"):
        assert snapshot[phase]["shadow:ok"] > 0, client.snapshot()
    assert snapshot["judge gone"]["shadow:ok"] >= RATE * 10, client.snapshot()
    assert status.get("phase") not in ("RolledBack", "Failed"), status
    # The judge came back and is mirrored to again: what it counted grows past what was scraped when it was ready.
    wait_for(lambda: sum(stack.judge_counts().values()) > sum(mirrored.values()), 30,
             "the judge's new Pod to count mirrored requests")
