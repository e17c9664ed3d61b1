"""s3:// on the operator side, without a cluster: URI validation, the S3 environment of stage Jobs (secretKeyRef
only), the check Job, the Triton init step, the check decision table and what the pipeline makes of it."""

from __future__ import annotations

import doctest
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from kubestill.api.storage import SECRET_KEYS, CheckResult, StorageReason, parse_check_result, split_s3_uri
from kubestill.api.v1alpha1.distillationjob import DistillationJobSpec, DistillationJobStatus
from kubestill.api.v1alpha1.studentmodel import StudentModelSpec
from kubestill.builders.job import build_stage_job
from kubestill.builders.meta import container_security, writable_tmp
from kubestill.builders.storage import build_storage_check_job, check_key, s3_env
from kubestill.builders.studentmodel import build_student_model
from kubestill.builders.triton import build_triton_config_map, build_triton_deployment
from kubestill.logic import storage_check
from kubestill.logic.jobs import JobView
from kubestill.logic.pipeline import Observed, decide
from kubestill.logic.storage_check import StorageCheck, decide_check

from .conftest import dj_manifest

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def s3_dj() -> dict[str, Any]:
    return dj_manifest(data={"uri": "s3://corpora/bbc/titles.jsonl", "fields": {"text": "title", "label": "label"}},
                       output={"studentModelName": "bbc-student", "artifactUri": "s3://runs/bbc"},
                       storageSecretRef={"name": "s3-creds"})


@pytest.mark.parametrize(("uri", "ok"), [
    ("s3://runs/bbc", True), ("s3://my.bucket-1", True), ("s3://runs/", True),
    ("s3://Runs/x", False), ("s3://ab/x", False), ("s3://-runs/x", False), ("s3:/runs/x", False),
])
def test_s3_uris_are_validated_like_bucket_names(uri: str, ok: bool) -> None:
    spec = s3_dj()["spec"]
    spec["output"]["artifactUri"] = uri
    if ok:
        DistillationJobSpec.model_validate(spec)
    else:
        with pytest.raises(ValidationError, match="artifactUri"):
            DistillationJobSpec.model_validate(spec)


def test_split_s3_uri() -> None:
    assert split_s3_uri("s3://runs/a/b/") == ("runs", "a/b")
    assert split_s3_uri("s3://runs") == ("runs", "")
    with pytest.raises(ValueError, match="s3://"):
        split_s3_uri("s3://x/y")


def test_stage_job_gets_the_secret_by_reference_and_a_scratch_dir() -> None:
    dj = s3_dj()
    job = build_stage_job(dj, DistillationJobSpec.model_validate(dj["spec"]), "train", default_image="trainer:1")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["KUBESTILL_S3_SECRET"] == {"name": "KUBESTILL_S3_SECRET", "value": "s3-creds"}
    for key in SECRET_KEYS:
        assert env[key] == {"name": key, "valueFrom": {"secretKeyRef": {"name": "s3-creds", "key": key,
                                                                         "optional": True}}}
    assert env["KUBESTILL_SCRATCH_DIR"]["value"] == "/var/lib/kubestill/scratch"
    assert {"name": "scratch", "emptyDir": {}} in pod["volumes"]
    assert container["command"][-2:] == ["--workdir", "s3://runs/bbc"]
    # Nothing but references: no value of any Secret key is in the manifest.
    assert all("value" not in e for k, e in env.items() if k in SECRET_KEYS)


