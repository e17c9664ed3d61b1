"""A CanaryRollout whose shadow step mirrors through Traefik (spec.shadow.mirror: TraefikService), end to end: the
real operator process, the real API server and the real Traefik, with two real HTTP backends
(tests/integration/http_backends.py). Counted from what the client got and what each backend was asked:

- while shadowing, every answer comes from the baseline and the candidate receives a copy of every request;
- the first step's weights (80/20) are what Traefik sends: 1,000 requests are answered exactly 800/200;
- the TraefikService is deleted after the shadow step, and the rollout ends Promoted.

No Prometheus: the rollout has no analysis and moves on the promote annotation, so no count races a step's pause.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubestill.dev.controlplane import Cluster
from kubestill.dev.gateway import GATEWAY_API, Gateway
from kubestill.dev.operator_process import OperatorProcess

from .http_backends import FOLLOW_BOUND_S, PORT, Backend, Client, published, put_route, split

pytestmark = pytest.mark.integration

NAMES = ("baseline", "candidate")
ROLLOUT = "shadowed"
SHADOW = f"{ROLLOUT}-shadow"
OPERATOR_BOUND_S = 60.0  # the operator acts within a round trip of an event; far above that is a failure


@pytest.fixture
def backends(gateway: Gateway, namespace: str, address: str) -> Iterator[dict[str, Backend]]:
    """baseline and candidate, published in the test's namespace."""
    with published(gateway, namespace, address, NAMES) as started:
        yield started


