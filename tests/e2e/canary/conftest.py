"""Canary e2e fixtures: the real operator (the session's `operator` fixture from tests/e2e/conftest.py), real
Prometheus (Debian's) scraping two real tritonserver processes (baseline and candidate), an HTTPRoute, and a
load generator that splits requests by the route's current weights. Nothing here stands in for the API
server, Prometheus, Triton or the operator.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubestill.api.v1alpha1.canaryrollout import BackendRef
from kubestill.dev.controlplane import Cluster
from kubestill.dev.loadgen import LoadGenerator, route_reader
from kubestill.dev.prometheus import PrometheusProcess, start_prometheus
from kubestill.dev.triton import TritonProcess

from ..conftest import OperatorProcess
from .tritons import echo_pair

REPO = Path(__file__).resolve().parents[3]
BASELINE = BackendRef(name="teacher", port=8000)
CANDIDATE = BackendRef(name="student", port=8000)
ROUTE = "inference"
WINDOW = "5s"  # rate() window of the alerts and analysis queries; with 1 s scrapes, 5 samples

RULES = {
    "groups": [
        {
            "name": "kubestill-canary-e2e",
            "interval": "1s",
            "rules": [
                {
                    "alert": "CandidateErrors",
                    "expr": f'sum(rate(nv_inference_request_failure{{job="candidate"}}[{WINDOW}])) > 0',
                    "labels": {"service": CANDIDATE.name, "severity": "page"},
                    "annotations": {"summary": "the candidate model fails requests"},
                },
                {
                    "alert": "CandidateSlow",
                    "expr": f'sum(rate(nv_inference_request_duration_us{{job="candidate"}}[{WINDOW}])) / '
                    f'sum(rate(nv_inference_request_success{{job="candidate"}}[{WINDOW}])) / 1000 > 100',
                    "labels": {"service": CANDIDATE.name, "severity": "page"},
                    "annotations": {"summary": "the candidate's mean latency is over 100 ms"},
                },
            ],
        }
    ]
}

# Analysis: the candidate's success ratio and mean latency (ms) over the window.
SUCCESS_RATIO = (
    f'sum(rate(nv_inference_request_success{{job="candidate"}}[{WINDOW}])) / '
    f'(sum(rate(nv_inference_request_success{{job="candidate"}}[{WINDOW}])) + '
    f'sum(rate(nv_inference_request_failure{{job="candidate"}}[{WINDOW}])))'
)
MEAN_LATENCY_MS = (
    f'sum(rate(nv_inference_request_duration_us{{job="candidate"}}[{WINDOW}])) / '
    f'sum(rate(nv_inference_request_success{{job="candidate"}}[{WINDOW}])) / 1000'
)


class Api:
    """Direct reads of the API server (faster than spawning kubectl when polling)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.ctx = ssl.create_default_context(cafile=str(cluster.ca_file))

    def get(self, path: str) -> dict[str, Any]:
        req = urllib.request.Request(
            self.cluster.server + path, headers={"Authorization": f"Bearer {self.cluster.token}"}
        )
        with urllib.request.urlopen(req, context=self.ctx, timeout=5) as resp:
            body: dict[str, Any] = json.loads(resp.read())
            return body

    def rollout(self, namespace: str, name: str) -> dict[str, Any]:
        return self.get(f"/apis/kubestill.io/v1alpha1/namespaces/{namespace}/canaryrollouts/{name}")

    def route(self, namespace: str) -> dict[str, Any]:
        return self.get(f"/apis/gateway.networking.k8s.io/v1/namespaces/{namespace}/httproutes/{ROUTE}")

    def wait_for(
        self, what: str, fn: Callable[[], Any], timeout: float, interval: float = 0.1,
        context: Callable[[], Any] | None = None,
    ) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = fn()
            if last:
                return last
            time.sleep(interval)
        extra = f"\n{json.dumps(context(), indent=1, default=str)[:6000]}" if context is not None else ""
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}{extra}")


@dataclass
class Stack:
    """Everything one canary scenario needs, running."""

    cluster: Cluster
    namespace: str
    api: Api
    baseline: TritonProcess
    candidate: TritonProcess
    candidate_control: Path
    prometheus: PrometheusProcess
    operator: OperatorProcess
    workdir: Path

    def set_candidate(self, mode: str) -> None:
        """ok | fail | slow:<ms> (the echo model re-reads it within 100 ms)."""
        self.candidate_control.write_text(mode)

    def apply(self, manifest: dict[str, Any]) -> None:
        self.cluster.kubectl("apply", "--server-side", "-n", self.namespace, "-f", "-",
                             input=yaml.safe_dump(manifest))

    def rollout(self, name: str, spec: dict[str, Any]) -> None:
        self.apply({"apiVersion": "kubestill.io/v1alpha1", "kind": "CanaryRollout",
                    "metadata": {"name": name, "namespace": self.namespace}, "spec": spec})

    def loadgen(self, rate: float = 40.0) -> LoadGenerator:
        read = route_reader(self.cluster.server, self.cluster.token, self.cluster.ca_file, self.namespace, ROUTE,
                            0, BASELINE, CANDIDATE)
        return LoadGenerator(read, self.baseline.http_url, self.candidate.http_url, rate=rate,
                             max_seconds=240).start()

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = self.prometheus.url + "/api/v1/query?query=" + urllib.request.quote(promql)
        with urllib.request.urlopen(url, timeout=5) as resp:
            result: list[dict[str, Any]] = json.loads(resp.read())["data"]["result"]
            return result

    def firing(self) -> list[str]:
        url = self.prometheus.url + "/api/v1/query?query=" + urllib.request.quote('ALERTS{alertstate="firing"}')
        with urllib.request.urlopen(url, timeout=5) as resp:
            result = json.loads(resp.read())["data"]["result"]
        return [r["metric"]["alertname"] for r in result]


