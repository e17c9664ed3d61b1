"""The storage check of a DistillationJob or StudentModel, run before anything that reads or writes its s3://
URIs: decided by logic.storage_check, the check Job built by builders.storage, its answer read from the Pod's
termination message (once per Job, kept by StorageChecks, which main builds once for both kinds).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from kubestill.api.names import SM_LABEL, triton_name
from kubestill.api.storage import is_s3, parse_check_result
from kubestill.api.v1alpha1.distillationjob import StageState
from kubestill.api.v1alpha1.storage import StorageSecretRef
from kubestill.api.v1alpha1.studentmodel import StudentModelSpec
from kubestill.builders.storage import FETCH_CONTAINER, build_storage_check_job, check_key, recheck_token
from kubestill.clients.kube import KubeClient
from kubestill.handlers.job_messages import FinishedJobMessages
from kubestill.logic.jobs import JobView, termination_message
from kubestill.logic.storage_check import StorageCheck, decide_check
from kubestill.settings import Settings


def _first_termination_message(pods: Sequence[dict[str, Any]]) -> str:
    return next((t for p in pods if (t := termination_message(p))), "")


class StorageChecks:
    """Runs storage checks; reads each failed check Job's termination message once (FinishedJobMessages)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.messages = FinishedJobMessages(_first_termination_message)

    async def check(
        self,
        api: KubeClient,
        owner: Mapping[str, Any],
        owner_labels: Mapping[str, str],
        reads: Sequence[str],
        writes: Sequence[str],
        secret: StorageSecretRef | None,
        jobs: Sequence[JobView],
        service_account: str = "",
    ) -> StorageCheck:
        """Where the check stands; creates the next check Job when one is due."""
        namespace, name = owner["metadata"]["namespace"], owner["metadata"]["name"]
        key = check_key(reads, writes, secret, recheck_token(owner))
        failed = [j.name for j in jobs if j.state == StageState.FAILED]
        messages = {job: await self.messages.get(api, namespace, job) for job in failed}
        decision = decide_check(name, key, jobs, messages, time.time())
        if decision.create is not None:
            s = self.settings
            await api.create(build_storage_check_job(
                owner, owner_labels, reads, writes, secret, decision.create, image=s.trainer_image,
                pull_policy=s.image_pull_policy, pull_secrets=s.image_pull_secrets,
                extra_labels=s.extra_labels, service_account=service_account,
                pod_security_context=s.trainer_pod_security_context,
                security_context=s.trainer_security_context))
        via = f"the credentials of Secret {secret.name!r}" if secret else "the Pods' default credentials"
        uris = ", ".join([*reads, *writes])
        if decision.state == "checking":
            return replace(decision, message=f"checking {uris} with {via} (Job {decision.job})")
        if decision.state == "passed":
            return replace(decision, message=f"{uris} checked with {via}")
        return decision

    async def artifact(self, api: KubeClient, sm: Mapping[str, Any], spec: StudentModelSpec,
                       jobs: Sequence[JobView]) -> StorageCheck | None:
        """The check of a StudentModel's s3:// artifact (None for other schemes)."""
        if not is_s3(spec.artifact_uri):
            return None
        return await self.check(api, sm, {SM_LABEL: sm["metadata"]["name"]}, [spec.artifact_uri], [],
                                spec.storage_secret_ref, jobs, spec.serving.service_account_name or "")


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