def test_local_jobs_get_no_s3_env() -> None:
    dj = dj_manifest()
    job = build_stage_job(dj, DistillationJobSpec.model_validate(dj["spec"]), "label", default_image="t")
    names = {e["name"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert not names & {*SECRET_KEYS, "KUBESTILL_SCRATCH_DIR"}


def test_check_job() -> None:
    dj = s3_dj()
    spec = DistillationJobSpec.model_validate(dj["spec"])
    reads, writes = ["s3://corpora/bbc/titles.jsonl"], ["s3://runs/bbc"]
    job = build_storage_check_job(dj, {"kubestill.io/distillationjob": "bbc", "kubestill.io/stage": "check"},
                                  reads, writes, spec.storage_secret_ref, 2, image="trainer:1",
                                  service_account="trainer")
    key = check_key(reads, writes, spec.storage_secret_ref)
    assert job["metadata"]["name"] == f"bbc-check-{key}-2"
    assert job["metadata"]["labels"]["kubestill.io/storage-check"] == key
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["activeDeadlineSeconds"] > 0
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "trainer" and pod["restartPolicy"] == "Never"
    assert pod["containers"][0]["command"] == ["python", "-m", "kubestill_trainer.storage_cli", "check",
                                               "--read", reads[0], "--write", writes[0]]
    assert pod["containers"][0]["env"][: len(s3_env(spec.storage_secret_ref))] == s3_env(spec.storage_secret_ref)
    assert check_key(reads, writes, None) != key  # another Secret is another check


def test_published_student_model_keeps_the_secret() -> None:
    dj = s3_dj()
    report = {"primaryMetric": "accuracy", "teacher": {}, "student": {}, "labels": ["a", "b"]}
    sm = build_student_model(dj, DistillationJobSpec.model_validate(dj["spec"]), report)
    assert sm["spec"]["artifactUri"] == "s3://runs/bbc/export"
    assert sm["spec"]["storageSecretRef"] == {"name": "s3-creds"}
    StudentModelSpec.model_validate(sm["spec"])


def test_triton_deployment_downloads_an_s3_artifact_first() -> None:
    sm = {"apiVersion": "kubestill.io/v1alpha1", "kind": "StudentModel",
          "metadata": {"name": "bbc-student", "namespace": "ml", "uid": "u"},
          "spec": {"artifactUri": "s3://runs/bbc/export", "task": "classification", "labels": ["a", "b"],
                   "storageSecretRef": {"name": "s3-creds"}}}
    spec = StudentModelSpec.model_validate(sm["spec"])
    dep = build_triton_deployment(sm, spec, default_image="triton:1", config_digest="x", fetch_image="trainer:1")
    pod = dep["spec"]["template"]["spec"]
    fetch, assemble = pod["initContainers"]
    assert fetch["image"] == "trainer:1"
    assert fetch["command"] == ["python", "-m", "kubestill_trainer.storage_cli", "download", "s3://runs/bbc/export",
                                "/mnt/kubestill/artifact"]
    assert {e["name"] for e in fetch["env"]} >= set(SECRET_KEYS)
    assert "/mnt/kubestill/artifact/triton/model.py" in assemble["command"][-1]
    assert {"name": "artifact", "emptyDir": {}} in pod["volumes"]
    assert {"name": "artifact", "mountPath": "/mnt/kubestill/artifact", "readOnly": True} in \
        pod["containers"][0]["volumeMounts"]
    config = build_triton_config_map(sm, spec)["data"]["config.pbtxt"]
    assert '"/mnt/kubestill/artifact/model"' in config


# The chart's defaults (charts/kubestill/values.yaml, trainer.podSecurityContext / trainer.securityContext).
POD_SC = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}, "fsGroup": 65532}
SC = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}


@pytest.mark.parametrize(("pod", "container", "want"), [
    (None, None, {}),
    (POD_SC, None, {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}),  # fsGroup is pod-only
    ({"runAsUser": 1000}, {"runAsUser": 65532, "privileged": False}, {"runAsUser": 65532, "privileged": False}),
    (None, SC, SC),
])
def test_container_security(pod: dict[str, Any] | None, container: dict[str, Any] | None,
                            want: dict[str, Any]) -> None:
    assert container_security(pod, container) == want


def test_writable_tmp_only_with_a_read_only_root() -> None:
    assert writable_tmp({"readOnlyRootFilesystem": False}) == ([], [], [])
    assert writable_tmp(SC, "x") == ([{"name": "x", "emptyDir": {}}], [{"name": "x", "mountPath": "/tmp"}],
                                     [{"name": "HOME", "value": "/tmp"}])


