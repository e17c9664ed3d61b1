"""A StudentModel whose spec.labels are not its artifact's class order is refused where the user looks: its Ready
condition says LabelsMismatch with both orders (issue #13, fault 9), through the real path: the operator renders
the config, the local node runs the real tritonserver, model.py refuses and leaves the reason in the container's
termination log, the node reports it in the Pod status as the kubelet does, the operator reads the Pods.
Then the labels are corrected and the same StudentModel becomes Ready. A tiny classifier artifact, built here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kubestill.dev.controlplane import Cluster
from kubestill.dev.node import LocalNode
from tests.trainer import tiny_lm

from .conftest import OperatorProcess, get_json, wait_for

pytestmark = pytest.mark.e2e

ARTIFACT_ORDER = ["business", "entertainment", "politics", "sport", "tech"]
HAND_WRITTEN = ["sport", "business", "tech", "politics", "entertainment"]


def _sm(namespace: str, export: Path, labels: list[str]) -> str:
    return yaml.safe_dump({
        "apiVersion": "kubestill.io/v1alpha1", "kind": "StudentModel",
        "metadata": {"name": "topics", "namespace": namespace},
        "spec": {"artifactUri": f"file://{export}", "task": "classification", "labels": labels,
                 "serving": {"maxBatchSize": 4}},
    })


def _ready(cluster: Cluster, namespace: str) -> dict[str, Any]:
    status = get_json(cluster, "studentmodel", "topics", "-n", namespace).get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), {})
    return {"phase": status.get("phase"), **ready}


def test_labels_in_another_order_are_a_condition_then_fixed(
    cluster: Cluster, namespace: str, operator: OperatorProcess, local_node: LocalNode, tmp_path: Path,
) -> None:
    export = tiny_lm.classifier_artifact(tmp_path / "export", ARTIFACT_ORDER)
    cluster.kubectl("apply", "-f", "-", input=_sm(namespace, export, HAND_WRITTEN))
    cond = wait_for(lambda: (c := _ready(cluster, namespace)).get("reason") == "LabelsMismatch" and c, 120,
                    "Ready=False LabelsMismatch")
    assert cond["phase"] == "Failed" and cond["status"] == "False"
    assert f"StudentModel spec.labels {HAND_WRITTEN}" in cond["message"]
    assert f"artifact's class order {ARTIFACT_ORDER}" in cond["message"]
    events = cluster.kubectl("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=topics",
                             "-o", "jsonpath={.items[*].reason}").stdout.split()
    assert "LabelsMismatch" in events

    cluster.kubectl("apply", "-f", "-", input=_sm(namespace, export, ARTIFACT_ORDER))
    cond = wait_for(lambda: (c := _ready(cluster, namespace)).get("phase") == "Ready" and c, 180, "phase Ready")
    assert cond["status"] == "True" and cond["observedGeneration"] == 2
