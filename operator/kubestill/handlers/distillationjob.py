"""DistillationJob: observe (kopf indexes, a few reads), decide with logic.pipeline, apply via clients.

Children (ConfigMaps, stage Jobs, the StudentModel) carry a controller ownerReference, so deleting the
DistillationJob lets the cluster's garbage collector delete them; the operator adds no finalizer. Statuses
go through the runtime's Coalesced lane: under a burst, creating the first Jobs comes first.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from kubestill.api.names import DJ_LABEL, STAGE_LABEL
from kubestill.api.v1alpha1 import API_VERSION
from kubestill.api.v1alpha1.distillationjob import (
    FINISHED_STATES,
    TERMINAL_PHASES,
    DistillationJobSpec,
    DistillationJobStatus,
    Stage,
    StageState,
)
from kubestill.builders.job import build_stage_job, spec_uris
from kubestill.builders.meta import pvc_claims
from kubestill.builders.storage import CHECK_STAGE, s3_uris
from kubestill.builders.studentmodel import build_student_model
from kubestill.clients.events import EventRecorder
from kubestill.clients.kube import ApiError, KubeClient
from kubestill.logic.jobs import JobView, job_view, termination_message
from kubestill.logic.pipeline import Actions, Event, Observed, decide, invalid_spec
from kubestill.runtime import Controller, Key, Kind
from kubestill.settings import Settings

from .storage_check import StorageChecks

KIND = "DistillationJob"
BODIES, STAGE_JOBS, REPORTS = "dj_bodies", "stage_jobs", "reports"
log = logging.getLogger("kubestill.distillationjob")
REFERENCE_RECHECK_SECONDS = 15.0
# A created stage Job not seen through the watch after this long is created again (runtime/expectations.py).
EXPECTATION_SECONDS = 30.0

DJController = Controller[DistillationJobSpec, DistillationJobStatus]


# --- index functions: what kopf keeps in memory for us ------------------------------------------------


def index_dj(body: Mapping[str, Any]) -> dict[Key, dict[str, Any]]:
    meta = body["metadata"]
    slim = {
        "apiVersion": body.get("apiVersion", API_VERSION),
        "kind": KIND,
        "metadata": {k: meta.get(k) for k in ("name", "namespace", "uid", "generation", "resourceVersion")},
        "spec": dict(body.get("spec") or {}),
        "status": dict(body.get("status") or {}),
    }
    return {(meta["namespace"], meta["name"]): slim}


def index_job(body: Mapping[str, Any]) -> dict[Key, tuple[str, JobView]] | None:
    labels = body["metadata"].get("labels") or {}
    if DJ_LABEL not in labels or STAGE_LABEL not in labels:
        return None
    return {(body["metadata"]["namespace"], labels[DJ_LABEL]): (labels[STAGE_LABEL], job_view(body))}


def index_report(body: Mapping[str, Any]) -> dict[Key, dict[str, str]] | None:
    labels = body["metadata"].get("labels") or {}
    if DJ_LABEL not in labels:
        return None
    return {(body["metadata"]["namespace"], labels[DJ_LABEL]): dict(body.get("data") or {})}


# --- observe: reads ----------------------------------------------------------------------------------


async def _exists(api: KubeClient, kind: str, namespace: str, name: str) -> dict[str, Any] | bool | None:
    """The object, None when it does not exist, True when we may not look (RBAC): unknown counts as fine."""
    try:
        return await api.get("v1", kind, namespace, name)
    except ApiError as err:
        if err.status == 403:
            return True
        raise


async def reference_problems(api: KubeClient, namespace: str, spec: DistillationJobSpec) -> list[str]:
    """What can be checked before any GPU is spent: claims of pvc:// URIs and the teacher's API-key Secret.

    The Helm chart grants no access to Secrets by default (the operator only hands a secretKeyRef to the
    Job); then the Secret check is skipped and a missing Secret shows as the Pod's CreateContainerConfigError.
    """
    problems = []
    for claim in pvc_claims(spec_uris(spec)):
        if await _exists(api, "PersistentVolumeClaim", namespace, claim) is None:
            problems.append(f"PersistentVolumeClaim {claim!r} (from a pvc:// URI) not found in {namespace}")
    openai = spec.teacher.openai
    if openai is not None and openai.api_key_secret_ref is not None:
        ref = openai.api_key_secret_ref
        secret = await _exists(api, "Secret", namespace, ref.name)
        if secret is None:
            problems.append(f"Secret {ref.name!r} (teacher.openai.apiKeySecretRef) not found in {namespace}")
        elif isinstance(secret, dict) and ref.key not in (secret.get("data") or {}):
            problems.append(f"Secret {ref.name!r} has no key {ref.key!r} (teacher.openai.apiKeySecretRef)")
    return problems


def storage_reads_writes(spec: DistillationJobSpec) -> tuple[list[str], list[str]]:
    """The s3:// URIs a job reads (data, teacher, base model) and the one it writes (its artifacts)."""
    reads = s3_uris([spec.data.uri, spec.teacher.model_uri, spec.student.base_model_uri])
    return reads, s3_uris([spec.output.artifact_uri])


async def _failure_message(api: KubeClient, namespace: str, name: str, stage: str) -> str:
    pods = await api.list("v1", "Pod", namespace, f"{DJ_LABEL}={name},{STAGE_LABEL}={stage}")
    pods.sort(key=lambda p: p["metadata"].get("creationTimestamp") or "")
    for pod in reversed(pods):
        text = termination_message(pod)
        if text:
            return text
    return ""