def test_check_job_and_artifact_download_run_restricted() -> None:
    """Both run the trainer image next to the stage Jobs: the same restricted contexts (the Pod Security
    Standard "restricted" a namespace may enforce would reject them otherwise)."""
    dj = s3_dj()
    spec = DistillationJobSpec.model_validate(dj["spec"])
    job = build_storage_check_job(dj, {}, ["s3://corpora/x"], [], spec.storage_secret_ref, 1, image="t:1",
                                  pod_security_context=POD_SC, security_context=SC)
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"] == POD_SC and pod["containers"][0]["securityContext"] == SC
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {}}]
    assert {"name": "HOME", "value": "/tmp"} in pod["containers"][0]["env"]

    sm = {"apiVersion": "kubestill.io/v1alpha1", "kind": "StudentModel",
          "metadata": {"name": "bbc-student", "namespace": "ml", "uid": "u"},
          "spec": {"artifactUri": "s3://runs/bbc/export", "task": "classification", "labels": ["a", "b"]}}
    dep = build_triton_deployment(sm, StudentModelSpec.model_validate(sm["spec"]), default_image="triton:1",
                                  config_digest="x", fetch_image="t:1", fetch_pod_security=POD_SC,
                                  fetch_security=SC)
    tpod = dep["spec"]["template"]["spec"]
    fetch = tpod["initContainers"][0]
    assert fetch["securityContext"] == {**container_security(POD_SC, None), **SC}
    assert {"name": "fetch-tmp", "mountPath": "/tmp"} in fetch["volumeMounts"]
    assert {"name": "fetch-tmp", "emptyDir": {}} in tpod["volumes"]
    assert "securityContext" not in tpod  # the serving image's Pod is not the trainer's to restrict


def test_check_result_round_trip() -> None:
    result = CheckResult(ok=False, reason=StorageReason.OBJECT_NOT_FOUND, uri="s3://b/x", message="gone")
    assert parse_check_result("exit code 1: " + result.to_text()) == result
    assert parse_check_result("Traceback ... {not json") is None


def test_decision_examples() -> None:
    result = doctest.testmod(storage_check)
    assert result.attempted > 0 and result.failed == 0


def _failed(attempt: int, at: str = "2026-01-01T00:00:00Z") -> JobView:
    return JobView(f"dj-check-k-{attempt}", "Failed", 1, at, at)


@pytest.mark.parametrize(("jobs", "after", "state", "create"), [
    ([], 0, "checking", 0),
    ([JobView("dj-check-k-0", "Running", 1, "t")], 0, "checking", None),
    ([JobView("dj-check-other-0", "Succeeded", 1, "t", "t")], 0, "checking", 0),  # another key: check anew
    ([_failed(0)], 29, "failed", None),
    ([_failed(0)], 30, "failed", 1),
    ([_failed(0), _failed(1)], 59, "failed", None),
    ([_failed(0), _failed(1)], 60, "failed", 2),
    ([_failed(a) for a in range(5)], 10_000, "failed", None),  # MAX_ATTEMPTS: only a spec change checks again
    ([_failed(0), JobView("dj-check-k-1", "Succeeded", 1, "t", "t")], 0, "passed", None),
])
def test_decide_check(jobs: list[JobView], after: float, state: str, create: int | None) -> None:
    epoch = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    got = decide_check("dj", "k", jobs, {}, epoch + after)
    assert (got.state, got.create) == (state, create)


def test_failed_check_reason_and_message_come_from_the_check_pod() -> None:
    text = json.dumps({"ok": False, "reason": "InvalidCredentials", "uri": "s3://b/x", "message": "s3://b/x: rejected"})
    got = decide_check("dj", "k", [_failed(0)], {"dj-check-k-0": text}, 0.0)
    assert got.reason == "InvalidCredentials" and got.message.startswith("s3://b/x: rejected")


@pytest.mark.parametrize(("check", "cond_status", "reason"), [
    (StorageCheck("checking", "Checking", "checking s3://b/x"), "Unknown", "Checking"),
    (StorageCheck("failed", "ObjectNotFound", "s3://b/x: no such object"), "False", "ObjectNotFound"),
])
def test_pipeline_waits_for_the_storage_check(check: StorageCheck, cond_status: str, reason: str) -> None:
    spec = DistillationJobSpec.model_validate(s3_dj()["spec"])
    status, actions = decide(spec, DistillationJobStatus(), Observed("bbc", 1, storage=check), NOW)
    assert actions.create_stage is None and status.phase == "Pending"
    cond = next(c for c in status.conditions if c.type == "ReferencesResolved")
    assert (cond.status, cond.reason, cond.message) == (cond_status, reason, check.message)
    assert [e.reason for e in actions.events] == ([reason] if check.state == "failed" else [])


def test_pipeline_starts_once_the_check_passed() -> None:
    spec = DistillationJobSpec.model_validate(s3_dj()["spec"])
    _, actions = decide(spec, DistillationJobStatus(), Observed("bbc", 1, storage=StorageCheck("passed", "Readable",
                                                                                              "ok")), NOW)
    assert actions.create_stage is not None and actions.create_stage.value == "label"
