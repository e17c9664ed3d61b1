"""Manifests built for a DistillationJob: names, labels, owners, volumes, env, resources (contract)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from kubestill.api.v1alpha1.distillationjob import DistillationJobSpec
from kubestill.builders.configmap import report_metadata
from kubestill.builders.job import build_stage_job
from kubestill.builders.meta import join_uri, local_path, pvc_claims
from kubestill.builders.studentmodel import build_student_model

from .conftest import dj_manifest


def _job(dj: dict[str, Any], stage: str = "train", **kw: Any) -> dict[str, Any]:
    return build_stage_job(dj, DistillationJobSpec.model_validate(dj["spec"]), stage, default_image="trainer:1", **kw)


def test_job_follows_the_contract(dj: dict[str, Any]) -> None:
    job = _job(dj)
    meta = job["metadata"]
    assert meta["name"] == "bbc-train" and meta["namespace"] == "ml"
    assert meta["labels"] == {"app.kubernetes.io/managed-by": "kubestill", "kubestill.io/distillationjob": "bbc",
                              "kubestill.io/stage": "train", "app.kubernetes.io/name": "kubestill-trainer"}
    assert meta["ownerReferences"] == [{"apiVersion": "kubestill.io/v1alpha1", "kind": "DistillationJob",
                                        "name": "bbc", "uid": "uid-1", "controller": True,
                                        "blockOwnerDeletion": True}]
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["name"] == "trainer" and container["image"] == "trainer:1"
    assert container["command"] == ["python", "-m", "kubestill_trainer", "train", "--config",
                                    "/etc/kubestill/config.yaml", "--workdir", "file:///tmp/kubestill/bbc"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KUBESTILL_REPORT_CONFIGMAP"] == "bbc-report" and env["KUBESTILL_NAMESPACE"] == "ml"
    assert json.loads(env["KUBESTILL_REPORT_METADATA"]) == report_metadata(dj)
    # The config is the pod's own annotation, projected as /etc/kubestill/config.yaml by the downward API.
    assert pod["volumes"] == [{"name": "config", "downwardAPI": {"items": [
        {"path": "config.yaml", "fieldRef": {"fieldPath": "metadata.annotations['kubestill.io/config']"}}]}}]
    parsed = yaml.safe_load(job["spec"]["template"]["metadata"]["annotations"]["kubestill.io/config"])
    assert parsed["kind"] == "DistillationJob" and parsed["metadata"] == {"name": "bbc", "namespace": "ml"}
    DistillationJobSpec.model_validate(parsed["spec"])
    assert pod["restartPolicy"] == "Never"
    assert job["spec"]["backoffLimit"] == 1
    # a gate refusal (exit 3) fails the Job at once: retrying gives the same answer
    assert job["spec"]["podFailurePolicy"] == {"rules": [{"action": "FailJob", "onExitCodes": {
        "containerName": "trainer", "operator": "In", "values": [3]}}]}
    assert "resources" not in container


def test_job_resources_placement_pvc_and_secret() -> None:
    dj = dj_manifest(
        teacher={"openai": {"baseUrl": "https://api.example/v1", "model": "big",
                            "apiKeySecretRef": {"name": "openai", "key": "token"}}},
        student={"baseModelUri": "pvc://models/minilm"},
        output={"studentModelName": "s", "artifactUri": "pvc://runs/bbc"},
        resources={"train": {"gpus": 2, "memory": "16Gi", "nodeSelector": {"gpu": "a100"},
                             "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]}},
        run={"image": "custom:2", "serviceAccountName": "trainer", "backoffLimit": 3,
             "activeDeadlineSeconds": 3600},
    )
    job = _job(dj, pull_secrets=("regcred",))
    pod = job["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == "custom:2"
    assert c["resources"]["limits"] == {"memory": "16Gi", "nvidia.com/gpu": "2"}
    assert pod["nodeSelector"] == {"gpu": "a100"}
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["serviceAccountName"] == "trainer" and pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert job["spec"]["backoffLimit"] == 3 and job["spec"]["activeDeadlineSeconds"] == 3600
    assert {v["name"]: v.get("persistentVolumeClaim") for v in pod["volumes"][1:]} == {
        "pvc-models": {"claimName": "models"}, "pvc-runs": {"claimName": "runs"}}
    assert {"name": "pvc-runs", "mountPath": "/mnt/kubestill/pvc/runs"} in c["volumeMounts"]
    key = next(e for e in c["env"] if e["name"] == "KUBESTILL_TEACHER_API_KEY")
    assert key["valueFrom"] == {"secretKeyRef": {"name": "openai", "key": "token"}}


def test_other_stages_get_their_own_resources() -> None:
    dj = dj_manifest(resources={"train": {"gpus": 1}})
    assert "resources" not in _job(dj, "label")["spec"]["template"]["spec"]["containers"][0]


def test_report_metadata(dj: dict[str, Any]) -> None:
    meta = report_metadata(dj, {"team": "search"})
    assert meta["name"] == "bbc-report" and meta["namespace"] == "ml"
    assert meta["labels"] == {"team": "search", "app.kubernetes.io/managed-by": "kubestill",
                              "kubestill.io/distillationjob": "bbc", "kubestill.io/report": "true"}
    assert meta["ownerReferences"][0]["uid"] == "uid-1"


def test_student_model(dj: dict[str, Any]) -> None:
    spec = DistillationJobSpec.model_validate(dj["spec"])
    # metrics.json as the trainer writes it: a figure it could not compute is null, and is not copied.
    metrics = {"schemaVersion": 1, "primaryMetric": "accuracy", "teacher": {"accuracy": 0.9},
               "student": {"accuracy": 0.873, "f1": None}, "speedup": 3, "labels": ["a", "b"]}
    sm = build_student_model(dj, spec, metrics)
    assert sm["metadata"]["name"] == "bbc-student"
    assert sm["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert sm["spec"]["artifactUri"] == "file:///tmp/kubestill/bbc/export"
    assert sm["spec"]["metrics"] == {"accuracy": 0.873, "qualityRatio": pytest.approx(0.97), "speedup": 3.0}
    assert sm["spec"]["labels"] == ["a", "b"] and sm["spec"]["sourceJob"] == "bbc"


@pytest.mark.parametrize(
    ("uri", "path"),
    [("pvc://runs/a/b", "/mnt/kubestill/pvc/runs/a/b"), ("file:///data/x/", "/data/x"), ("pkg://gt_all", None)],
)
def test_local_path(uri: str, path: str | None) -> None:
    assert local_path(uri) == path


def test_uri_helpers() -> None:
    assert pvc_claims(["pvc://a/x", None, "file:///y", "pvc://a/z", "pvc://b"]) == ["a", "b"]
    assert join_uri("pvc://c/run/", "export") == "pvc://c/run/export"


@pytest.mark.parametrize(
    ("in_spec", "default", "expected"),
    [("", "", None), ("", "kubestill-trainer", "kubestill-trainer"), ("mine", "kubestill-trainer", "mine")],
)
def test_stage_service_account(dj: dict[str, Any], in_spec: str, default: str, expected: str | None) -> None:
    if in_spec:
        dj["spec"]["run"] = {"serviceAccountName": in_spec}
    pod = _job(dj, service_account=default)["spec"]["template"]["spec"]
    assert pod.get("serviceAccountName") == expected


def test_each_stage_job_carries_the_spec_current_at_its_creation(dj: dict[str, Any]) -> None:
    """A spec edit reaches the stages created after it; a Job already created keeps the spec it ran with."""
    def epochs(job: dict[str, Any]) -> int | None:
        config = yaml.safe_load(job["spec"]["template"]["metadata"]["annotations"]["kubestill.io/config"])
        value = (config["spec"].get("training") or {}).get("epochs")
        return None if value is None else int(value)

    label = _job(dj, "label")
    edited = {**dj, "spec": {**dj["spec"], "training": {**dj["spec"].get("training", {}), "epochs": 7}}}
    train = _job(edited, "train")
    assert epochs(train) == 7 and epochs(label) != 7


RESTRICTED = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
              "capabilities": {"drop": ["ALL"]}}


def test_stage_security_context_and_a_writable_tmp(dj: dict[str, Any]) -> None:
    """The chart's restricted contexts reach the stage Pod; a read-only root leaves the trainer /tmp as HOME."""
    pod = _job(dj, pod_security_context={"runAsNonRoot": True}, security_context=RESTRICTED)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"] == {"runAsNonRoot": True} and container["securityContext"] == RESTRICTED
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "HOME", "value": "/tmp"} in container["env"]

    plain = _job(dj)["spec"]["template"]["spec"]
    assert "securityContext" not in plain and "securityContext" not in plain["containers"][0]
    assert all(v["name"] != "tmp" for v in plain["volumes"])
