"""DistillationJob: read state from kopf indexes, decide with logic.pipeline, build, apply via clients.

Children (ConfigMaps, stage Jobs, the StudentModel) carry a controller ownerReference, so deleting the
DistillationJob lets the cluster's garbage collector delete them; the operator adds no finalizer.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from kubestill.api.names import DJ_LABEL, STAGE_LABEL
from kubestill.api.v1alpha1 import API_VERSION
from kubestill.api.v1alpha1.distillationjob import DistillationJobSpec, DistillationJobStatus, Stage
from kubestill.builders.job import build_stage_job, spec_uris
from kubestill.builders.meta import pvc_claims
from kubestill.builders.storage import CHECK_STAGE, s3_uris
from kubestill.builders.studentmodel import build_student_model
from kubestill.clients.events import emit
from kubestill.clients.kube import ApiError, KubeClient, client
from kubestill.logic.conditions import Cond, set_conditions
from kubestill.logic.jobs import JobView, job_view, termination_message
from kubestill.logic.pipeline import TERMINAL, Observed, plan
from kubestill.settings import Settings, from_env

from .reconciler import Key, Reconciler, first_indexed, newer, owner_key
from .status_lane import StatusLane
from .storage_check import storage_check

KIND = "DistillationJob"
log = logging.getLogger("kubestill.distillationjob")

# kopf indexes (refreshed on every handler call; kopf keeps them current from its watches).
_indexes: dict[str, Any] = {}
# The status we last wrote per object, newer than the index until our own watch event arrives.
_written: dict[Key, dict[str, Any]] = {}
# The status a reconcile decided on that the lane has not written yet: what the next reconcile starts from.
_desired: dict[Key, dict[str, Any]] = {}
# Stage Jobs being created right now: status writes wait while there are any (a burst's first Jobs first).
_creating = 0
STATUS = StatusLane(KIND, yield_to=lambda: _creating > 0)
# Stages whose Job we created but have not seen through the watch yet: (namespace, name) -> stage -> deadline
# (monotonic). Under a burst the Job's watch event can trail the next reconcile; without this the reconcile
# would POST the Job again (a 409, but API-server work). After the deadline an unseen Job is created again.
_expected: dict[Key, dict[str, float]] = {}
EXPECTATION_SECONDS = 30.0
_settings: Settings | None = None
REFERENCE_RECHECK_SECONDS = 15.0


def settings() -> Settings:
    global _settings
    if _settings is None:
        _settings = from_env()
    return _settings


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


# --- events -> reconcile ------------------------------------------------------------------------------


async def _reconcile(key: Key) -> float | None:
    return await reconcile(key, client())


RECONCILER = Reconciler(KIND, _reconcile)


async def on_event(event_type: str | None, body: Mapping[str, Any], indexes: Mapping[str, Any]) -> None:
    """A watch event of a DistillationJob (None = initial listing at start-up: resume where it was)."""
    _indexes.update(indexes)
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    if event_type == "DELETED":
        RECONCILER.forget(key)
        STATUS.forget(key)
        _written.pop(key, None)
        _desired.pop(key, None)
        _expected.pop(key, None)
        return
    ours = _written.get(key)
    if ours is not None and ours["metadata"].get("resourceVersion") == body["metadata"].get("resourceVersion"):
        return  # the echo of our own status write: that reconcile already acted on everything it shows
    await RECONCILER.run(key)


async def on_child_event(event_type: str | None, body: Mapping[str, Any], indexes: Mapping[str, Any]) -> None:
    """A stage Job or the report ConfigMap changed: reconcile the DistillationJob that owns it."""
    _indexes.update(indexes)
    owner = owner_key(body, DJ_LABEL)
    if owner is None or event_type is None:
        return
    if event_type == "ADDED" and _expected_job_arrived(owner, body):
        return
    await RECONCILER.run(owner)


def _expected_job_arrived(owner: Key, body: Mapping[str, Any]) -> bool:
    """A stage Job we created has just been seen, still unfinished: the status already says it is pending,
    so there is nothing to reconcile (its later MODIFIED events are); only the expectation is met."""
    stage = (body["metadata"].get("labels") or {}).get(STAGE_LABEL)
    pending = _expected.get(owner) or {}
    if stage not in pending or job_view(body).state in ("Succeeded", "Failed"):
        return False
    del pending[stage]
    if not pending:
        _expected.pop(owner, None)
    return True


def _one(index_name: str, key: Key) -> Any:
    return first_indexed(_indexes, index_name, key)


# --- one reconcile ------------------------------------------------------------------------------------


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


async def reconcile(key: Key, api: KubeClient) -> float | None:
    """Move one DistillationJob forward; returns seconds until it should be looked at again, or None."""
    namespace, name = key
    dj = _current(key)
    if dj is None:
        return None
    status: dict[str, Any] = dict(_desired.get(key) or dj.get("status") or {})
    generation = dj["metadata"].get("generation")
    now = datetime.now(UTC)
    if status.get("phase") in TERMINAL:
        return None
    try:
        spec = DistillationJobSpec.model_validate(dj["spec"])
    except ValidationError as err:
        # The API server's schema and CEL rules catch nearly everything; this is the rest, made visible.
        message = f"invalid spec: {err}".replace("\n", " ")[:1000]
        new = dict(status, phase="Failed", message=message, observedGeneration=generation)
        new["conditions"] = set_conditions(
            status.get("conditions") or [], [Cond("Ready", "False", "InvalidSpec", message)], now, generation
        )
        _submit_status(api, key, new)
        return None

    jobs: dict[str, JobView] = {}
    store = (_indexes.get("stage_jobs") or {}).get(key, ())
    checks = [view for stage, view in store if stage == CHECK_STAGE]
    for stage, view in store:
        if stage != CHECK_STAGE:
            jobs[stage] = view
    for stage, view in list(jobs.items()):
        # Only once per job: a failed stage makes the phase Failed, and terminal jobs are not reconciled.
        if view.state == "Failed":
            detail = await _failure_message(api, namespace, name, stage)
            if detail:
                jobs[stage] = JobView(view.name, view.state, view.attempts, view.start_time, view.completion_time,
                                      detail)
    report = _one("reports", key) or {}
    expected = _pending_expectations(key, jobs)
    problems = () if jobs or expected else tuple(await reference_problems(api, namespace, spec))
    storage = None
    if not (jobs or expected or problems) and s3_uris(spec_uris(spec)):
        storage = await storage_check(
            api, dj, {DJ_LABEL: name, STAGE_LABEL: CHECK_STAGE}, *storage_reads_writes(spec), spec.storage_secret_ref,
            checks, settings(), spec.run.service_account_name or settings().trainer_service_account)
    observed = Observed(jobs, report, problems, frozenset(expected), storage)
    result = plan(name, spec, generation, status, observed, now)

    requeue: float | None = REFERENCE_RECHECK_SECONDS if problems else storage.requeue if storage else None
    if result.create_stage is not None:
        created = await _create_stage(api, dj, spec, result.create_stage)
        _expected.setdefault(key, {})[result.create_stage.value] = time.monotonic() + EXPECTATION_SECONDS
        requeue = EXPECTATION_SECONDS  # look again if the Job never shows up
        events = [e for e in result.events if e.reason != "StageStarted" or created]
    else:
        events = list(result.events)
    if result.publish:
        metrics = json.loads(report.get("metrics.json") or "{}")
        await _publish(api, dj, spec, metrics)
    _submit_status(api, key, result.status)
    for event in events:
        emit(api, dj, event.type, event.reason, event.message)
        log.info("%s/%s: %s %s", namespace, name, event.reason, event.message)
    return requeue


def _pending_expectations(key: Key, jobs: Mapping[str, JobView]) -> set[str]:
    """Stages created but not yet observed, dropping those seen since or past their deadline."""
    now = time.monotonic()
    live = {stage: t for stage, t in _expected.get(key, {}).items() if stage not in jobs and t > now}
    if live:
        _expected[key] = live
    else:
        _expected.pop(key, None)
    return set(live)


async def _create_stage(api: KubeClient, dj: Mapping[str, Any], spec: DistillationJobSpec, stage: Stage) -> bool:
    """The stage Job, carrying the current spec (so an edit reaches the stages that have not started)."""
    global _creating
    s = settings()
    job = build_stage_job(dj, spec, stage.value, default_image=s.trainer_image, pull_policy=s.image_pull_policy,
                          pull_secrets=s.image_pull_secrets, extra_labels=s.extra_labels,
                          service_account=s.trainer_service_account,
                          pod_security_context=s.trainer_pod_security_context,
                          security_context=s.trainer_security_context)
    _creating += 1
    try:
        return await api.create(job)
    finally:
        _creating -= 1


async def _publish(api: KubeClient, dj: Mapping[str, Any], spec: DistillationJobSpec,
                   metrics: Mapping[str, Any]) -> None:
    body = build_student_model(dj, spec, metrics, settings().extra_labels)
    if not await api.create(body):
        meta = body["metadata"]
        await api.merge_patch(API_VERSION, "StudentModel", meta["namespace"], meta["name"], {"spec": body["spec"]})


def same_status(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Equal once both carry the defaults the API server fills in from the CRD schema (e.g. a stage's
    message: ""), so an unchanged status is never written again."""
    if old == new:
        return True
    try:
        return bool(DistillationJobStatus.model_validate(dict(old)).to_wire()
                    == DistillationJobStatus.model_validate(dict(new)).to_wire())
    except ValidationError:
        return dict(old) == dict(new)


