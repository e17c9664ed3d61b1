"""What a stage Job's status means, read the way `kubectl` and the Job controller read it. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubestill.api.v1alpha1.distillationjob import StageState


@dataclass(frozen=True)
class JobView:
    """The parts of a batch/v1 Job the pipeline decides on."""

    name: str
    state: StageState
    attempts: int
    start_time: str | None = None
    completion_time: str | None = None
    # The Job's own failure reason (e.g. BackoffLimitExceeded); the Pod's termination message is better and
    # is filled in by the handler when it has one.
    message: str = ""


def _condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for cond in status.get("conditions") or []:
        if cond.get("type") == type_ and cond.get("status") == "True":
            return dict(cond)
    return None


def job_view(job: Mapping[str, Any]) -> JobView:
    """Classify a Job: Failed/Complete conditions are final (as the Job controller sets them after the
    retries are exhausted); otherwise Running once a Pod is active or has run, else Pending."""
    status = job.get("status") or {}
    name = str((job.get("metadata") or {}).get("name", ""))
    active, succeeded, failed = (int(status.get(k) or 0) for k in ("active", "succeeded", "failed"))
    attempts = active + succeeded + failed
    start, done = status.get("startTime"), status.get("completionTime")
    failed_cond = _condition(status, "Failed")
    if failed_cond is not None:
        message = ": ".join(p for p in (failed_cond.get("reason"), failed_cond.get("message")) if p)
        return JobView(name, StageState.FAILED, attempts, start, failed_cond.get("lastTransitionTime"), message)
    if _condition(status, "Complete") is not None or (succeeded > 0 and active == 0 and done):
        return JobView(name, StageState.SUCCEEDED, attempts, start, done)
    if active > 0 or attempts > 0 or start:
        return JobView(name, StageState.RUNNING, attempts, start)
    return JobView(name, StageState.PENDING, attempts)


def parse_time(value: str | None) -> datetime | None:
    """An RFC 3339 timestamp as written by the API server, or None."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def duration_seconds(view: JobView) -> float:
    """How long a finished Job ran (0 when unknown)."""
    start, end = parse_time(view.start_time), parse_time(view.completion_time)
    if start is None or end is None:
        return 0.0
    return max((end - start).total_seconds(), 0.0)


def termination_message(pod: Mapping[str, Any]) -> str:
    """The most useful failure text of a Pod: the trainer container's termination message (the kubelet
    falls back to the log tail with FallbackToLogsOnError), else the Pod's own reason/message. A container the
    kernel killed at its cgroup's memory limit (reason OOMKilled) leaves no message of its own: the text says so,
    with the limit from the Pod's spec, so the fix (more memory) is in the status, not only in `kubectl describe`."""
    status = pod.get("status") or {}
    for cs in status.get("containerStatuses") or []:
        terminated = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
        if terminated and terminated.get("exitCode", 0) != 0:
            text = (terminated.get("message") or "").strip()
            head = f"exit code {terminated.get('exitCode')}"
            if terminated.get("reason"):
                head += f" ({terminated['reason']})"
            if terminated.get("reason") == "OOMKilled":
                head += f": {_oom_explanation(pod, cs.get('name'))}"
            return f"{head}: {text}" if text else head
    return ": ".join(p for p in (status.get("reason"), status.get("message")) if p)


def _oom_explanation(pod: Mapping[str, Any], container: str | None) -> str:
    containers: list[dict[str, Any]] = (pod.get("spec") or {}).get("containers") or []
    spec = next((c for c in containers if c.get("name") == container), {})
    limit = ((spec.get("resources") or {}).get("limits") or {}).get("memory")
    if limit:
        return f"the container used all of its memory limit ({limit}) and the kernel killed it; give it more memory"
    return "the kernel killed the container for lack of memory (no limit set: the node itself ran short)"


def final_message(pod: Mapping[str, Any]) -> str:
    """The termination message of a Pod's first container that ended, whatever its exit code: the channel a Job
    that succeeds answers through (the serving check's result); "" while none has ended.

    >>> final_message({"status": {"containerStatuses": [{"state": {"terminated": {"exitCode": 0,
    ...     "message": '{"ok": true}'}}}]}})
    '{"ok": true}'
    """
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
        if terminated:
            return str(terminated.get("message") or "")
    return ""
