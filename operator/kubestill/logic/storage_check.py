"""Whether a resource's s3:// URIs have been checked, and what to do next. Pure; time is passed in.

A check is a short Job (`<owner>-check-<key>-<attempt>`, key = digest of what it checks) run with the resource's
own credentials: the operator never holds them. Its answer is final for that attempt (backoffLimit 0), so a
failure never loops: the next attempt starts only after a growing pause (30 s, 1 min, 2 min, 4 min), and after
MAX_ATTEMPTS only a spec change that alters what is checked (a new key) checks again.

>>> from kubestill.logic.jobs import JobView
>>> decide_check("dj", "abcd1234", [], {}, 0.0).create
0
>>> ok = JobView("dj-check-abcd1234-0", "Succeeded", 1, "t0", "t1")
>>> decide_check("dj", "abcd1234", [ok], {}, 0.0).state
'passed'
>>> bad = JobView("dj-check-abcd1234-0", "Failed", 1, "t0", "2026-01-01T00:00:00Z")
>>> msg = {"dj-check-abcd1234-0": '{"ok": false, "reason": "BucketNotFound", "uri": "s3://b/x", "message": "no b"}'}
>>> d = decide_check("dj", "abcd1234", [bad], msg, 1767225610.0)  # 10 s after the failure
>>> (d.state, d.reason, d.create, d.requeue)
('failed', 'BucketNotFound', None, 20.0)
>>> decide_check("dj", "abcd1234", [bad], msg, 1767225630.0).create  # 30 s after: the next attempt
1
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from kubestill.api.names import check_job_name
from kubestill.api.storage import parse_check_result
from kubestill.api.v1alpha1.distillationjob import StageState

from .conditions import rfc3339
from .jobs import JobView, parse_time

MAX_ATTEMPTS = 5
RETRY_BASE_SECONDS = 30.0


@dataclass(frozen=True)
class StorageCheck:
    """Where a resource's storage check stands."""

    state: str  # "checking" | "passed" | "failed"
    reason: str = ""  # a StorageReason value when failed; "Checking" while checking
    message: str = ""
    create: int | None = None  # the attempt whose Job should be created now
    requeue: float | None = None  # look again after this many seconds (a pending retry)
    job: str = ""  # the check Job this is about


def attempt_of(owner: str, key: str, job_name: str) -> int | None:
    """The attempt number of a check Job of `owner` for `key`, None for other Jobs."""
    prefix = check_job_name(owner, key, 0)[:-1]
    if not job_name.startswith(prefix) or not job_name[len(prefix):].isdigit():
        return None
    return int(job_name[len(prefix):])


def decide_check(owner: str, key: str, jobs: Sequence[JobView], messages: Mapping[str, str],
                 now: float) -> StorageCheck:
    """`jobs`: the owner's check Jobs (any key); `messages`: termination messages of failed ones by Job name;
    `now`: seconds since the epoch."""
    mine = sorted((a, j) for j in jobs if (a := attempt_of(owner, key, j.name)) is not None)
    if not mine:
        return StorageCheck("checking", "Checking", "", create=0, job=check_job_name(owner, key, 0))
    attempt, job = mine[-1]
    if job.state == StageState.SUCCEEDED:
        return StorageCheck("passed", "Readable", "", job=job.name)
    if job.state != StageState.FAILED:
        return StorageCheck("checking", "Checking", "", job=job.name)
    result = parse_check_result(messages.get(job.name, ""))
    if result is not None and result.reason is not None:
        reason, message = str(result.reason), result.message or result.uri
    else:
        reason = "StorageCheckFailed"
        message = f"storage check Job {job.name} failed: {messages.get(job.name) or job.message or 'no message'}"
    if attempt + 1 >= MAX_ATTEMPTS:
        return StorageCheck("failed", reason, f"{message} (checked {attempt + 1} times; fix it and edit the spec "
                            "to check again)", job=job.name)
    finished = parse_time(job.completion_time)
    if finished is None:
        return StorageCheck("failed", reason, message, create=attempt + 1, job=job.name)
    retry_at = finished + timedelta(seconds=RETRY_BASE_SECONDS * 2**attempt)
    left = retry_at.timestamp() - now
    # The message names the retry time, not a countdown, so an unchanged state is not written again.
    message = f"{message} (next check at {rfc3339(retry_at)})"
    if left <= 0:
        return StorageCheck("failed", reason, message, create=attempt + 1, job=job.name)
    return StorageCheck("failed", reason, message, requeue=round(left, 3), job=job.name)