def _value(url: str) -> float:
    with urllib.request.urlopen(url, timeout=5) as resp:
        result = json.loads(resp.read())["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


def route_manifest(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": ROUTE, "namespace": namespace},
        "spec": {
            "parentRefs": [{"name": "gateway"}],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/v2/models/echo"}}],
                    "backendRefs": [{"name": BASELINE.name, "port": BASELINE.port, "weight": 100}],
                }
            ],
        },
    }


def rollout_spec(steps: list[dict[str, Any]], route: str = ROUTE, candidate: str = CANDIDATE.name,
                 **extra: Any) -> dict[str, Any]:
    """A CanaryRollout spec from the baseline to `candidate` (a Service) on `route`."""
    return {
        "route": {"name": route},
        "baseline": {"name": BASELINE.name, "port": BASELINE.port},
        "candidate": {"service": {"name": candidate, "port": CANDIDATE.port}},
        "steps": steps,
        **extra,
    }


def analysis(prometheus_url: str, interval: str = "1s", **extra: Any) -> dict[str, Any]:
    return {
        "prometheusUrl": prometheus_url,
        "interval": interval,
        # The first rounds of a step see no data until the 5 s rate window holds traffic at the new weight:
        # tolerate 10 inconclusive rounds in a row (interval x limit should exceed the query window, with
        # room for a loaded 2-core CI machine).
        "inconclusiveLimit": 10,
        "metrics": [
            {"name": "success-ratio", "query": SUCCESS_RATIO, "min": 0.99},
            {"name": "mean-latency-ms", "query": MEAN_LATENCY_MS, "max": 100},
        ],
        **extra,
    }


@pytest.fixture
def stack(cluster: Cluster, namespace: str, operator: OperatorProcess, tmp_path: Path) -> Iterator[Stack]:
    """Baseline and candidate tritonservers, Prometheus scraping them (and the operator's /metrics) with the
    alert rules, and the HTTPRoute (baseline 100%) in the test's namespace."""
    with echo_pair(tmp_path) as (baseline, candidate, control):
        jobs = {
            "baseline": [baseline.metrics_url.split("//")[1]],
            "candidate": [candidate.metrics_url.split("//")[1]],
            "kubestill-operator": [f"127.0.0.1:{operator.metrics_port}"],
        }
        with start_prometheus(jobs, RULES, workdir=tmp_path / "prometheus") as prom:
            cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(route_manifest(namespace)))
            api = Api(cluster)
            # Start once Prometheus holds a few samples of both servers, as a long-running one would.
            scraped = urllib.request.quote('count_over_time(up{job="candidate"}[10s])')
            query = f"{prom.url}/api/v1/query?query={scraped}"
            api.wait_for("Prometheus scraping the candidate", lambda: _value(query) >= 3, timeout=30, interval=0.3)
            yield Stack(cluster, namespace, api, baseline, candidate, control, prom, operator, tmp_path)
            if operator.proc is None or operator.proc.poll() is not None:
                operator.start()  # a test that killed it leaves it running for the next


@dataclass
class Bare:
    """The HTTPRoute and the operator only: for scenarios decided by time and manual controls."""

    cluster: Cluster
    namespace: str
    api: Api
    operator: OperatorProcess

    def rollout(self, name: str, spec: dict[str, Any]) -> None:
        manifest = {"apiVersion": "kubestill.io/v1alpha1", "kind": "CanaryRollout",
                    "metadata": {"name": name, "namespace": self.namespace}, "spec": spec}
        self.cluster.kubectl("apply", "--server-side", "-n", self.namespace, "-f", "-",
                             input=yaml.safe_dump(manifest))

    def student_model(self, name: str) -> None:
        """A classification StudentModel (its artifact is never loaded: no node serves it in this suite)."""
        sm = {"apiVersion": "kubestill.io/v1alpha1", "kind": "StudentModel",
              "metadata": {"name": name, "namespace": self.namespace},
              "spec": {"task": "classification", "artifactUri": "file:///nonexistent/export", "labels": ["a", "b"]}}
        self.cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(sm))

    def mark_ready(self, deployment: str) -> None:
        """Play the Deployment controller and kubelet for every replica (no node runs in this suite)."""
        body = json.loads(self.cluster.kubectl("get", "deployment", deployment, "-n", self.namespace,
                                               "-o", "json").stdout)
        replicas = body["spec"].get("replicas", 1)
        ready = {"status": {"observedGeneration": body["metadata"]["generation"], "replicas": replicas,
                            "readyReplicas": replicas, "updatedReplicas": replicas, "availableReplicas": replicas}}
        self.cluster.kubectl("patch", "deployment", deployment, "-n", self.namespace, "--subresource=status",
                             "--type=merge", "-p", json.dumps(ready))

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run the real `kubestill` command line against this cluster."""
        env = {**self.cluster.env(),
               "PYTHONPATH": os.pathsep.join([str(REPO / "operator"), os.environ.get("PYTHONPATH", "")])}
        kubestill = str(Path(sys.executable).parent / "kubestill")
        done = subprocess.run([kubestill, *args], env=env, text=True, capture_output=True, timeout=60)
        if done.returncode != 0:
            raise AssertionError(f"kubestill {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
        return done


@pytest.fixture
def bare(cluster: Cluster, namespace: str, operator: OperatorProcess) -> Bare:
    cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(route_manifest(namespace)))
    return Bare(cluster, namespace, Api(cluster), operator)
