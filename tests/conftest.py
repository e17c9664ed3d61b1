"""Shared fixtures: a real control plane (etcd + kube-apiserver + GC, built from Go modules) for the session,
and a fresh namespace per test. Nothing here mocks the API server."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from kubestill.dev import controlplane
from kubestill.dev.controlplane import Cluster

if TYPE_CHECKING:
    from kubestill.dev.seaweedfs import Credentials, SeaweedFS

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


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A real S3 server (SeaweedFS `weed mini`, built from its Go module) for the session."""
    from kubestill.dev.seaweedfs import start_seaweedfs

    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server
    finally:
        server.stop()


@dataclass
class S3Sandbox:
    """One test's bucket and credentials on the session's S3 server."""

    server: SeaweedFS
    bucket: str
    creds: Credentials

    def uri(self, *parts: str) -> str:
        return "/".join([f"s3://{self.bucket}", *parts])

    def env(self, **extra: str) -> dict[str, str]:
        """The environment a kubestill Pod gets from a Secret holding these credentials."""
        return {**self.creds.secret_data(self.server.endpoint), "KUBESTILL_S3_SECRET": "s3-creds", **extra}

    def client(self) -> object:
        return self.server.client(self.creds)


@pytest.fixture
def s3(seaweedfs: SeaweedFS) -> S3Sandbox:
    """A fresh bucket and a fresh identity that may read and write (not administer) the server's buckets: not
    scoped to this bucket, because SeaweedFS checks a scoped identity's permission before the bucket's existence
    and would answer AccessDenied where AWS answers NoSuchBucket."""
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    seaweedfs.make_bucket(bucket)
    creds = seaweedfs.add_identity(bucket)
    return S3Sandbox(seaweedfs, bucket, creds)
