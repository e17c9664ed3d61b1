"""How Pods reach object storage, as manifest pieces. Pure.

- `s3_env`: the S3 settings and credentials of a resource's Secret, each key by an optional secretKeyRef (a
  missing Secret or key leaves the variable unset instead of blocking the container; the storage check then
  names what is missing). The operator never reads the Secret and no value is ever copied into a manifest.
- `scratch_volume`: the local directory a stage with an s3:// workdir works in (an emptyDir: a restarted Pod
  starts empty and pulls from the bucket, which is what makes resuming from the bucket real).
- `build_storage_check_job`: the short Job that checks, with the resource's own credentials and from the Pod
  network, that what it reads exists and where it writes accepts objects, before anything else runs.
- `fetch_artifact_container`: the init container that downloads a StudentModel's s3:// artifact.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from kubestill.api.names import (
    MANAGED_BY,
    MANAGER,
    SCRATCH_DIR_ENV,
    TERMINATION_LOG,
    TERMINATION_LOG_ENV,
    check_job_name,
)
from kubestill.api.storage import SECRET_KEYS, SECRET_NAME_ENV, is_s3
from kubestill.api.v1alpha1.storage import StorageSecretRef

from .meta import child_metadata, writable_tmp

SCRATCH_VOLUME = "scratch"
SCRATCH_DIR = "/var/lib/kubestill/scratch"
SCRATCH_ENV = SCRATCH_DIR_ENV
ARTIFACT_VOLUME = "artifact"
ARTIFACT_DIR = "/mnt/kubestill/artifact"
FETCH_CONTAINER = "fetch-artifact"
FETCH_TMP_VOLUME = "fetch-tmp"
CHECK_CONTAINER = "storage-check"
# The stage label value of check Jobs (they carry the owner's label like its other children).
CHECK_STAGE = "check"
CHECK_LABEL = "kubestill.io/storage-check"
STORAGE_CLI = ["python", "-m", "kubestill_trainer.storage_cli"]
CHECK_DEADLINE_SECONDS = 300


def s3_uris(uris: Sequence[str | None]) -> list[str]:
    """The s3:// URIs among `uris`, first-seen order, no duplicates."""
    out: list[str] = []
    for uri in uris:
        if uri and is_s3(uri) and uri not in out:
            out.append(uri)
    return out


def s3_env(secret: StorageSecretRef | None) -> list[dict[str, Any]]:
    """Env entries giving a container the Secret's S3 keys (KServe's names), each optional."""
    if secret is None:
        return []
    env: list[dict[str, Any]] = [{"name": SECRET_NAME_ENV, "value": secret.name}]
    for key in SECRET_KEYS:
        env.append({"name": key, "valueFrom": {"secretKeyRef": {"name": secret.name, "key": key, "optional": True}}})
    return env


def scratch_volume() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(volume, mount, env entry) of the scratch emptyDir."""
    return ({"name": SCRATCH_VOLUME, "emptyDir": {}}, {"name": SCRATCH_VOLUME, "mountPath": SCRATCH_DIR},
            {"name": SCRATCH_ENV, "value": SCRATCH_DIR})


# A new value of this annotation on a DistillationJob or StudentModel runs its storage check again.
RECHECK_ANNOTATION = "kubestill.io/recheck"


def check_key(
    reads: Sequence[str], writes: Sequence[str], secret: StorageSecretRef | None, recheck: str = ""
) -> str:
    """A short digest of what a check covers: a spec edit that changes it, or a new value of the owner's
    `kubestill.io/recheck` annotation (after fixing the Secret's contents or uploading the object, which the
    operator cannot see), gets a check of its own."""
    text = "\n".join(["r:" + u for u in reads] + ["w:" + u for u in writes] + [f"s:{secret.name if secret else ''}"]
                     + ([f"x:{recheck}"] if recheck else []))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def recheck_token(owner: Mapping[str, Any]) -> str:
    """The owner's `kubestill.io/recheck` annotation: set a new value to check its storage again."""
    return str(((owner.get("metadata") or {}).get("annotations") or {}).get(RECHECK_ANNOTATION, ""))


def build_storage_check_job(
    owner: Mapping[str, Any],
    owner_labels: Mapping[str, str],
    reads: Sequence[str],
    writes: Sequence[str],
    secret: StorageSecretRef | None,
    attempt: int,
    *,
    image: str,
    pull_policy: str = "IfNotPresent",
    pull_secrets: tuple[str, ...] = (),
    extra_labels: Mapping[str, str] | None = None,
    service_account: str = "",
    pod_security_context: Mapping[str, Any] | None = None,
    security_context: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """batch/v1 Job running `python -m kubestill_trainer.storage_cli check --read .. --write ..` once (no
    retries: a failure is an answer); its result is the Pod's termination message. It runs the trainer image
    under the trainer's security contexts (the chart's restricted defaults), like the stage Jobs."""
    key = check_key(reads, writes, secret, recheck_token(owner))
    name = check_job_name(owner["metadata"]["name"], key, attempt)
    labels = {**owner_labels, CHECK_LABEL: key, "app.kubernetes.io/name": "kubestill-storage-check"}
    metadata = child_metadata(name, owner, labels, extra_labels)
    command = [*STORAGE_CLI, "check"]
    for uri in reads:
        command += ["--read", uri]
    for uri in writes:
        command += ["--write", uri]
    volumes, mounts, tmp_env = writable_tmp(security_context)
    container: dict[str, Any] = {
        "name": CHECK_CONTAINER,
        "image": image,
        "imagePullPolicy": pull_policy,
        "command": command,
        "env": [*s3_env(secret), {"name": TERMINATION_LOG_ENV, "value": TERMINATION_LOG}, *tmp_env],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
    }
    if mounts:
        container["volumeMounts"] = mounts
    if security_context:
        container["securityContext"] = dict(security_context)
    pod_spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if volumes:
        pod_spec["volumes"] = volumes
    if pod_security_context:
        pod_spec["securityContext"] = dict(pod_security_context)
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    if pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in pull_secrets]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": CHECK_DEADLINE_SECONDS,
            "template": {"metadata": {"labels": {**metadata["labels"], MANAGED_BY: MANAGER}}, "spec": pod_spec},
        },
    }


def fetch_artifact_container(uri: str, secret: StorageSecretRef | None, image: str,
                             pull_policy: str = "IfNotPresent",
                             security_context: Mapping[str, Any] | None = None) -> tuple[
    dict[str, Any], list[dict[str, Any]]
]:
    """(init container, the volumes it needs besides the artifact volume): downloads the artifact tree at `uri`
    into the artifact volume (ARTIFACT_DIR), under `security_context` (see meta.container_security); with a
    read-only root it gets its own emptyDir at /tmp."""
    volumes, mounts, tmp_env = writable_tmp(security_context, FETCH_TMP_VOLUME)
    container: dict[str, Any] = {
        "name": FETCH_CONTAINER,
        "image": image,
        "imagePullPolicy": pull_policy,
        "command": [*STORAGE_CLI, "download", uri, ARTIFACT_DIR],
        "env": [*s3_env(secret), {"name": TERMINATION_LOG_ENV, "value": TERMINATION_LOG}, *tmp_env],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": ARTIFACT_VOLUME, "mountPath": ARTIFACT_DIR}, *mounts],
    }
    if security_context:
        container["securityContext"] = dict(security_context)
    return container, volumes
