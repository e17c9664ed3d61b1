"""Reading Job and Pod status the way the Job controller and kubelet write it."""

from __future__ import annotations

from typing import Any

import pytest

from kubestill.logic.jobs import JobView, duration_seconds, job_view, termination_message


def _job(status: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "bbc-train"}, "status": status}


@pytest.mark.parametrize(
    ("status", "state", "attempts"),
    [
        ({}, "Pending", 0),
        ({"active": 1, "startTime": "2026-01-01T00:00:00Z"}, "Running", 1),
        ({"failed": 1, "active": 1}, "Running", 2),  # a retry within backoffLimit is still running
        ({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}, "Succeeded", 1),
        ({"failed": 2, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]},
         "Failed", 2),
        ({"failed": 1, "conditions": [{"type": "Failed", "status": "False"}]}, "Running", 1),
    ],
)
def test_job_view_state(status: dict[str, Any], state: str, attempts: int) -> None:
    view = job_view(_job(status))
    assert (view.state, view.attempts) == (state, attempts)


def test_failed_job_message_names_the_reason() -> None:
    cond = {"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "too slow"}
    assert job_view(_job({"conditions": [cond]})).message == "DeadlineExceeded: too slow"


@pytest.mark.parametrize(
    ("start", "end", "seconds"),
    [("2026-01-01T00:00:00Z", "2026-01-01T00:01:30Z", 90.0), (None, "2026-01-01T00:01:30Z", 0.0),
     ("2026-01-01T00:02:00Z", "2026-01-01T00:01:00Z", 0.0)],
)
def test_duration(start: str | None, end: str | None, seconds: float) -> None:
    assert duration_seconds(JobView("j", "Succeeded", 1, start, end)) == seconds


@pytest.mark.parametrize(
    ("pod", "expected"),
    [
        ({"status": {"containerStatuses": [{"state": {"terminated": {"exitCode": 2, "message": "bad field\n"}}}]}},
         "exit code 2: bad field"),
        ({"status": {"containerStatuses": [{"state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}},
         "exit code 137 (OOMKilled): the kernel killed the container for lack of memory (no limit set: the node "
         "itself ran short)"),
        ({"spec": {"containers": [{"name": "sidecar"},
                                  {"name": "trainer", "resources": {"limits": {"memory": "160Mi"}}}]},
          "status": {"containerStatuses": [{"name": "trainer", "lastState": {"terminated": {
              "exitCode": 137, "reason": "OOMKilled", "message": "loading the teacher"}}}]}},
         "exit code 137 (OOMKilled): the container used all of its memory limit (160Mi) and the kernel killed it; "
         "give it more memory: loading the teacher"),
        ({"status": {"containerStatuses": [{"state": {"terminated": {"exitCode": 0}}}]}}, ""),
        ({"status": {"reason": "Evicted", "message": "node out of disk"}}, "Evicted: node out of disk"),
    ],
)
def test_termination_message(pod: dict[str, Any], expected: str) -> None:
    assert termination_message(pod) == expected