def _current(key: Key) -> dict[str, Any] | None:
    """The newest version of the object we know: the watched one, or the one our last status write returned."""
    return newer(_one("dj_bodies", key), _written.get(key))


def _submit_status(api: KubeClient, key: Key, new: dict[str, Any]) -> None:
    """Record the wanted status; the lane writes it (the newest one, if several pile up)."""
    current = _current(key)
    if current is not None and same_status(current.get("status") or {}, new):
        _desired.pop(key, None)
        return
    _desired[key] = new
    STATUS.submit(key, lambda: _write_status(api, key))


async def _write_status(api: KubeClient, key: Key) -> None:
    """Merge-patch the wanted status of `key` over what the server has (404: the object is gone)."""
    new, dj = _desired.get(key), _current(key)
    if new is None or dj is None:
        return
    old: Mapping[str, Any] = dj.get("status") or {}
    if not same_status(old, new):
        # Merge patch: keys that vanished must be nulled explicitly.
        patch = dict(new)
        for gone in set(old) - set(new):
            patch[gone] = None
        try:
            written = await api.merge_patch(API_VERSION, KIND, key[0], key[1], {"status": patch},
                                            subresource="status")
        except ApiError as err:
            if err.status == 404:
                _desired.pop(key, None)
                return
            raise
        _written[key] = {**dj, "metadata": {**dj["metadata"], **{k: written["metadata"].get(k) for k in (
            "resourceVersion", "generation")}}, "status": written.get("status") or {}}
    if _desired.get(key) is new:  # not replaced while we wrote
        del _desired[key]
