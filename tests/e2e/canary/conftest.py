"""Canary e2e fixtures for the scenarios decided by time, manual controls and the route itself, with no traffic:
the real operator (the session's `operator` fixture from tests/e2e/conftest.py) against the real API server, and an
HTTPRoute in the test's namespace. Rollouts that move real traffic through a real gateway, analysed by Prometheus,
are the real-node suite's (tests/realnode/test_canary_rollout.py, test_canary_agreement.py, test_canary_kills.py).
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubestill.api.v1alpha1.canaryrollout import BackendRef
from kubestill.dev.controlplane import Cluster

from ..conftest import OperatorProcess

REPO = Path(__file__).resolve().parents[3]
BASELINE = BackendRef(name="teacher", port=8000)
CANDIDATE = BackendRef(name="student", port=8000)
ROUTE = "inference"


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
