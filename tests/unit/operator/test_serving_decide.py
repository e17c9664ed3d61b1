"""A StudentModel's status from what its Triton objects show: one worked example per situation (time passed in)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kubestill.api.v1alpha1.studentmodel import Endpoint, StudentModelPhase, StudentModelStatus
from kubestill.logic.conditions import find
from kubestill.logic.serving import (
    DeploymentView,
    Observed,
    ServingState,
    artifact_pending,
    decide,
    failed,
    serving_state,
)
from kubestill.logic.storage_check import StorageCheck

NOW = datetime(2026, 1, 1, 12, 0, 0, 500_000, tzinfo=UTC)
LATER = datetime(2026, 1, 1, 13, tzinfo=UTC)
ENDPOINT = Endpoint(http="http://m-triton.ml.svc:8000", grpc="m-triton.ml.svc:8001",
                    metrics="http://m-triton.ml.svc:8002/metrics", model_name="m")
PASSED = StorageCheck("passed", "Readable", "s3://b/m checked with the Pods' default credentials")
FETCH = StorageCheck("failed", "ObjectNotFound", "s3://b/m: no such object (init container fetch)")


def view(ready: int, desired: int = 1, observed: int = 1) -> DeploymentView:
    return DeploymentView(generation=1, observed_generation=observed, replicas=desired, ready_replicas=ready,
                          updated_replicas=ready, available_replicas=ready)


def observed(state: ServingState, artifact: StorageCheck | None = None,
             fetch: StorageCheck | None = None) -> Observed:
    return Observed(2, state, "m-triton", ENDPOINT, artifact, fetch)


@pytest.mark.parametrize(
    ("state", "artifact", "fetch", "phase", "ready", "reason", "events"),
    [
        (serving_state(1, None), None, None, "Pending", "False", "DeploymentMissing", [("Normal", "Pending")]),
        (serving_state(1, view(0)), None, None, "Deploying", "False", "ReplicasNotReady", [("Normal", "Deploying")]),
        (serving_state(1, view(1, observed=0)), None, None, "Deploying", "False", "RolloutPending",
         [("Normal", "Deploying")]),
        (serving_state(1, view(1)), None, None, "Ready", "True", "Ready", [("Normal", "Ready")]),
        (serving_state(0, view(0, desired=0)), None, None, "Pending", "False", "ScaledToZero", [("Normal", "Pending")]),
        (serving_state(1, view(1)), PASSED, None, "Ready", "True", "Ready", [("Normal", "Ready")]),
        (serving_state(1, view(0)), PASSED, FETCH, "Deploying", "False", "ObjectNotFound",
         [("Warning", "ObjectNotFound"), ("Normal", "Deploying")]),
        (ServingState(StudentModelPhase.FAILED, False, "LabelsMismatch", "labels differ", 0), None, None, "Failed",
         "False", "LabelsMismatch", [("Warning", "LabelsMismatch")]),
    ],
)
def test_decide(state: ServingState, artifact: StorageCheck | None, fetch: StorageCheck | None, phase: str,
                ready: str, reason: str, events: list[tuple[str, str]]) -> None:
    status, posted = decide(StudentModelStatus(phase=StudentModelPhase.PENDING if phase != "Pending" else "Deploying"),
                            observed(state, artifact, fetch), NOW)
    assert status.phase == phase
    cond = find(status.conditions, "Ready")
    assert cond is not None and (cond.status, cond.reason) == (ready, reason)
    assert [(t, r) for t, r, _ in posted] == events
    assert (status.observed_generation, status.service_name, status.endpoint) == (2, "m-triton", ENDPOINT)
    artifact_cond = find(status.conditions, "ArtifactReady")
    assert (artifact_cond.status if artifact_cond else None) == (
        None if artifact is None else "False" if fetch else "True")


def test_ready_at_is_set_once_at_whole_seconds() -> None:
    first, _ = decide(StudentModelStatus(), observed(serving_state(1, view(1))), NOW)
    again, events = decide(first, observed(serving_state(1, view(1))), LATER)
    assert first.to_wire()["readyAt"] == "2026-01-01T12:00:00Z"
    assert again == first and events == []  # nothing changed: nothing to write, no Event


def test_an_artifact_check_holds_the_model_pending_and_warns_once() -> None:
    check = StorageCheck("failed", "BucketNotFound", "s3://b: no such bucket")
    status, events = artifact_pending(StudentModelStatus(), check, 1, NOW)
    assert status.phase == "Pending" and status.message == check.message
    assert [(c.type, c.status, c.reason) for c in status.conditions] == [
        ("ArtifactReady", "False", "BucketNotFound"), ("Ready", "False", "BucketNotFound")]
    assert events == [("Warning", "BucketNotFound", check.message)]
    assert artifact_pending(status, check, 1, LATER)[1] == []


def test_failed_names_the_reason() -> None:
    status = failed(StudentModelStatus(), "RenderFailed", "cannot render the Triton config: x", 3, NOW)
    cond = find(status.conditions, "Ready")
    assert status.phase == "Failed" and status.observed_generation == 3
    assert cond is not None and (cond.status, cond.reason) == ("False", "RenderFailed")
