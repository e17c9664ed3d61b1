"""The serving check of a StudentModel, as I/O around logic.served: observe the check Job of the current key
(kopf index) and its Pod's termination message once it finished, decide, create the Job when due. The
StudentModel handler calls `step` after deciding its serving status, so the check sees the same readiness."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from kubestill.api.names import SM_LABEL, serve_check_job_name
from kubestill.api.v1alpha1.distillationjob import FINISHED_STATES
from kubestill.api.v1alpha1.studentmodel import StudentModelSpec, StudentModelStatus
from kubestill.builders.served import SERVED_LABEL, build_serve_check_job
from kubestill.builders.storage import recheck_token
from kubestill.clients.kube import KubeClient
from kubestill.handlers.job_messages import FinishedJobMessages
from kubestill.logic.jobs import JobView, final_message, job_view
from kubestill.logic.served import ServedInputs, check_key, decide_served, with_served
from kubestill.logic.serving import SMEvent
from kubestill.runtime import Key
from kubestill.settings import Settings


def index_served_job(body: Mapping[str, Any]) -> dict[Key, JobView] | None:
    """Serving check Jobs by StudentModel."""
    labels = body["metadata"].get("labels") or {}
    if SM_LABEL not in labels or SERVED_LABEL not in labels:
        return None
    return {(body["metadata"]["namespace"], labels[SM_LABEL]): job_view(body)}


def _succeeded_pod_message(pods: Sequence[dict[str, Any]]) -> str:
    """The Pod that succeeded answers; with none (every retry failed), the last one's words."""
    last = sorted(pods, key=lambda p: ((p.get("status") or {}).get("phase") == "Succeeded",
                                       (p.get("metadata") or {}).get("creationTimestamp") or ""))[-1]
    return final_message(last)


class ServingChecks:
    """Runs serving checks; reads each finished check Job's answer once (FinishedJobMessages)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.messages = FinishedJobMessages(_succeeded_pod_message)

    async def step(self, api: KubeClient, body: Mapping[str, Any], spec: StudentModelSpec, old: StudentModelStatus,
                   new: StudentModelStatus, ready: bool, jobs: Sequence[JobView],
                   now: datetime) -> tuple[StudentModelStatus, list[SMEvent]]:
        """`new` (the serving status just decided) with the check's figures and condition, and its Events."""
        meta = body["metadata"]
        generation = meta.get("generation")
        key = check_key(generation, recheck_token(body))
        name = serve_check_job_name(meta["name"], key)
        job = next((j for j in jobs if j.name == name), None)
        message = ""
        if job is not None and job.state in FINISHED_STATES:
            message = await self.messages.get(api, meta["namespace"], name)
        decision = decide_served(spec.serving_check, ServedInputs(generation, ready, job, message,
                                                                  spec.metrics), now)
        if decision.create:
            s = self.settings
            # The operator's own image (the chart passes it as the judge's): tritonclient, no torch.
            await api.create(build_serve_check_job(
                body, spec, key, image=s.judge_image, pull_policy=s.image_pull_policy,
                pull_secrets=s.image_pull_secrets, extra_labels=s.extra_labels,
                pod_security_context=s.trainer_pod_security_context, security_context=s.trainer_security_context))
        return with_served(old, new, decision, now)
