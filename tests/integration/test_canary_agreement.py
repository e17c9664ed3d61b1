"""A CanaryRollout with agreement analysis and sequential decisions, on the real kube-apiserver with the real
operator process: it deploys the rollout's judge (Deployment + Service, owned by the rollout), mirrors
`samplePercent` % of the route to it, queries the judge's series and decides on them.

Prometheus here is a small HTTP server answering the instant-query API (/api/v1/query) with the judge's counts the
test sets, and only for queries scoped to this rollout's judge: what is checked is what the operator asks and
does with the answers, not Prometheus (tests/e2e/canary/ runs the real one with a real judge):

- a student that disagrees (1,131 of 1,240) is rolled back during the shadow step by the SPRT: no weighted step
  ever happened, and status, Events and /metrics say why with the counts;
- a student that agrees ends its 1h steps early (minPause 2s) and is promoted within seconds.
"""

from __future__ import annotations

import itertools
import json
import time
import urllib.parse
from collections.abc import Callable, Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubestill.dev.controlplane import Cluster
from kubestill.dev.kubeapi import KubeAPI
from kubestill.dev.operator_process import OperatorProcess

from ..local_http import serving

pytestmark = pytest.mark.integration

ROLLOUT = "agree"
JUDGE = f"{ROLLOUT}-judge"
BOUND_S = 60.0  # the operator acts within a round trip or an analysis interval (1s); far above is a failure


class JudgeCounts:
    """The answers of a Prometheus that scraped this rollout's judge: `agree` of `samples` items agreed, every
    judged request answered by both sides. None: nothing scraped yet (every query has no data)."""

    def __init__(self) -> None:
        self.counts: tuple[int, int] | None = None
        self.queries: list[str] = []

    def answer(self, query: str) -> float | None:
        self.queries.append(query)
        if "ALERTS" in query:
            return None
        if f'service="{JUDGE}"' not in query or self.counts is None:
            return None  # not this rollout's judge: no such series
        agree, samples = self.counts
        if "kubestill_judge_pairs_total" in query:
            return float(samples) if 'baseline="ok",candidate="ok"' in query else 0.0
        if " / " in query:  # a rate over the window
            return agree / samples if samples else float("nan")
        return float(agree if 'result="agree"' in query else samples)


@pytest.fixture
def prometheus() -> Iterator[tuple[str, JudgeCounts]]:
    counts = JudgeCounts()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urllib.parse.urlparse(self.path)
            query = urllib.parse.parse_qs(url.query).get("query", [""])[0]
            value = counts.answer(query)
            result = [] if value is None else [{"metric": {}, "value": [time.time(), repr(value)]}]
            body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    with serving(Handler) as url:
        yield url, counts


@pytest.fixture
def operator(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(cluster, tmp_path / "operator.log", {"KUBESTILL_NAMESPACES": namespace,
                                                                 "KUBESTILL_JUDGE_IMAGE": "kubestill-operator:test"})
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def route_manifest(namespace: str) -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "r", "namespace": namespace},
            "spec": {"parentRefs": [{"name": "gw"}],
                     "rules": [{"backendRefs": [{"name": "teacher", "port": 8000, "weight": 100}]}]}}


def rollout_manifest(namespace: str, prometheus_url: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "kubestill.io/v1alpha1", "kind": "CanaryRollout",
            "metadata": {"name": ROLLOUT, "namespace": namespace},
            "spec": {"route": {"name": "r"}, "baseline": {"name": "teacher", "port": 8000},
                     "candidate": {"service": {"name": "student", "port": 8000}},
                     "analysis": {"prometheusUrl": prometheus_url, "interval": "1s", "inconclusiveLimit": 100,
                                  "agreement": {"minRate": 0.95, "task": "classification", "samplePercent": 5,
                                                "maxBaselineRps": 3},
                                  "sequential": {"minPause": "2s"}},
                     "promotion": {"keepBaselineFor": "0s"}, **spec}}


