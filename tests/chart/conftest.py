"""Fixtures of the chart tests: helm offline and against the session's control plane, and two releases
(cluster mode and namespaced mode) shared by the install and RBAC tests of this directory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kubestill.dev import controlplane
from kubestill.dev.controlplane import Cluster

from .helm import Helm
from .releases import Release, installed, unique


@pytest.fixture(scope="session")
def helm() -> Helm:
    """helm for offline work (lint, template): no cluster needed, only the binary."""
    return Helm(controlplane.ensure_binaries() / "helm")


@pytest.fixture(scope="session")
def cluster_helm(cluster: Cluster) -> Helm:
    """helm talking to the session's real kube-apiserver as its administrator."""
    return Helm(cluster.bin_dir / "helm", kubeconfig=cluster.kubeconfig)


@pytest.fixture(scope="session")
def cluster_release(cluster: Cluster, cluster_helm: Helm) -> Iterator[Release]:
    """The chart with default values: cluster mode, CRDs (adopted from the fixture), peering, metrics."""
    with installed(cluster_helm, cluster, take_ownership=True) as release:
        yield release


@pytest.fixture(scope="session")
def namespaced_release(cluster: Cluster, cluster_helm: Helm) -> Iterator[Release]:
    """The chart in namespaced mode watching two namespaces of its own, CRDs managed elsewhere."""
    watched = (unique("team-a"), unique("team-b"))
    sets = ["crds.enabled=false", "watch.mode=namespaced", f"watch.namespaces={{{','.join(watched)}}}"]
    with installed(cluster_helm, cluster, sets=sets, watched=watched) as release:
        yield release
