"""StudentModel: render the Triton ConfigMap, Deployment and Service; report readiness and the endpoint.

Children are applied when the StudentModel's generation changes (or they are missing) and are otherwise
only observed through a kopf index of the Deployment, so a steady state costs no API requests.

While the Deployment is not ready, its Pods say why: model.py leaves the reason it refused to load (e.g. a
spec.labels order that is not the artifact's) in the tritonserver container's termination log, and a
container that cannot start has a waiting reason. A crash loop does not change the Deployment's status, so
a not-ready StudentModel is looked at again every POLL_SECONDS (one Pod list each time); a Ready one, never.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from kubestill.api.names import SM_LABEL, triton_name
from kubestill.api.v1alpha1 import API_VERSION
from kubestill.api.v1alpha1.studentmodel import StudentModelSpec, StudentModelStatus
from kubestill.builders.storage import CHECK_LABEL
from kubestill.builders.triton import (
    build_triton_config_map,
    build_triton_deployment,
    build_triton_service,
    config_hash,
    endpoint,
)
from kubestill.clients.events import emit
from kubestill.clients.kube import KubeClient, client
from kubestill.logic.conditions import Cond, rfc3339, set_conditions
from kubestill.logic.jobs import JobView, job_view
from kubestill.logic.serving import DeploymentView, deployment_view, pod_failure, serving_state

from .distillationjob import settings
from .reconciler import Key, Reconciler, first_indexed, newer, owner_key
from .storage_check import FETCH_RECHECK_SECONDS, artifact_check, artifact_conditions, artifact_status, fetch_failure

KIND = "StudentModel"
log = logging.getLogger("kubestill.studentmodel")
# Seconds between looks at the Pods of a StudentModel that is not ready (Deploying), and of a Failed one.
POLL_SECONDS = 5.0
FAILED_POLL_SECONDS = 30.0

_indexes: dict[str, Any] = {}
_written: dict[Key, dict[str, Any]] = {}
# Generation whose children were applied, per object: skip re-applying in steady state.
_applied: dict[Key, int | None] = {}


def index_sm(body: Mapping[str, Any]) -> dict[Key, dict[str, Any]]:
    meta = body["metadata"]
    slim = {
        "apiVersion": body.get("apiVersion", API_VERSION),
        "kind": KIND,
        "metadata": {k: meta.get(k) for k in ("name", "namespace", "uid", "generation", "resourceVersion")},
        "spec": dict(body.get("spec") or {}),
        "status": dict(body.get("status") or {}),
    }
    return {(meta["namespace"], meta["name"]): slim}


def index_deployment(body: Mapping[str, Any]) -> dict[Key, DeploymentView] | None:
    labels = body["metadata"].get("labels") or {}
    if SM_LABEL not in labels:
        return None
    return {(body["metadata"]["namespace"], labels[SM_LABEL]): deployment_view(body)}


async def _reconcile(key: Key) -> float | None:
    return await reconcile(key, client())


RECONCILER = Reconciler(KIND, _reconcile)


async def on_event(event_type: str | None, body: Mapping[str, Any], indexes: Mapping[str, Any]) -> None:
    _indexes.update(indexes)
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    if event_type == "DELETED":
        RECONCILER.forget(key)
        _written.pop(key, None)
        _applied.pop(key, None)
        return
    await RECONCILER.run(key)


async def on_child_event(event_type: str | None, body: Mapping[str, Any], indexes: Mapping[str, Any]) -> None:
    _indexes.update(indexes)
    owner = owner_key(body, SM_LABEL)
    if owner is not None and event_type is not None:
        await RECONCILER.run(owner)


def _one(index_name: str, key: Key) -> Any:
    return first_indexed(_indexes, index_name, key)


def index_check_job(body: Mapping[str, Any]) -> dict[Key, JobView] | None:
    """Storage check Jobs of a StudentModel's s3:// artifact."""
    labels = body["metadata"].get("labels") or {}
    if SM_LABEL not in labels or CHECK_LABEL not in labels:
        return None
    return {(body["metadata"]["namespace"], labels[SM_LABEL]): job_view(body)}


def _check_jobs(key: Key) -> list[JobView]:
    return list((_indexes.get("artifact_checks") or {}).get(key, ()))


async def _apply(api: KubeClient, body: dict[str, Any]) -> None:
    """Create, or merge-patch labels and spec/data onto the existing object (ours by name)."""
    if await api.create(body):
        return
    meta = body["metadata"]
    patch: dict[str, Any] = {"metadata": {"labels": meta["labels"]}}
    for field in ("spec", "data"):
        if field in body:
            patch[field] = body[field]
    if body["kind"] == "Service":  # clusterIP and friends are immutable or server-assigned
        patch["spec"] = {"selector": body["spec"]["selector"], "ports": body["spec"]["ports"]}
    await api.merge_patch(body["apiVersion"], body["kind"], meta["namespace"], meta["name"], patch)


