"""Is a StudentModel being served? Decided from its Deployment's status, as `kubectl rollout status` does.
Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


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
