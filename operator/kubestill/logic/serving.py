"""Is a StudentModel being served? Decided from its Deployment's status, as `kubectl rollout status` does,
and, while it is not, from its Triton Pods: why their containers ended. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kubestill.api.names import CONFIG_HASH_ANNOTATION
from kubestill.api.triton import LoadFailure

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
    phase: str  # StudentModelPhase value
    ready: bool
    reason: str
    message: str
    ready_replicas: int


def serving_state(desired: int, view: DeploymentView | None) -> ServingState:
    """Ready when the Deployment has observed its latest spec and every desired replica is updated and
    ready; scaled to zero is a deliberate, non-ready state."""
    if view is None:
        return ServingState("Pending", False, "DeploymentMissing", "waiting for the Triton Deployment", 0)
    ready = view.ready_replicas
    if desired == 0:
        return ServingState("Pending", False, "ScaledToZero", "serving.replicas is 0", ready)
    if view.observed_generation < view.generation:
        return ServingState("Deploying", False, "RolloutPending", "Deployment has not observed its spec", ready)
    if view.updated_replicas >= desired and ready >= desired:
        return ServingState("Ready", True, "Ready", f"{ready}/{desired} Triton replicas ready", ready)
    return ServingState("Deploying", False, "ReplicasNotReady", f"{ready}/{desired} Triton replicas ready", ready)


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
                    return ServingState("Failed", False, failure.reason, _tail(failure.message), 0)
                detail = f": {_tail(text)}" if text else ""
                return ServingState("Deploying", False, "ContainerFailed",
                                    f"container {name} of Pod {meta.get('name')} exited {ended.get('exitCode')} "
                                    f"({ended.get('reason') or 'Error'}, {int(cs.get('restartCount') or 0)} "
                                    f"restarts){detail}", 0)
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in _START_ERRORS:
                return ServingState("Deploying", False, str(waiting["reason"]),
                                    _tail(f"container {name} of Pod {meta.get('name')}: {waiting.get('message', '')}"),
                                    0)
    return None
