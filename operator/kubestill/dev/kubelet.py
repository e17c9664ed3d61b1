"""What the local node's runners (node_jobs, node_deployments) share: the node services they run Pods
with, as a Protocol, and Pod status written the way a kubelet writes it.

The runners depend on this module, not on `node.LocalNode`, so the node imports its runners and no runner
imports the node back (an import cycle before; `lint-imports` now refuses one).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from .kubeapi import KubeAPI


class PodHost(Protocol):
    """The node as its runners see it (`node.LocalNode` implements it)."""

    api: KubeAPI
    state_dir: Path

    @property
    def pvc_root(self) -> Path:
        """Where `pvc://claim/path` volumes live on this machine."""
        ...

    def pod_dir(self, namespace: str, pod: str) -> Path:
        """A Pod's working directory: logs, termination logs, materialised volumes."""
        ...

    def collection(self, group_version: str, plural: str, namespace: str | None = None) -> str:
        """The API path of a collection, e.g. `("batch/v1", "jobs", "ns")` -> `/apis/batch/v1/namespaces/ns/jobs`."""
        ...

    def read_config_map(self, namespace: str, name: str) -> dict[str, str] | None:
        """A ConfigMap's data, or None when it does not exist."""
        ...

    def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's data (base64 values, as stored), or None when it does not exist."""
        ...

    def process_env(self) -> dict[str, str]:
        """Environment every container process gets on top of its own."""
        ...


def now_rfc3339() -> str:
    """The current UTC time as Kubernetes writes timestamps, e.g. `2026-11-30T09:30:00Z` (second resolution)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_status_patch(phase: str, ready: bool, containers: list[dict[str, Any]], started: str) -> dict[str, Any]:
    """status of a Pod the way the kubelet writes it (bound to the local node, loopback IP)."""
    now = now_rfc3339()
    cond = "True" if ready else "False"
    return {
        "status": {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1",
            "startTime": started,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": started},
                {"type": "Initialized", "status": "True", "lastTransitionTime": started},
                {"type": "ContainersReady", "status": cond, "lastTransitionTime": now},
                {"type": "Ready", "status": cond, "lastTransitionTime": now},
            ],
            "containerStatuses": containers,
        }
    }
