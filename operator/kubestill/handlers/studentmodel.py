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
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from kubestill.api.names import SM_LABEL, triton_name
from kubestill.api.v1alpha1 import API_VERSION
from kubestill.api.v1alpha1.studentmodel import Endpoint, StudentModelPhase, StudentModelSpec, StudentModelStatus
from kubestill.builders.storage import CHECK_LABEL
from kubestill.builders.triton import (
    build_triton_config_map,
    build_triton_deployment,
    build_triton_service,
    config_hash,
    endpoint,
)
from kubestill.clients.events import EventRecorder
from kubestill.clients.kube import KubeClient
from kubestill.logic.jobs import JobView, job_view
from kubestill.logic.serving import (
    DeploymentView,
    Observed,
    SMEvent,
    artifact_pending,
    decide,
    deployment_view,
    failed,
    pod_failure,
    serving_state,
)
from kubestill.logic.storage_check import StorageCheck
from kubestill.runtime import Controller, Key, Kind
from kubestill.settings import Settings

from .children import apply_child
from .serving_check import ServingChecks
from .storage_check import FETCH_RECHECK_SECONDS, StorageChecks, fetch_failure

KIND = "StudentModel"
BODIES, DEPLOYMENTS, CHECK_JOBS, SERVED_JOBS = "sm_bodies", "triton_deployments", "artifact_checks", "served_checks"
log = logging.getLogger("kubestill.studentmodel")
# Seconds between looks at the Pods of a StudentModel that is not ready (Deploying), and of a Failed one.
POLL_SECONDS = 5.0
FAILED_POLL_SECONDS = 30.0

SMController = Controller[StudentModelSpec, StudentModelStatus]


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


def index_check_job(body: Mapping[str, Any]) -> dict[Key, JobView] | None:
    """Storage check Jobs of a StudentModel's s3:// artifact."""
    labels = body["metadata"].get("labels") or {}
    if SM_LABEL not in labels or CHECK_LABEL not in labels:
        return None
    return {(body["metadata"]["namespace"], labels[SM_LABEL]): job_view(body)}


class StudentModels(Kind[StudentModelSpec, StudentModelStatus]):
    """The StudentModel kind: check the artifact, apply the Triton objects, observe them, decide the status."""

    def __init__(self, settings: Settings, checks: StorageChecks, events: EventRecorder) -> None:
        self.settings = settings
        self.checks = checks
        self.events = events
        self.served = ServingChecks(settings)
        # Generation whose children were applied, per object: skip re-applying in steady state.
        self._applied: dict[Key, int | None] = {}

    def forget(self, key: Key) -> None:
        self._applied.pop(key, None)

    async def reconcile(self, ctl: SMController, key: Key, body: dict[str, Any]) -> float | None:
        try:
            status = ctl.status.parse(body)
        except ValidationError as err:
            log.error("%s/%s: stored status does not fit the model, left as it is: %s", *key, err)
            return None
        generation = body["metadata"].get("generation")
        now = datetime.now(UTC)
        api = ctl.api()
        try:
            spec = ctl.spec_of(body)
        except ValidationError as err:
            message = f"invalid spec: {err}".replace("\n", " ")[:1000]
            await self._write(ctl, key, body, status, failed(status, "InvalidSpec", message, generation, now), [])
            return None

        # An s3:// artifact is checked with the model's credentials before any Triton Pod exists.
        gate = await self.checks.artifact(api, body, spec, list(ctl.cache.all(CHECK_JOBS, key)))
        if gate is not None and gate.state != "passed":
            await self._write(ctl, key, body, status, *artifact_pending(status, gate, generation, now))
            return gate.requeue

        view: DeploymentView | None = ctl.cache.one(DEPLOYMENTS, key)
        s = self.settings
        try:
            config = build_triton_config_map(body, spec, s.extra_labels)
        except (ValueError, KeyError) as err:
            message = f"cannot render the Triton config: {err}"
            await self._write(ctl, key, body, status, failed(status, "RenderFailed", message, generation, now),
                              [("Warning", "RenderFailed", message)])
            return None
        events = await self._apply_children(api, key, body, spec, status, config, view)
        observed = await self._observe(api, key, body, spec, config, view, gate)
        new, more = decide(status, observed, now)
        new, served = await self.served.step(api, body, spec, status, new, observed.state.ready,
                                             list(ctl.cache.all(SERVED_JOBS, key)), now)
        await self._write(ctl, key, body, status, new, [*events, *more, *served])
        state = observed.state
        if state.ready or view is None or spec.serving.replicas == 0:
            # Ready, or waiting for an event (the Deployment's ADDED, a spec change); nothing watched changes when
            # an s3:// artifact's check or fetch fails, so look again while not ready.
            return FETCH_RECHECK_SECONDS if gate is not None and not state.ready else None
        return FAILED_POLL_SECONDS if state.phase == StudentModelPhase.FAILED else POLL_SECONDS

    async def _apply_children(self, api: KubeClient, key: Key, body: dict[str, Any], spec: StudentModelSpec,
                              status: StudentModelStatus, config: dict[str, Any],
                              view: DeploymentView | None) -> list[SMEvent]:
        """The Triton ConfigMap, Deployment and Service, when the generation changed or they are missing."""
        generation = body["metadata"].get("generation")
        if self._applied.get(key) == generation and view is not None:
            return []
        s = self.settings
        await apply_child(api, config)
        await apply_child(api, build_triton_deployment(
            body, spec, default_image=s.triton_image, gpu_image=s.triton_gpu_image,
            config_digest=config_hash(config),
            pull_policy=s.image_pull_policy, pull_secrets=s.image_pull_secrets, extra_labels=s.extra_labels,
            fetch_image=s.trainer_image, fetch_pod_security=s.trainer_pod_security_context,
            fetch_security=s.trainer_security_context))
        await apply_child(api, build_triton_service(body, s.extra_labels))
        first = self._applied.get(key) is None and not status.deployment_name
        self._applied[key] = generation
        return [("Normal", "Deploying", f"created Deployment and Service {triton_name(key[1])}")] if first else []

    async def _observe(self, api: KubeClient, key: Key, body: dict[str, Any], spec: StudentModelSpec,
                       config: dict[str, Any], view: DeploymentView | None, gate: StorageCheck | None) -> Observed:
        """How the Deployment serves; while it does not, why (an artifact download, a container)."""
        state = serving_state(spec.serving.replicas, view)
        fetch = None
        if gate is not None and not state.ready:  # an s3:// artifact not served yet: did a Pod fail to fetch it?
            checked = await fetch_failure(api, body, gate)
            fetch = checked if checked.state == "failed" else None
        if fetch is None and not state.ready and view is not None and spec.serving.replicas > 0:
            # Why the Triton Pods do not serve (e.g. model.py refusing labels that disagree with the artifact).
            pods = await api.list("v1", "Pod", key[0], f"{SM_LABEL}={key[1]}")
            state = pod_failure(pods, config_hash(config)) or state
        return Observed(body["metadata"].get("generation"), state, triton_name(key[1]),
                        Endpoint.model_validate(endpoint(body)), gate, fetch)

    async def _write(self, ctl: SMController, key: Key, body: dict[str, Any], old: StudentModelStatus,
                     new: StudentModelStatus, events: list[SMEvent]) -> None:
        await ctl.status.write(key, body, old, new)
        for type_, reason, message in events:
            self.events.emit(body, type_, reason, message)
