"""Shared fixtures: a real control plane (etcd + kube-apiserver + GC, built from Go modules) for the session,
and a fresh namespace per test. Nothing here mocks the API server."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubestill.dev import controlplane
from kubestill.dev.controlplane import Cluster

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A real kube-apiserver on loopback with our CRDs and the Gateway API CRDs installed."""
    state = tmp_path_factory.mktemp("controlplane")
    running = controlplane.start(state)
    previous = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(running.kubeconfig)
    try:
        yield running
    finally:
        if previous is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = previous
        controlplane.stop(running, remove_state=False)


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A namespace of its own for one test, deleted afterwards (without waiting for finalization)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    cluster.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