class Reads:
    def __init__(self, cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
        self.kube, self.namespace, self.operator = KubeAPI(cluster.kubeconfig), namespace, operator

    def apply(self, manifest: dict[str, Any]) -> None:
        plural = {"HTTPRoute": "gateway.networking.k8s.io/v1/namespaces/{ns}/httproutes",
                  "CanaryRollout": "kubestill.io/v1alpha1/namespaces/{ns}/canaryrollouts"}[manifest["kind"]]
        path = "/apis/" + plural.format(ns=self.namespace) + "/" + manifest["metadata"]["name"]
        self.kube.request("PATCH", path, manifest, params={"fieldManager": "test", "force": "true"},
                          content_type="application/apply-patch+yaml")

    def rollout(self) -> dict[str, Any]:
        return self.kube.get(f"/apis/kubestill.io/v1alpha1/namespaces/{self.namespace}/canaryrollouts/{ROLLOUT}") or {}

    def status(self) -> dict[str, Any]:
        return self.rollout().get("status") or {}

    def rule(self) -> dict[str, Any]:
        live = self.kube.get(f"/apis/gateway.networking.k8s.io/v1/namespaces/{self.namespace}/httproutes/r") or {}
        rule: dict[str, Any] = live["spec"]["rules"][0]
        return rule

    def judge(self, kind: str) -> dict[str, Any] | None:
        group = "/apis/apps/v1" if kind == "deployments" else "/api/v1"
        return self.kube.get(f"{group}/namespaces/{self.namespace}/{kind}/{JUDGE}")

    def events(self) -> list[tuple[str, str]]:
        listed = self.kube.get(f"/api/v1/namespaces/{self.namespace}/events") or {}
        return [(e.get("reason", ""), e.get("message", "")) for e in listed.get("items", [])
                if (e.get("involvedObject") or {}).get("name") == ROLLOUT]

    def until(self, what: str, done: Callable[[], Any], timeout: float = BOUND_S) -> Any:
        deadline = time.monotonic() + timeout
        while not (value := done()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not after {timeout}s; status {self.status()}\n"
                                     f"{self.operator.log_tail(40)}")
            time.sleep(0.1)
        return value


def mirrors(rule: dict[str, Any]) -> list[tuple[str, int, int]]:
    return [(f["requestMirror"]["backendRef"]["name"], f["requestMirror"]["backendRef"]["port"],
             f["requestMirror"].get("percent", 100)) for f in rule.get("filters") or [] if f["type"] == "RequestMirror"]


def test_a_disagreeing_student_is_rolled_back_from_the_shadow_step(
    cluster: Cluster, namespace: str, operator: OperatorProcess, prometheus: tuple[str, JudgeCounts],
) -> None:
    url, counts = prometheus
    reads = Reads(cluster, namespace, operator)
    reads.apply(route_manifest(namespace))
    reads.apply(rollout_manifest(namespace, url, shadow={"percent": 100, "pause": "1h"},
                                 steps=[{"weight": 10, "pause": "1h"}]))

    # Shadowing: the judge exists, owned by the rollout, and the route mirrors samplePercent % to it (not to the
    # student, and not shadow.percent).
    reads.until("shadowing", lambda: reads.status().get("shadowing") and reads.status().get("stepStartedAt"))
    assert mirrors(reads.rule()) == [(JUDGE, 8080, 5)]
    assert [(r["name"], r.get("weight")) for r in reads.rule()["backendRefs"]] == [("teacher", 100), ("student", 0)]
    deployment, service = reads.judge("deployments"), reads.judge("services")
    assert deployment is not None and service is not None
    uid = reads.rollout()["metadata"]["uid"]
    assert all(o["metadata"]["ownerReferences"][0]["uid"] == uid for o in (deployment, service))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert (container["image"], container["command"]) == ("kubestill-operator:test", ["kubestill", "judge"])
    assert env["KUBESTILL_JUDGE_BASELINE"] == f"http://teacher.{namespace}.svc:8000"
    assert env["KUBESTILL_JUDGE_CANDIDATE"] == f"http://student.{namespace}.svc:8000"
    assert (env["KUBESTILL_JUDGE_TASK"], env["KUBESTILL_JUDGE_MAX_RPS"]) == ("classification", "3.0")
    # No data yet: inconclusive rounds, never a pass (and no decision).
    reads.until("an inconclusive round", lambda: reads.status().get("lastVerdict") == "Inconclusive")
    assert reads.status()["phase"] == "Progressing" and reads.status().get("sequential") is None

    # The judge's counts arrive: 1,131 of 1,240 agree, far below 0.95 - 0.02. Rolled back from the shadow step.
    counts.counts = (1131, 1240)
    reads.until("rolled back", lambda: reads.status().get("phase") == "RolledBack")
    status = reads.status()
    assert status["message"].startswith(
        "rolled back: agreement 0.912 < 0.95 - 0.02 (SPRT alpha=0.05 beta=0.05, 1,240 samples)"), status["message"]
    assert [h["action"] for h in status["history"]] == ["Start", "Rollback"]  # never a weighted step
    assert all(h["weight"] == 0 for h in status["history"])
    assert (status["sequential"]["outcome"], status["sequential"]["agreements"],
            status["sequential"]["samples"], status["sequential"]["step"]) == ("Reject", 1131, 1240, -1)
    # The rate is measured (0.912) but not judged on its own window: the SPRT above made the decision.
    assert any(m["metric"] == "agreement-rate" and m["result"] == "Successful" and abs(m["value"] - 1131 / 1240) < 1e-3
               for m in status["measurements"]), status["measurements"]
    reads.until("the route without the judge's mirror", lambda: not mirrors(reads.rule()))
    first = reads.rule()["backendRefs"][0]
    assert (first["name"], first.get("weight")) == ("teacher", 100)
    assert any(reason == "Rollback" and "1,240 samples" in message for reason, message in reads.events())
    assert f'kubestill_canary_analysis_value{{metric="agreement-rate",name="{ROLLOUT}",namespace="{namespace}"}}' \
        in operator.metrics()
    # Every judge query was scoped to this rollout's judge in its namespace.
    judged = [q for q in counts.queries if "kubestill_judge" in q]
    assert judged and all(f'namespace="{namespace}",service="{JUDGE}"' in q for q in judged)


def test_an_agreeing_student_ends_its_steps_early(
    cluster: Cluster, namespace: str, operator: OperatorProcess, prometheus: tuple[str, JudgeCounts],
) -> None:
    url, counts = prometheus
    counts.counts = (500, 500)  # 139 agreements in a row already accept at 0.95 / 0.93
    reads = Reads(cluster, namespace, operator)
    reads.apply(route_manifest(namespace))
    started = time.monotonic()
    reads.apply(rollout_manifest(namespace, url, steps=[{"weight": 10, "pause": "1h"}, {"weight": 50, "pause": "1h"}]))

    # Two 1h steps, each ended after minPause (2s) by the test's acceptance.
    reads.until("promoted", lambda: reads.status().get("phase") == "Promoted")
    assert time.monotonic() - started < BOUND_S
    history = reads.status()["history"]
    assert [h["action"] for h in history[:3]] == ["Start", "Advance", "Promote"]
    assert "step 1/2 passed early: agreement 1.000 >= 0.95 accepted" in history[1]["reason"]
    assert "all steps passed early" in history[2]["reason"]
    for before, after in itertools.pairwise(history[:3]):
        gap = (datetime.fromisoformat(after["at"]) - datetime.fromisoformat(before["at"])).total_seconds()
        assert 2 <= gap < 30, history  # not before minPause, far before the 1h pause
    # Promoted and released: everything to the student, the judge's mirror gone with the rollout's steps.
    reads.until("released", lambda: reads.status().get("routeSettledAt"))
    assert [(r["name"], r.get("weight")) for r in reads.rule()["backendRefs"]] == [("student", 100)]
    assert not mirrors(reads.rule())
    print(yaml.safe_dump({"history": history}))
