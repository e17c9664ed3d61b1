"""`helm install` into a real kube-apiserver: every object is accepted by the API server (schemas, CEL, RBAC
escalation checks), the CRDs stay on uninstall when crds.keep, and upgrades apply."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kubestill.dev.controlplane import Cluster

from .helm import CHART, Helm
from .releases import Release, installed

pytestmark = pytest.mark.integration

CRDS = ("distillationjobs.kubestill.io", "studentmodels.kubestill.io", "canaryrollouts.kubestill.io")


def _get(cluster: Cluster, *args: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)
    return out


def test_cluster_mode_install_creates_every_object(cluster: Cluster, cluster_release: Release) -> None:
    ns, name = cluster_release.namespace, cluster_release.service_account
    deployment = _get(cluster, "deployment", name, "-n", ns)
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == name
    for kind in ("serviceaccount", "service/" + name + "-metrics", "poddisruptionbudget"):
        target = kind if "/" in kind else f"{kind}/{name}"
        cluster.kubectl("get", target, "-n", ns)
    role = _get(cluster, "clusterrole", name)
    assert any("httproutes" in r["resources"] for r in role["rules"])
    binding = _get(cluster, "clusterrolebinding", name)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": ns}]
    # The peering object exists before any operator Pod starts (kopf --peering waits for it otherwise).
    cluster.kubectl("get", "clusterkopfpeering", name)
    for crd in CRDS:
        meta = _get(cluster, "crd", crd)["metadata"]
        assert meta["annotations"]["helm.sh/resource-policy"] == "keep"
        assert meta["annotations"]["meta.helm.sh/release-name"] == cluster_release.name


def test_namespaced_mode_install_grants_only_the_watched_namespaces(
    cluster: Cluster, namespaced_release: Release
) -> None:
    for ns in namespaced_release.watched:
        role = _get(cluster, "role", namespaced_release.service_account, "-n", ns)
        assert any("jobs" in r["resources"] for r in role["rules"])
        cluster.kubectl("get", "kopfpeering", namespaced_release.service_account, "-n", ns)
    own = cluster.kubectl("get", "roles", "-n", namespaced_release.namespace, "-o", "name").stdout
    assert own.strip() == ""
    missing = cluster.kubectl("get", "clusterrole", namespaced_release.service_account, check=False)
    assert missing.returncode != 0 and "NotFound" in missing.stderr


def test_upgrade_to_namespaced_mode_and_back(cluster: Cluster, cluster_helm: Helm, namespace: str) -> None:
    with installed(cluster_helm, cluster, sets=["crds.enabled=false"]) as release:
        sa = release.service_account
        cluster_helm.run(
            "upgrade",
            release.name,
            str(CHART),
            "-n",
            release.namespace,
            "--reuse-values",
            "--set",
            "watch.mode=namespaced",
            "--set",
            f"watch.namespaces={{{namespace}}}",
        )
        assert cluster.kubectl("get", "clusterrole", sa, check=False).returncode != 0
        cluster.kubectl("get", "role", sa, "-n", namespace)
        cluster.kubectl("get", "kopfpeering", sa, "-n", namespace)
        container = _get(cluster, "deployment", sa, "-n", release.namespace)["spec"]["template"]["spec"]["containers"][
            0
        ]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["KUBESTILL_NAMESPACES"] == namespace


def test_uninstall_keeps_the_crds_and_removes_the_rest(cluster: Cluster, cluster_helm: Helm) -> None:
    with installed(cluster_helm, cluster, take_ownership=True) as release:
        sa = release.service_account
    for crd in CRDS:
        cluster.kubectl("get", "crd", crd)
    for kind in ("clusterrole", "clusterrolebinding", "clusterkopfpeering"):
        gone = cluster.kubectl("get", kind, sa, check=False)
        assert gone.returncode != 0 and "NotFound" in gone.stderr, kind
