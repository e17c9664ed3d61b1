"""The storage check of a DistillationJob or StudentModel, run before anything that reads or writes its s3://
URIs: decided by logic.storage_check, the check Job built by builders.storage, its answer read from the Pod's
termination message (once per Job).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from kubestill.api.names import SM_LABEL, triton_name
from kubestill.api.storage import is_s3, parse_check_result
from kubestill.api.v1alpha1.storage import StorageSecretRef
from kubestill.api.v1alpha1.studentmodel import StudentModelSpec
from kubestill.builders.storage import FETCH_CONTAINER, build_storage_check_job, check_key, recheck_token
from kubestill.clients.kube import KubeClient
from kubestill.logic.conditions import Cond, set_conditions
from kubestill.logic.jobs import JobView, termination_message
from kubestill.logic.storage_check import StorageCheck, decide_check
from kubestill.settings import Settings

# Termination messages of failed check Jobs by (namespace, Job name): a finished Job never changes.
_messages: dict[tuple[str, str], str] = {}


async def _message(api: KubeClient, namespace: str, job: str) -> str:
    if (namespace, job) not in _messages:
        pods = await api.list("v1", "Pod", namespace, f"batch.kubernetes.io/job-name={job}")
        text = next((t for p in pods if (t := termination_message(p))), "")
        if not pods:
            return ""  # not listed yet: ask again next time
        _messages[(namespace, job)] = text
    return _messages[(namespace, job)]


async def storage_check(
    api: KubeClient,
    owner: Mapping[str, Any],
    owner_labels: Mapping[str, str],
    reads: Sequence[str],
    writes: Sequence[str],
    secret: StorageSecretRef | None,
    jobs: Sequence[JobView],
    settings: Settings,
    service_account: str = "",
) -> StorageCheck:
    """Where the check stands; creates the next check Job when one is due."""
    namespace, name = owner["metadata"]["namespace"], owner["metadata"]["name"]
    key = check_key(reads, writes, secret, recheck_token(owner))
    messages = {j.name: await _message(api, namespace, j.name) for j in jobs if j.state == "Failed"}
    decision = decide_check(name, key, jobs, messages, time.time())
    if decision.create is not None:
        await api.create(build_storage_check_job(
            owner, owner_labels, reads, writes, secret, decision.create, image=settings.trainer_image,
            pull_policy=settings.image_pull_policy, pull_secrets=settings.image_pull_secrets,
            extra_labels=settings.extra_labels, service_account=service_account))
    via = f"the credentials of Secret {secret.name!r}" if secret else "the Pods' default credentials"
    uris = ", ".join([*reads, *writes])
    if decision.state == "checking":
        return replace(decision, message=f"checking {uris} with {via} (Job {decision.job})")
    if decision.state == "passed":
        return replace(decision, message=f"{uris} checked with {via}")
    return decision


# --- StudentModel: its s3:// artifact, as the condition ArtifactReady ---------------------------------------


async def artifact_check(api: KubeClient, sm: Mapping[str, Any], spec: StudentModelSpec, jobs: Sequence[JobView],
                         settings: Settings) -> StorageCheck | None:
    """The check of an s3:// artifact (None for other schemes)."""
    if not is_s3(spec.artifact_uri):
        return None
    return await storage_check(api, sm, {SM_LABEL: sm["metadata"]["name"]}, [spec.artifact_uri], [],
                               spec.storage_secret_ref, jobs, settings, spec.serving.service_account_name or "")


def artifact_conditions(check: StorageCheck | None) -> list[Cond]:
    if check is None:
        return []
    status = {"passed": "True", "failed": "False"}.get(check.state, "Unknown")
    return [Cond("ArtifactReady", status, check.reason, check.message)]


def artifact_status(status: Mapping[str, Any], check: StorageCheck, generation: int | None, now: datetime
                    ) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """A StudentModel's status while its artifact is being checked, or after the check failed: Pending, no
    Triton Pod, the reason and the URI in ArtifactReady and Ready (and a Warning Event when it changes)."""
    new = dict(status, phase="Pending", observedGeneration=generation, message=check.message)
    new["conditions"] = set_conditions(status.get("conditions") or [], [
        *artifact_conditions(check), Cond("Ready", "False", check.reason, check.message)], now, generation)
    events = []
    if check.state == "failed" and status.get("message") != check.message:
        events.append(("Warning", check.reason, check.message))
    return new, events


FETCH_RECHECK_SECONDS = 10.0


async def fetch_failure(api: KubeClient, sm: Mapping[str, Any], check: StorageCheck) -> StorageCheck:
    """A Triton Pod whose init container could not download the artifact (it went away, or the credentials
    changed, after the check passed): that container's CheckResult as a failed check; else `check`."""
    namespace, name = sm["metadata"]["namespace"], sm["metadata"]["name"]
    pods = await api.list("v1", "Pod", namespace, f"app.kubernetes.io/instance={triton_name(name)}")
    for pod in pods:
        for cs in (pod.get("status") or {}).get("initContainerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
            if cs.get("name") != FETCH_CONTAINER or not term or not term.get("exitCode"):
                continue
            result = parse_check_result(term.get("message") or "")
            where = f"init container {FETCH_CONTAINER} of Pod {pod['metadata']['name']}"
            if result is not None and result.reason is not None:
                return StorageCheck("failed", str(result.reason), f"{result.message} ({where})")
            return StorageCheck("failed", "ArtifactDownloadFailed",
                                f"{where} exited {term.get('exitCode')}: {(term.get('message') or '')[-300:]}")
    return check
