"""Is a StudentModel being served? Decided from its Deployment's status, as `kubectl rollout status` does,
and, while it is not, from its Triton Pods: why their containers ended; and the StudentModelStatus that
follows (`decide`). Pure: time is passed in."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubestill.api.names import CONFIG_HASH_ANNOTATION
from kubestill.api.triton import LoadFailure
from kubestill.api.v1alpha1.studentmodel import Endpoint, StudentModelPhase, StudentModelStatus
from kubestill.api.v1alpha1.studentmodel import StudentModelPhase as SMP

from .conditions import Cond, set_conditions, to_seconds
from .storage_check import StorageCheck

# (type, reason, message) of a Kubernetes Event to post on the StudentModel.
SMEvent = tuple[str, str, str]

# Waiting reasons of a container that cannot start (as the kubelet names them); others are transient.
_START_ERRORS = ("CreateContainerError", "CreateContainerConfigError", "ErrImagePull", "ImagePullBackOff",
                 "InvalidImageName", "RunContainerError")
MESSAGE_LIMIT = 1024


@dataclass(frozen=True)
class DeploymentView:
    generation: int
    observed_generation: int
    replicas: int
    ready_replicas: int
    updated_replicas: int
    available_replicas: int


def deployment_view(body: Mapping[str, Any]) -> DeploymentView:
    status = body.get("status") or {}
    return DeploymentView(
        generation=int((body.get("metadata") or {}).get("generation") or 0),
        observed_generation=int(status.get("observedGeneration") or 0),
        replicas=int((body.get("spec") or {}).get("replicas", 1)),
        ready_replicas=int(status.get("readyReplicas") or 0),
        updated_replicas=int(status.get("updatedReplicas") or 0),
        available_replicas=int(status.get("availableReplicas") or 0),
    )


@dataclass(frozen=True)
class ServingState:
    phase: StudentModelPhase
    ready: bool
    reason: str
    message: str
    ready_replicas: int


def serving_state(desired: int, view: DeploymentView | None) -> ServingState:
    """Ready when the Deployment has observed its latest spec and every desired replica is updated and
    ready; scaled to zero is a deliberate, non-ready state."""
    if view is None:
        return ServingState(SMP.PENDING, False, "DeploymentMissing", "waiting for the Triton Deployment", 0)
    ready = view.ready_replicas
    if desired == 0:
        return ServingState(SMP.PENDING, False, "ScaledToZero", "serving.replicas is 0", ready)
    if view.observed_generation < view.generation:
        return ServingState(SMP.DEPLOYING, False, "RolloutPending", "Deployment has not observed its spec", ready)
    if view.updated_replicas >= desired and ready >= desired:
        return ServingState(SMP.READY, True, "Ready", f"{ready}/{desired} Triton replicas ready", ready)
    return ServingState(SMP.DEPLOYING, False, "ReplicasNotReady", f"{ready}/{desired} Triton replicas ready", ready)


def _ended(status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """A container's last failed run (terminated with a non-zero exit code), now or before its restart."""
    for state in (status.get("state") or {}, status.get("lastState") or {}):
        terminated = state.get("terminated")
        if terminated and int(terminated.get("exitCode") or 0) != 0:
            return dict(terminated)
    return None


