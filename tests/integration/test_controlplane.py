"""The test control plane behaves like a real cluster where it matters to kubestill: RBAC is enforced,
and the garbage collector deletes children whose owner is gone."""

from __future__ import annotations

import json
import time

import pytest

from kubestill.dev.controlplane import Cluster

pytestmark = pytest.mark.integration


def test_rbac_denies_a_service_account_without_roles(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    who = f"system:serviceaccount:{namespace}:nobody"
    assert (
        cluster.kubectl("auth", "can-i", "list", "pods", "-n", namespace, f"--as={who}", check=False).stdout.strip()
        == "no"
    )
    denied = cluster.kubectl("get", "dj", "-n", namespace, f"--as={who}", check=False)
    assert denied.returncode != 0 and "Forbidden" in denied.stderr
    cluster.kubectl("create", "role", "read-dj", "-n", namespace, "--verb=get,list", "--resource=distillationjobs")
    cluster.kubectl(
        "create", "rolebinding", "read-dj", "-n", namespace, "--role=read-dj", f"--serviceaccount={namespace}:nobody"
    )
    assert cluster.kubectl("get", "dj", "-n", namespace, f"--as={who}").returncode == 0


def test_garbage_collector_deletes_orphans(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("create", "configmap", "owner", "-n", namespace)
    owner = json.loads(cluster.kubectl("get", "configmap", "owner", "-n", namespace, "-o", "json").stdout)
    child = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "child",
            "namespace": namespace,
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
            ],
        },
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(child))
    cluster.kubectl("delete", "configmap", "owner", "-n", namespace)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if cluster.kubectl("get", "configmap", "child", "-n", namespace, check=False).returncode != 0:
            return
        time.sleep(0.5)
    pytest.fail("the garbage collector did not delete the child within 30 s")
