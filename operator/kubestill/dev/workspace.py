"""What a namespace of the real node needs before a DistillationJob runs there (tests, benchmarks, the demo): a
PersistentVolumeClaim on a hostPath PersistentVolume the trainer (uid 65532) can write to, and the Role the chart's
trainer ClusterRole would grant its Pods (their report ConfigMap)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .controlplane import Cluster


def trainer_rbac(namespace: str, service_account: str = "default") -> list[dict[str, Any]]:
    """What the chart's trainer ClusterRole grants in a namespace of `trainer.namespaces`: the stage Pods (their
    ServiceAccount) write their report ConfigMap. A Role and a RoleBinding named `trainer`."""
    return [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "trainer", "namespace": namespace},
         "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "patch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "trainer", "namespace": namespace},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "trainer"},
         "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}]},
    ]


def hostpath_claim(cluster: Cluster, namespace: str, directory: Path, claim: str = "work") -> list[dict[str, Any]]:
    """Create `directory` (mode 0777; its parents up to /tmp made traversable) and apply PV `<namespace>-<claim>`
    on it, PVC `claim` bound to that PV, and the trainer's Role and RoleBinding for the namespace's default
    ServiceAccount. Returns the applied manifests."""
    directory.mkdir(parents=True, exist_ok=True)
    for path in (directory, *directory.parents):
        if path in (Path("/tmp"), Path("/")):
            break
        path.chmod(0o755)
    directory.chmod(0o777)
    pv_name = f"{namespace}-{claim}"
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv_name},
         "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "",
                  "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(directory)}}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim, "namespace": namespace},
         "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": pv_name,
                  "resources": {"requests": {"storage": "1Gi"}}}},
        *trainer_rbac(namespace),
    ]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))
    return objects