async def reconcile(key: Key, api: KubeClient) -> float | None:
    sm = newer(_one("sm_bodies", key), _written.get(key))
    if sm is None:
        return None
    status: dict[str, Any] = dict(sm.get("status") or {})
    generation = sm["metadata"].get("generation")
    now = datetime.now(UTC)
    try:
        spec = StudentModelSpec.model_validate(sm["spec"])
    except ValidationError as err:
        message = f"invalid spec: {err}".replace("\n", " ")[:1000]
        new = dict(status, phase="Failed", message=message, observedGeneration=generation)
        new["conditions"] = set_conditions(
            status.get("conditions") or [], [Cond("Ready", "False", "InvalidSpec", message)], now, generation
        )
        await _write_status(api, sm, status, new, [])
        return None

    # An s3:// artifact is checked with the model's credentials before any Triton Pod exists.
    gate = await artifact_check(api, sm, spec, _check_jobs(key), settings())
    if gate is not None and gate.state != "passed":
        await _write_status(api, sm, status, *artifact_status(status, gate, generation, now))
        return gate.requeue

    view: DeploymentView | None = _one("triton_deployments", key)
    events: list[tuple[str, str, str]] = []
    s = settings()
    try:
        config = build_triton_config_map(sm, spec, s.extra_labels)
    except (ValueError, KeyError) as err:
        message = f"cannot render the Triton config: {err}"
        new = dict(status, phase="Failed", message=message, observedGeneration=generation)
        new["conditions"] = set_conditions(status.get("conditions") or [],
                                           [Cond("Ready", "False", "RenderFailed", message)], now, generation)
        await _write_status(api, sm, status, new, [("Warning", "RenderFailed", message)])
        return None
    if _applied.get(key) != generation or view is None:
        await _apply(api, config)
        await _apply(api, build_triton_deployment(
            sm, spec, default_image=s.triton_image, config_digest=config_hash(config),
            pull_policy=s.image_pull_policy, pull_secrets=s.image_pull_secrets, extra_labels=s.extra_labels,
            fetch_image=s.trainer_image))
        await _apply(api, build_triton_service(sm, s.extra_labels))
        if _applied.get(key) is None and not status.get("deploymentName"):
            events.append(("Normal", "Deploying", f"created Deployment and Service {triton_name(key[1])}"))
        _applied[key] = generation

    state = serving_state(spec.serving.replicas, view)
    fetch_failed = False
    if gate is not None and not state.ready:  # an s3:// artifact not served yet: did a Pod fail to fetch it?
        gate = await fetch_failure(api, sm, gate)
        if gate.state == "failed":
            fetch_failed = True
            state = replace(state, reason=gate.reason, message=gate.message)
            if status.get("message") != gate.message:
                events.append(("Warning", gate.reason, gate.message))
    if not fetch_failed and not state.ready and view is not None and spec.serving.replicas > 0:
        # Why the Triton Pods do not serve (e.g. model.py refusing labels that disagree with the artifact).
        pods = await api.list("v1", "Pod", key[0], f"{SM_LABEL}={key[1]}")
        state = pod_failure(pods, config_hash(config)) or state
    new = dict(status)
    new.update(
        phase=state.phase,
        observedGeneration=generation,
        readyReplicas=state.ready_replicas,
        deploymentName=triton_name(key[1]),
        serviceName=triton_name(key[1]),
        message=state.message,
        endpoint=endpoint(sm),
    )
    new["conditions"] = set_conditions(
        status.get("conditions") or [], [Cond("Ready", "True" if state.ready else "False", state.reason,
                                              state.message), *artifact_conditions(gate)], now, generation)
    if state.ready and not status.get("readyAt"):
        new["readyAt"] = rfc3339(now)
    if state.phase != status.get("phase"):
        events.append(("Normal", state.phase, state.message) if state.phase != "Failed" else
                      ("Warning", state.reason, state.message))
    await _write_status(api, sm, status, new, events)
    if state.ready or view is None or spec.serving.replicas == 0:
        # Ready, or waiting for an event (the Deployment's ADDED, a spec change); nothing watched changes when
        # an s3:// artifact's check or fetch fails, so look again while not ready.
        return FETCH_RECHECK_SECONDS if gate is not None and not state.ready else None
    return FAILED_POLL_SECONDS if state.phase == "Failed" else POLL_SECONDS


async def _write_status(api: KubeClient, sm: Mapping[str, Any], old: Mapping[str, Any], new: dict[str, Any],
                        events: list[tuple[str, str, str]]) -> None:
    meta = sm["metadata"]
    try:
        unchanged = StudentModelStatus.model_validate(dict(old)).to_wire() == \
            StudentModelStatus.model_validate(new).to_wire()
    except ValidationError:
        unchanged = new == dict(old)
    if not unchanged:
        patch = dict(new)
        for gone in set(old) - set(new):
            patch[gone] = None
        written = await api.merge_patch(API_VERSION, KIND, meta["namespace"], meta["name"], {"status": patch},
                                        subresource="status")
        _written[(meta["namespace"], meta["name"])] = {
            **sm, "metadata": {**sm["metadata"], "resourceVersion": written["metadata"].get("resourceVersion")},
            "status": written.get("status") or {}}
    for type_, reason, message in events:
        emit(api, sm, type_, reason, message)
