"""The Helm chart on the real node: `helm install --wait` with the chart's defaults runs the operator image as a
Deployment (non-root, read-only root filesystem), which reaches the API server through the `kubernetes` Service
and cluster DNS with its ServiceAccount, and reconciles a StudentModel into its Triton Deployment; Prometheus
discovers both replicas through the API server (kubernetes_sd_configs and the chart's prometheus.io annotations)
and scrapes their metrics."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from kubestill.dev.realnode import RealNode

from .conftest import REPO_ROOT, describe_pods, get_json, wait_for

pytestmark = pytest.mark.realnode


def helm(node: RealNode, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(node.bin_dir / "helm"), f"--kubeconfig={node.cluster.kubeconfig}", *args],
                          capture_output=True, text=True, timeout=300)


def test_helm_install_runs_the_operator_image_in_cluster(
        real_node: RealNode, namespace: str, loaded: Callable[[RealNode, str], str], tmp_path: Path) -> None:
    image = loaded(real_node, "operator")
    # CRDs come with the control plane; the chart's defaults otherwise (its image name is the one built here).
    done = helm(real_node, "install", "kubestill", str(REPO_ROOT / "charts" / "kubestill"), "-n", namespace,
                "--set", "crds.enabled=false", "--wait", "--timeout", "3m")
    try:
        assert done.returncode == 0, f"{done.stderr}\n{describe_pods(real_node, namespace)}"
        pods = get_json(real_node, "pods", "-n", namespace, "-l", "app.kubernetes.io/name=kubestill")["items"]
        assert len(pods) == 2 and all(p["status"]["phase"] == "Running" for p in pods)
        container = pods[0]["spec"]["containers"][0]
        assert container["image"] == image
        assert container["securityContext"]["readOnlyRootFilesystem"] is True

        sm = {"apiVersion": "kubestill.io/v1alpha1", "kind": "StudentModel",
              "metadata": {"name": "probe", "namespace": namespace},
              "spec": {"artifactUri": "pvc://artifacts/export", "format": "hf", "task": "embedding"}}
        real_node.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(sm))
        deployment = wait_for(lambda: get_json(real_node, "deployment", "probe-triton", "-n", namespace), 90,
                              "the in-cluster operator to create the StudentModel's Deployment")
        assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "kubestill-serving:0.1.0"
        assert_operator_discovered(real_node, namespace, tmp_path)
    finally:
        real_node.cluster.kubectl("delete", "studentmodel", "probe", "-n", namespace, "--ignore-not-found",
                                  "--wait=false", check=False)
        helm(real_node, "uninstall", "kubestill", "-n", namespace, "--wait", "--timeout", "2m")


def assert_operator_discovered(node: RealNode, namespace: str, tmp_path: Path) -> None:
    from kubestill.clients.prometheus import Prometheus
    from kubestill.dev.prometheus import kubernetes_pods_job, start_prometheus

    job = kubernetes_pods_job("kubernetes-pods", node.cluster.kubeconfig, [namespace])
    with start_prometheus({}, None, workdir=tmp_path / "prometheus", scrape_configs=[job]) as prom:
        client = Prometheus()
        # Both replicas (the active one and the standby of the peering) serve the operator's own metrics.
        query = f'count(up{{job="kubernetes-pods",namespace="{namespace}"}} == 1)'
        wait_for(lambda: client.query_value(prom.url, query) == 2, 60, "both operator Pods scraped")
        series = client.query_value(prom.url, f'count(process_resident_memory_bytes{{namespace="{namespace}"}})')
        assert series == 2