def _tail(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_LIMIT else "..." + text[-(MESSAGE_LIMIT - 3):]


def pod_failure(pods: Iterable[Mapping[str, Any]], config_digest: str) -> ServingState | None:
    """Why the Triton Pods of the current config are not serving, when a container says so; None otherwise
    (still starting, or Pods of an older config that the Deployment is replacing).

    model.py's refusals (`LoadFailure`, e.g. LabelsMismatch) are final for this config: phase Failed with
    their reason. Any other failed run or start keeps the phase Deploying (the kubelet retries it) with the
    container's reason, so the user sees it instead of a bare replica count.
    """
    for pod in pods:
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp") or (meta.get("annotations") or {}).get(CONFIG_HASH_ANNOTATION) != \
                config_digest:
            continue
        status = pod.get("status") or {}
        for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
            name = cs.get("name", "?")
            if cs.get("ready"):
                continue
            ended = _ended(cs)
            if ended is not None:
                text = (ended.get("message") or "").strip()
                failure = LoadFailure.from_text(text)
                if failure is not None:
                    return ServingState(SMP.FAILED, False, failure.reason, _tail(failure.message), 0)
                detail = f": {_tail(text)}" if text else ""
                return ServingState(SMP.DEPLOYING, False, "ContainerFailed",
                                    f"container {name} of Pod {meta.get('name')} exited {ended.get('exitCode')} "
                                    f"({ended.get('reason') or 'Error'}, {int(cs.get('restartCount') or 0)} "
                                    f"restarts){detail}", 0)
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in _START_ERRORS:
                return ServingState(SMP.DEPLOYING, False, str(waiting["reason"]),
                                    _tail(f"container {name} of Pod {meta.get('name')}: {waiting.get('message', '')}"),
                                    0)
    return None


def failed(status: StudentModelStatus, reason: str, message: str, generation: int | None,
           now: datetime) -> StudentModelStatus:
    """A model that cannot be served as specified (a spec the models refuse, a config that cannot be
    rendered): Failed, Ready=False with the reason."""
    return status.model_copy(update={
        "phase": StudentModelPhase.FAILED, "message": message, "observed_generation": generation,
        "conditions": set_conditions(status.conditions, [Cond("Ready", "False", reason, message)], now, generation)})


def artifact_conditions(check: StorageCheck | None) -> list[Cond]:
    """ArtifactReady from the check of an s3:// artifact (none for other schemes)."""
    if check is None:
        return []
    status = {"passed": "True", "failed": "False"}.get(check.state, "Unknown")
    return [Cond("ArtifactReady", status, check.reason, check.message)]


def artifact_pending(status: StudentModelStatus, check: StorageCheck, generation: int | None,
                     now: datetime) -> tuple[StudentModelStatus, list[SMEvent]]:
    """A StudentModel's status while its artifact is being checked, or after the check failed: Pending, no
    Triton Pod, the reason and the URI in ArtifactReady and Ready (and a Warning Event when it changes)."""
    new = status.model_copy(update={
        "phase": StudentModelPhase.PENDING, "observed_generation": generation, "message": check.message,
        "conditions": set_conditions(status.conditions, [
            *artifact_conditions(check), Cond("Ready", "False", check.reason, check.message)], now, generation)})
    events = []
    if check.state == "failed" and status.message != check.message:
        events.append(("Warning", check.reason, check.message))
    return new, events


@dataclass(frozen=True)
class Observed:
    """What the handler found for a StudentModel whose children are applied."""

    generation: int | None
    state: ServingState  # from the Deployment, or why its Pods do not serve
    service: str  # name of the Triton Deployment and Service
    endpoint: Endpoint
    artifact: StorageCheck | None = None  # the s3:// artifact's check (None: another scheme)
    fetch_failure: StorageCheck | None = None  # a Triton Pod could not download the artifact


def decide(status: StudentModelStatus, observed: Observed, now: datetime) -> tuple[StudentModelStatus, list[SMEvent]]:
    """The status of a StudentModel whose Triton objects exist, and the Events a change of it deserves."""
    state, events = observed.state, []
    fetch = observed.fetch_failure
    if fetch is not None:
        state = ServingState(state.phase, state.ready, fetch.reason, fetch.message, state.ready_replicas)
        if status.message != fetch.message:
            events.append(("Warning", fetch.reason, fetch.message))
    ready = Cond("Ready", "True" if state.ready else "False", state.reason, state.message)
    update: dict[str, Any] = {
        "phase": state.phase, "observed_generation": observed.generation, "ready_replicas": state.ready_replicas,
        "deployment_name": observed.service, "service_name": observed.service, "message": state.message,
        "endpoint": observed.endpoint, "conditions": set_conditions(
            status.conditions, [ready, *artifact_conditions(fetch or observed.artifact)], now, observed.generation)}
    if state.ready and status.ready_at is None:
        update["ready_at"] = to_seconds(now)
    if state.phase != status.phase:
        events.append(("Warning", state.reason, state.message) if state.phase == StudentModelPhase.FAILED else
                      ("Normal", str(state.phase), state.message))
    return status.model_copy(update=update), events
