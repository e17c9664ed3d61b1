"""The Kubernetes Job of one pipeline stage. Pure: spec in, manifest dict out."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from kubestill.api.names import (
    CONFIG_ANNOTATION,
    CONFIG_DIR,
    CONFIG_KEY,
    DJ_LABEL,
    GATE_EXIT_CODE,
    NAMESPACE_ENV,
    REPORT_CONFIGMAP_ENV,
    REPORT_METADATA_ENV,
    STAGE_ENV,
    STAGE_LABEL,
    TEACHER_API_KEY_ENV,
    TERMINATION_LOG,
    TERMINATION_LOG_ENV,
    job_name,
    report_map_name,
)
from kubestill.api.v1alpha1.common import ComputeResources, Placement
from kubestill.api.v1alpha1.distillationjob import DistillationJobSpec

from .configmap import config_text, report_metadata
from .meta import child_metadata, pvc_claims, pvc_volumes, writable_tmp
from .storage import s3_env, s3_uris, scratch_volume

TRAINER_CONTAINER = "trainer"
API_KEY_ENV = TEACHER_API_KEY_ENV


def spec_uris(spec: DistillationJobSpec) -> list[str | None]:
    """Every URI of the spec a stage may read or write."""
    return [spec.teacher.model_uri, spec.student.base_model_uri, spec.data.uri, spec.output.artifact_uri]


def container_resources(res: ComputeResources) -> dict[str, Any]:
    """requests == limits (Guaranteed QoS for training), GPUs as nvidia.com/gpu."""
    amounts: dict[str, Any] = {}
    if res.cpu:
        amounts["cpu"] = res.cpu
    if res.memory:
        amounts["memory"] = res.memory
    if res.gpus:
        amounts["nvidia.com/gpu"] = str(res.gpus)
    return {"requests": dict(amounts), "limits": dict(amounts)} if amounts else {}


def placement(p: Placement) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if p.node_selector:
        out["nodeSelector"] = dict(p.node_selector)
    if p.tolerations:
        out["tolerations"] = [t.to_wire() for t in p.tolerations]
    return out


def build_stage_job(
    dj: Mapping[str, Any],
    spec: DistillationJobSpec,
    stage: str,
    *,
    default_image: str,
    pull_policy: str = "IfNotPresent",
    pull_secrets: tuple[str, ...] = (),
    extra_labels: Mapping[str, str] | None = None,
    service_account: str = "",
    pod_security_context: Mapping[str, Any] | None = None,
    security_context: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """batch/v1 Job `<dj>-<stage>` running `python -m kubestill_trainer <stage>` (contract); its Pod runs as
    spec.run.serviceAccountName, else `service_account` (the operator's default), else the namespace default,
    under the given security contexts. With a read-only root filesystem the trainer gets /tmp (an emptyDir) as
    HOME and for its caches: it writes nothing else outside its workdir."""
    name = dj["metadata"]["name"]
    namespace = dj["metadata"]["namespace"]
    labels = {DJ_LABEL: name, STAGE_LABEL: stage, "app.kubernetes.io/name": "kubestill-trainer"}
    stage_res = getattr(spec.resources, stage)
    volumes, mounts = pvc_volumes(pvc_claims(spec_uris(spec)))
    # The config travels in the pod's own annotation, projected as a file by the downward API.
    volumes.insert(0, {"name": "config", "downwardAPI": {"items": [
        {"path": CONFIG_KEY, "fieldRef": {"fieldPath": f"metadata.annotations['{CONFIG_ANNOTATION}']"}}]}})
    mounts.insert(0, {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True})
    env: list[dict[str, Any]] = [
        {"name": REPORT_CONFIGMAP_ENV, "value": report_map_name(name)},
        {"name": REPORT_METADATA_ENV, "value": json.dumps(report_metadata(dj, extra_labels),
                                                                   separators=(",", ":"))},
        {"name": NAMESPACE_ENV, "value": namespace},
        {"name": STAGE_ENV, "value": stage},
        {"name": TERMINATION_LOG_ENV, "value": TERMINATION_LOG},
        {"name": "HF_HUB_OFFLINE", "value": "1"},
    ]
    openai = spec.teacher.openai
    if openai is not None and openai.api_key_secret_ref is not None:
        ref = openai.api_key_secret_ref
        env.append({"name": API_KEY_ENV, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
    if s3_uris(spec_uris(spec)):  # S3 settings from the Secret; an s3:// workdir lives in a scratch emptyDir
        env += s3_env(spec.storage_secret_ref)
        volume, mount, scratch_env = scratch_volume()
        volumes.append(volume)
        mounts.append(mount)
        env.append(scratch_env)
    tmp_volumes, tmp_mounts, tmp_env = writable_tmp(security_context)
    volumes += tmp_volumes
    mounts += tmp_mounts
    env += tmp_env
    container: dict[str, Any] = {
        "name": TRAINER_CONTAINER,
        "image": spec.run.image or default_image,
        "imagePullPolicy": pull_policy,
        "command": ["python", "-m", "kubestill_trainer", stage, "--config", f"{CONFIG_DIR}/{CONFIG_KEY}",
                    "--workdir", spec.output.artifact_uri],
        "env": env,
        "volumeMounts": mounts,
        # The trainer writes a one-paragraph reason to /dev/termination-log; if it dies before that
        # (OOM, import error) the kubelet uses the log tail instead, so Failed always says something.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    resources = container_resources(stage_res)
    if resources:
        container["resources"] = resources
    if security_context:
        container["securityContext"] = dict(security_context)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": volumes,
        **placement(stage_res),
    }
    if pod_security_context:
        pod_spec["securityContext"] = dict(pod_security_context)
    if spec.run.service_account_name or service_account:
        pod_spec["serviceAccountName"] = spec.run.service_account_name or service_account
    if pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in pull_secrets]
    metadata = child_metadata(job_name(name, stage), dj, labels, extra_labels)
    job_spec: dict[str, Any] = {
        "backoffLimit": spec.run.backoff_limit,
        # A gate refusal is the data's or the student's answer, the same on every retry: fail the Job at once.
        "podFailurePolicy": {"rules": [{"action": "FailJob", "onExitCodes": {
            "containerName": TRAINER_CONTAINER, "operator": "In", "values": [GATE_EXIT_CODE]}}]},
        "template": {"metadata": {"labels": dict(metadata["labels"]),
                                  "annotations": {CONFIG_ANNOTATION: config_text(dj)}}, "spec": pod_spec},
    }
    if spec.run.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.run.active_deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": job_spec,
    }