@pytest.fixture
def operator(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    """`kubestill operator` watching the test's namespace."""
    proc = OperatorProcess(cluster, tmp_path / "operator.log", {"KUBESTILL_NAMESPACES": namespace})
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def rollout_manifest(namespace: str) -> dict[str, Any]:
    return {"apiVersion": "kubestill.io/v1alpha1", "kind": "CanaryRollout",
            "metadata": {"name": ROLLOUT, "namespace": namespace},
            "spec": {"route": {"name": "r", "ruleIndex": 1},
                     "baseline": {"name": "baseline", "port": PORT},
                     "candidate": {"service": {"name": "candidate", "port": PORT}},
                     "shadow": {"percent": 100, "pause": "1h", "mirror": "TraefikService"},
                     "steps": [{"weight": 20, "pause": "1h"}],
                     "promotion": {"keepBaselineFor": "0s"}}}


def entries(rule: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(kind, name, weight) of each backendRef (the API server fills in group "" and kind Service)."""
    return [(r.get("kind", "Service"), r["name"], r.get("weight", 1)) for r in rule["backendRefs"]]


class Watch:
    """Reads of the rollout, its route and its TraefikService, and a wait that keeps the client's traffic going
    (every answer it got meanwhile is kept, to show that no transition answered with an error)."""

    def __init__(self, gateway: Gateway, namespace: str, client: Client, operator: OperatorProcess) -> None:
        self.kube, self.namespace, self.client, self.operator = gateway.kube, namespace, client, operator
        self.answers: Counter[str] = Counter()
        self.sent = 0

    def rollout(self) -> dict[str, Any]:
        return self.kube.get(f"/apis/kubestill.io/v1alpha1/namespaces/{self.namespace}/canaryrollouts/{ROLLOUT}") or {}

    def rule(self) -> dict[str, Any]:
        live = self.kube.get(f"{GATEWAY_API}/namespaces/{self.namespace}/httproutes/r") or {}
        rule: dict[str, Any] = live["spec"]["rules"][1]
        return rule

    def traefik_service(self) -> dict[str, Any] | None:
        return self.kube.get(f"/apis/traefik.io/v1alpha1/namespaces/{self.namespace}/traefikservices/{SHADOW}")

    def until(self, what: str, done: Callable[[], Any], timeout: float = OPERATOR_BOUND_S) -> Any:
        """Send requests (path /wait/<n>) until done() is truthy; its value. AssertionError with the rollout's
        status and the operator's log after `timeout` s."""
        deadline = time.monotonic() + timeout
        while not (value := done()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not after {timeout}s; status {self.rollout().get('status')}\n"
                                     f"{self.operator.log_tail(40)}")
            status, backend = self.client.get(f"/wait/{self.sent}")
            self.sent += 1
            self.answers[backend if status == 200 else str(status)] += 1
            time.sleep(0.02)
        return value

    def phase(self) -> tuple[str | None, bool, int]:
        status = self.rollout().get("status") or {}
        return status.get("phase"), bool(status.get("shadowing")), int(status.get("currentWeight") or 0)

    def promote(self, value: str) -> None:
        self.kube.request("PATCH", f"/apis/kubestill.io/v1alpha1/namespaces/{self.namespace}/canaryrollouts/{ROLLOUT}",
                          {"metadata": {"annotations": {"kubestill.io/promote": value}}},
                          content_type="application/merge-patch+json")


def test_a_traefik_service_shadow_step_then_the_first_step_then_promotion(
    gateway: Gateway, namespace: str, backends: dict[str, Backend], client: Client, operator: OperatorProcess,
) -> None:
    put_route(gateway, namespace, [split(("baseline", 100))], NAMES)
    client.wait_route(NAMES)
    watch = Watch(gateway, namespace, client, operator)
    candidate = backends["candidate"].server
    watch.kube.request("PATCH", f"/apis/kubestill.io/v1alpha1/namespaces/{namespace}/canaryrollouts/{ROLLOUT}",
                       rollout_manifest(namespace), params={"fieldManager": "test", "force": "true"},
                       content_type="application/apply-patch+yaml")

    # Shadowing: the route names the TraefikService in the baseline's place, and Traefik mirrors through it.
    watch.until("shadowing with RouteReady", lambda: watch.phase() == ("Progressing", True, 0) and any(
        c["type"] == "RouteReady" and c["status"] == "True" for c in watch.rollout()["status"]["conditions"]))
    refs = watch.rule()["backendRefs"]
    assert refs[0] == {"group": "traefik.io", "kind": "TraefikService", "name": SHADOW, "weight": 100}, refs
    assert "filters" not in watch.rule()  # no RequestMirror filter: Traefik would answer 500
    owner = (watch.traefik_service() or {})["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("CanaryRollout", ROLLOUT)
    watch.until("the first mirrored copy", lambda: candidate.count("/wait/") > 0, FOLLOW_BOUND_S)
    n = 300
    assert client.answers(n, "/shadow") == Counter(baseline=n)  # every answer from the baseline
    deadline = time.monotonic() + FOLLOW_BOUND_S
    while candidate.count("/shadow/") < n and time.monotonic() < deadline:
        time.sleep(0.05)  # copies are sent alongside, not before the answer
    assert {p: c for p, c in candidate.paths.items() if p.startswith("/shadow/")} == {
        f"/shadow/{i}": 1 for i in range(n)}
    assert backends["baseline"].server.count("/shadow/") == n

    # The first step: the baseline is back in the rule and Traefik splits exactly 80/20.
    watch.promote("to-step-1")
    watch.until("the first step carried", lambda: watch.phase() == ("Progressing", False, 20) and
                watch.rollout()["status"].get("stepStartedAt"))
    assert entries(watch.rule()) == [("Service", "baseline", 80), ("Service", "candidate", 20)]
    client.wait_split(Counter(baseline=80, candidate=20))
    assert client.answers(1000) == Counter(baseline=800, candidate=200)
    # The TraefikService goes once Traefik has had time to drop it from the route (logic/shadow_mirror.py).
    watch.until("the TraefikService deleted", lambda: watch.traefik_service() is None)

    # Promoted, the baseline released at once (keepBaselineFor 0s): everything to the candidate.
    watch.promote("to-the-end")
    watch.until("promoted and released", lambda: watch.phase()[0] == "Promoted" and
                watch.rollout()["status"].get("routeSettledAt"))
    assert entries(watch.rule()) == [("Service", "candidate", 100)]
    client.wait_split(Counter(candidate=100))
    assert watch.traefik_service() is None
    history = [h["action"] for h in watch.rollout()["status"]["history"]]
    assert history == ["Start", "Advance", "Promote", "ReleaseBaseline"], history
    # No transition answered with an error: the route never named a TraefikService that Traefik did not have.
    assert set(watch.answers) <= set(NAMES), watch.answers
    print(yaml.safe_dump({"answers while waiting": dict(watch.answers), "requests": watch.sent}))
