"""A StudentModel's checks where they happen for users: in the serving image's container, under a real kubelet.

1. spec.labels in another order than the artifact's classes: the serving image's model.py refuses to load and
   writes why to the container's termination log; the kubelet puts that text in the Pod's status; the operator
   reads it and says Ready=False LabelsMismatch with both orders (issue #13, fault 9), with an Event.
2. The labels corrected (generation 2): the same StudentModel becomes Ready, and the serving check, a Job of the
   operator image reaching the model through its Service, measures it against a gate nothing meets (1 µs):
   ServedLatency=False AboveMaxP95, with an Event.
3. A gate of a minute (generation 3): a new check Job measures it again and ServedLatency=True WithinMaxP95.

A tiny random classifier artifact (tests/trainer/tiny_lm.py), on a hostPath PersistentVolume.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubestill.dev.operator_process import OperatorProcess
from kubestill.dev.realnode import RealNode
from tests.trainer import tiny_lm

from .conftest import describe_pods, get_json, wait_for
from .test_serving import artifact_claim

pytestmark = pytest.mark.realnode

ARTIFACT_ORDER = ["business", "entertainment", "politics", "sport", "tech"]
HAND_WRITTEN = ["sport", "business", "tech", "politics", "entertainment"]


def student_model(namespace: str, labels: list[str], max_p95_ms: float) -> str:
    return yaml.safe_dump({
        "apiVersion": "kubestill.io/v1alpha1", "kind": "StudentModel",
        "metadata": {"name": "topics", "namespace": namespace},
        "spec": {"artifactUri": "pvc://artifacts/export", "task": "classification", "labels": labels,
                 "serving": {"maxBatchSize": 4},
                 "servingCheck": {"concurrency": 2, "duration": "2s", "warmup": "0s", "maxP95Ms": max_p95_ms}},
    })


def test_labels_mismatch_then_the_serving_check_gates_the_served_p95(
        real_node: RealNode, namespace: str, operator: OperatorProcess, loaded: Callable[[RealNode, str], str],
        tmp_path: Path) -> None:
    loaded(real_node, "serving")
    loaded(real_node, "operator")  # the serving check Job's image
    export = tiny_lm.classifier_artifact(tmp_path / "artifacts" / "export", ARTIFACT_ORDER)
    for path in [tmp_path, *tmp_path.rglob("*")]:  # the Pods' user (65532) reads it through the hostPath
        path.chmod(0o755 if path.is_dir() else 0o644)
    artifact_claim(real_node, namespace, export.parent)
    kubectl = real_node.cluster.kubectl

    def status() -> dict[str, Any]:
        return get_json(real_node, "studentmodel", "topics", "-n", namespace).get("status") or {}

    def condition(kind: str) -> dict[str, Any]:
        now = status()
        found = next((c for c in now.get("conditions") or [] if c["type"] == kind), {})
        return {"phase": now.get("phase"), "served": now.get("served"), **found}

    def until(what: str, kind: str, field: str, values: tuple[str, ...], timeout: float) -> dict[str, Any]:
        """Condition `kind` (with the phase and the served figures) once its `field` is one of `values`."""
        def check() -> dict[str, Any]:
            found = condition(kind)
            return found if found.get(field) in values else {}

        try:
            return wait_for(check, timeout, what, interval=2)
        except AssertionError as err:
            raise AssertionError(f"{err}\nstatus {status()}\n{describe_pods(real_node, namespace)}\n"
                                 f"--- operator ---\n{operator.log_tail()}") from None

    def events() -> list[str]:
        return kubectl("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=topics",
                       "-o", "jsonpath={.items[*].reason}").stdout.split()

    kubectl("apply", "-f", "-", input=student_model(namespace, HAND_WRITTEN, 0.001))
    cond = until("Ready=False LabelsMismatch", "Ready", "reason", ("LabelsMismatch",), 300)
    assert cond["phase"] == "Failed" and cond["status"] == "False", cond
    assert f"StudentModel spec.labels {HAND_WRITTEN}" in cond["message"], cond
    assert f"artifact's class order {ARTIFACT_ORDER}" in cond["message"], cond
    assert "LabelsMismatch" in events()
    # The reason came from the container itself, through the kubelet: the tritonserver container's last
    # termination message says it.
    pods = get_json(real_node, "pods", "-n", namespace, "-l", "app.kubernetes.io/instance=topics-triton")["items"]
    said = [(cs.get("lastState") or {}).get("terminated", {}).get("message", "") + (
        (cs.get("state") or {}).get("terminated", {}).get("message", ""))
        for pod in pods for cs in pod["status"].get("containerStatuses") or []]
    assert any("spec.labels" in m for m in said), said

    kubectl("apply", "-f", "-", input=student_model(namespace, ARTIFACT_ORDER, 0.001))
    until("phase Ready", "Ready", "phase", ("Ready",), 300)
    cond = until("ServedLatency measured", "ServedLatency", "status", ("True", "False"), 240)
    assert (cond["status"], cond["reason"]) == ("False", "AboveMaxP95"), cond
    served = cond["served"]
    assert served["requests"] > 0 and served["errors"] == 0 and served["concurrency"] == 2, served
    assert 0 < served["p50Ms"] <= served["p95Ms"] <= served["p99Ms"], served
    assert served["observedGeneration"] == 2 and served["jobName"].startswith("topics-served-"), served
    assert "AboveMaxP95" in events()

    kubectl("apply", "-f", "-", input=student_model(namespace, ARTIFACT_ORDER, 60_000))
    cond = until("ServedLatency WithinMaxP95", "ServedLatency", "reason", ("WithinMaxP95",), 240)
    assert cond["status"] == "True" and cond["observedGeneration"] == 3, cond
    assert cond["served"]["observedGeneration"] == 3 and cond["served"]["jobName"] != served["jobName"], cond
    print(f"served through the Service by the check Jobs: {served} then {cond['served']}")
