"""Why a StudentModel's Triton Pods are not serving, read from their status as the kubelet writes it (issue #13,
fault 9: a spec.labels order that is not the artifact's must show as a condition, not only in a Triton log)."""

from __future__ import annotations

from typing import Any

import pytest

from kubestill.api.triton import LABELS_MISMATCH, LoadFailure
from kubestill.logic.serving import pod_failure

DIGEST = "abc"
REFUSAL = LoadFailure(LABELS_MISMATCH, "StudentModel spec.labels ['b', 'a'] are not the artifact's class order")


def _pod(*, digest: str = DIGEST, ready: bool = False, state: dict[str, Any] | None = None,
         last: dict[str, Any] | None = None, init: list[dict[str, Any]] | None = None, restarts: int = 1,
         deleting: bool = False) -> dict[str, Any]:
    cs: dict[str, Any] = {"name": "tritonserver", "ready": ready, "restartCount": restarts,
                          "state": state or {"running": {}}}
    if last is not None:
        cs["lastState"] = last
    meta: dict[str, Any] = {"name": "sm-triton-1", "annotations": {"kubestill.io/config-hash": digest}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "status": {"containerStatuses": [cs], "initContainerStatuses": init or []}}


def _terminated(code: int, message: str) -> dict[str, Any]:
    return {"terminated": {"exitCode": code, "reason": "Error", "message": message}}


@pytest.mark.parametrize(
    ("pods", "phase", "reason", "words"),
    [
        ([], None, None, None),
        ([_pod()], None, None, None),  # starting
        ([_pod(state={"waiting": {"reason": "CrashLoopBackOff"}}, last=_terminated(1, REFUSAL.to_text()))],
         "Failed", LABELS_MISMATCH, "spec.labels ['b', 'a']"),
        ([_pod(last=_terminated(1, REFUSAL.to_text()))], "Failed", LABELS_MISMATCH, "artifact's class order"),
        ([_pod(state=_terminated(1, REFUSAL.to_text()))], "Failed", LABELS_MISMATCH, "spec.labels"),
        # A crash without a model.py reason: Deploying (the kubelet retries), with the log tail.
        ([_pod(last=_terminated(139, "I1130 server.cc] ... Segmentation fault"))], "Deploying", "ContainerFailed",
         "exited 139 (Error, 1 restarts): I1130 server.cc] ... Segmentation fault"),
        ([_pod(state={"waiting": {"reason": "ImagePullBackOff", "message": "no such image"}})], "Deploying",
         "ImagePullBackOff", "no such image"),
        ([_pod(init=[{"name": "assemble-model-repository", "state": {"waiting": {}},
                      "lastState": _terminated(1, "cp: cannot stat '/a/triton/model.py'")}])],
         "Deploying", "ContainerFailed", "container assemble-model-repository"),
        # Not the current config (a Pod the Deployment is replacing), going away, or recovered: ignored.
        ([_pod(digest="old", last=_terminated(1, REFUSAL.to_text()))], None, None, None),
        ([_pod(deleting=True, last=_terminated(1, REFUSAL.to_text()))], None, None, None),
        ([_pod(ready=True, last=_terminated(1, REFUSAL.to_text()))], None, None, None),
        ([_pod(last={"terminated": {"exitCode": 0, "reason": "Completed"}})], None, None, None),
    ],
)
def test_pod_failure(pods: list[dict[str, Any]], phase: str | None, reason: str | None, words: str | None) -> None:
    state = pod_failure(pods, DIGEST)
    if phase is None:
        assert state is None
        return
    assert state is not None and not state.ready
    assert (state.phase, state.reason) == (phase, reason)
    assert words is not None and words in state.message


def test_load_failure_round_trip() -> None:
    assert LoadFailure.from_text(REFUSAL.to_text()) == REFUSAL
    assert LoadFailure.from_text("I1130 06:27:36.410958 26299 server.cc:305] waiting") is None
    assert LoadFailure.from_text("") is None
