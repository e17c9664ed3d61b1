"""The serving check Job of a StudentModel: `kubestill servecheck` from the operator image (it needs
tritonclient and numpy, both core dependencies, no torch), loading the model through its own Service exactly as
users call it. Pure: spec in, manifest out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubestill.api.names import (
    MANAGED_BY,
    MANAGER,
    SM_LABEL,
    TERMINATION_LOG,
    TERMINATION_LOG_ENV,
    serve_check_job_name,
)
from kubestill.api.served import ServeCheckRequest
from kubestill.api.v1alpha1._base import parse_duration
from kubestill.api.v1alpha1.studentmodel import StudentModelSpec

from .meta import child_metadata, writable_tmp
from .triton import endpoint

SERVED_LABEL = "kubestill.io/serving-check"
SERVED_CONTAINER = "servecheck"
# Retries of a Pod that could not measure (a node lost, the Service briefly without endpoints); a measured
# breach exits 0 and is never retried.
BACKOFF_LIMIT = 2
# Beyond the load itself (warm-up + duration): the wait for readiness (ServeCheckRequest.ready_timeout_seconds)
# and the Pod's start.
DEADLINE_MARGIN_SECONDS = 240
# One Python process (tritonclient, numpy) with a client thread per worker; the limit leaves room for the
# largest spec.servingCheck (256 workers, 64 texts of 2048 characters). Not measured in a cluster yet.
RESOURCES = {"requests": {"cpu": "250m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}


def serve_check_request(sm: Mapping[str, Any], spec: StudentModelSpec) -> ServeCheckRequest:
    """What the check asks of `kubestill servecheck`: the StudentModel's Service URL and model name, its task and
    spec.servingCheck's load."""
    where = endpoint(sm)
    check = spec.serving_check
    return ServeCheckRequest(
        url=where["http"], model_name=where["modelName"], task=spec.task, concurrency=check.concurrency,
        duration_seconds=parse_duration(check.duration).total_seconds(),
        warmup_seconds=parse_duration(check.warmup).total_seconds(), texts=list(check.texts))


def build_serve_check_job(
    sm: Mapping[str, Any],
    spec: StudentModelSpec,
    key: str,
    *,
    image: str,
    pull_policy: str = "IfNotPresent",
    pull_secrets: tuple[str, ...] = (),
    extra_labels: Mapping[str, str] | None = None,
    pod_security_context: Mapping[str, Any] | None = None,
    security_context: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """batch/v1 Job `<sm>-served-<key>` owned by the StudentModel, labelled with it and the check `key`
    (kubestill.logic.served.check_key). The request travels as one JSON variable (REQUEST_ENV); the result comes
    back in the termination message. No service-account token: the check talks to Triton, never to the API
    server. `pod_security_context`/`security_context`: the chart's restricted ones (non-root, read-only root,
    with an emptyDir /tmp then)."""
    name = sm["metadata"]["name"]
    request = serve_check_request(sm, spec)
    labels = {SM_LABEL: name, SERVED_LABEL: key, "app.kubernetes.io/name": "kubestill-serving-check"}
    metadata = child_metadata(serve_check_job_name(name, key), sm, labels, extra_labels)
    volumes, mounts, tmp_env = writable_tmp(security_context)
    env = [{"name": k, "value": v} for k, v in request.to_env().items()]
    container: dict[str, Any] = {
        "name": SERVED_CONTAINER,
        "image": image,
        "imagePullPolicy": pull_policy,
        "command": ["kubestill", "servecheck"],
        "env": [*env, {"name": TERMINATION_LOG_ENV, "value": TERMINATION_LOG}, *tmp_env],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "resources": {k: dict(v) for k, v in RESOURCES.items()},
    }
    if mounts:
        container["volumeMounts"] = mounts
    if security_context:
        container["securityContext"] = dict(security_context)
    pod_spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container],
                                "automountServiceAccountToken": False}
    if volumes:
        pod_spec["volumes"] = volumes
    if pod_security_context:
        pod_spec["securityContext"] = dict(pod_security_context)
    if pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in pull_secrets]
    deadline = int(request.warmup_seconds + request.duration_seconds + request.ready_timeout_seconds) \
        + DEADLINE_MARGIN_SECONDS
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "backoffLimit": BACKOFF_LIMIT,
            "activeDeadlineSeconds": deadline,
            "template": {"metadata": {"labels": {**metadata["labels"], MANAGED_BY: MANAGER}}, "spec": pod_spec},
        },
    }