class DistillationJobs(Kind[DistillationJobSpec, DistillationJobStatus]):
    """The DistillationJob kind: its observe and apply around logic.pipeline.decide."""

    def __init__(self, settings: Settings, checks: StorageChecks, events: EventRecorder) -> None:
        self.settings = settings
        self.checks = checks
        self.events = events

    def child_seen(self, ctl: DJController, owner: Key, body: Mapping[str, Any]) -> bool:
        """A stage Job we created has just been seen, still unfinished: the status already says it is
        pending, so there is nothing to reconcile (its later MODIFIED events are); only the expectation is met."""
        stage = (body["metadata"].get("labels") or {}).get(STAGE_LABEL)
        if stage is None or job_view(body).state in FINISHED_STATES:
            return False
        return ctl.expectations.observed(owner, stage)

    async def reconcile(self, ctl: DJController, key: Key, body: dict[str, Any]) -> float | None:
        """Move one DistillationJob forward; returns seconds until it should be looked at again, or None."""
        try:
            current = ctl.status.parse(body)
        except ValidationError as err:
            log.error("%s/%s: stored status does not fit the model, left as it is: %s", *key, err)
            return None
        status = ctl.status.desired(key) or current
        if status.phase in TERMINAL_PHASES:
            return None
        generation = body["metadata"].get("generation")
        now = datetime.now(UTC)
        try:
            spec = ctl.spec_of(body)
        except ValidationError as err:
            message = f"invalid spec: {err}".replace("\n", " ")[:1000]
            await ctl.status.write(key, body, current, invalid_spec(status, message, generation, now))
            return None
        observed = await self._observe(ctl, key, body, spec, generation)
        new, actions = decide(spec, status, observed, now)
        requeue, events = await self._apply(ctl, key, body, spec, observed, actions)
        await ctl.status.write(key, body, current, new)  # queued: the lane writes it soon
        for event in events:
            self.events.emit(body, event.type, event.reason, event.message)
            log.info("%s/%s: %s %s", *key, event.reason, event.message)
        return requeue

    async def _observe(self, ctl: DJController, key: Key, body: dict[str, Any], spec: DistillationJobSpec,
                       generation: int | None) -> Observed:
        api = ctl.api()
        jobs: dict[str, JobView] = {}
        checks = []
        for stage, view in ctl.cache.all(STAGE_JOBS, key):
            if stage == CHECK_STAGE:
                checks.append(view)
            elif view.state == StageState.FAILED:
                # Only once per job: a failed stage makes the phase Failed, and terminal jobs are not reconciled.
                detail = await _failure_message(api, *key, stage)
                jobs[stage] = JobView(view.name, view.state, view.attempts, view.start_time, view.completion_time,
                                      detail) if detail else view
            else:
                jobs[stage] = view
        expected = ctl.expectations.pending(key, jobs)
        problems = () if jobs or expected else tuple(await reference_problems(api, key[0], spec))
        storage = None
        if not (jobs or expected or problems) and s3_uris(spec_uris(spec)):
            storage = await self.checks.check(
                api, body, {DJ_LABEL: key[1], STAGE_LABEL: CHECK_STAGE}, *storage_reads_writes(spec),
                spec.storage_secret_ref, checks, spec.run.service_account_name or self.settings.trainer_service_account)
        report = ctl.cache.one(REPORTS, key) or {}
        return Observed(key[1], generation, jobs, report, problems, expected, storage)

    async def _apply(self, ctl: DJController, key: Key, body: dict[str, Any], spec: DistillationJobSpec,
                     observed: Observed, actions: Actions) -> tuple[float | None, tuple[Event, ...]]:
        """Create the next stage Job, publish the StudentModel; when to look again and the Events to post."""
        api = ctl.api()
        storage = observed.storage
        requeue = REFERENCE_RECHECK_SECONDS if observed.reference_problems else storage.requeue if storage else None
        events = actions.events
        if actions.create_stage is not None:
            created = await self._create_stage(ctl, body, spec, actions.create_stage)
            ctl.expectations.expect(key, actions.create_stage.value)
            requeue = EXPECTATION_SECONDS  # look again if the Job never shows up
            events = tuple(e for e in events if e.reason != "StageStarted" or created)
        if actions.publish:
            await self._publish(api, body, spec, json.loads(observed.report.get("metrics.json") or "{}"))
        return requeue, events

    async def _create_stage(self, ctl: DJController, body: Mapping[str, Any], spec: DistillationJobSpec,
                            stage: Stage) -> bool:
        """The stage Job, carrying the current spec (so an edit reaches the stages that have not started)."""
        s = self.settings
        job = build_stage_job(body, spec, stage.value, default_image=s.trainer_image, pull_policy=s.image_pull_policy,
                              pull_secrets=s.image_pull_secrets, extra_labels=s.extra_labels,
                              service_account=s.trainer_service_account,
                              pod_security_context=s.trainer_pod_security_context,
                              security_context=s.trainer_security_context)
        with ctl.creating:  # status writes wait meanwhile: a burst's first Jobs first
            return await ctl.api().create(job)

    async def _publish(self, api: KubeClient, body: Mapping[str, Any], spec: DistillationJobSpec,
                       metrics: Mapping[str, Any]) -> None:
        student = build_student_model(body, spec, metrics, self.settings.extra_labels)
        if not await api.create(student):
            meta = student["metadata"]
            await api.merge_patch(API_VERSION, "StudentModel", meta["namespace"], meta["name"],
                                  {"spec": student["spec"]})
