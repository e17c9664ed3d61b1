"""The serving check of a StudentModel: when to run it, and what its Job's answer means for status.served, the
ServedLatency condition and a CanaryRollout waiting on the model. Pure: time is passed in.

One check per (generation, `kubestill.io/recheck` annotation) once the model is Ready: a spec edit, or a new
recheck value, measures again; an unchanged model is never loaded twice. The check Job retries a failed Pod
(its backoffLimit), not a measured breach: a p95 above the gate is an answer, not an error.

ServedLatency:
| check                                      | status  | reason               |
|--------------------------------------------|---------|----------------------|
| spec.servingCheck.enabled false            | (none)  | condition removed    |
| not Ready yet, no Job for this generation  | Unknown | WaitingForReady      |
| Job pending or running                     | Unknown | Measuring            |
| measured, no maxP95Ms                      | True    | Measured             |
| measured, p95 <= maxP95Ms                  | True    | WithinMaxP95         |
| measured, p95 > maxP95Ms                   | False   | AboveMaxP95          |
| Job failed, or no request answered         | False   | ServingCheckFailed   |

>>> from datetime import UTC, datetime
>>> from kubestill.api.v1alpha1.studentmodel import ServingCheckSpec
>>> from kubestill.logic.jobs import JobView
>>> spec, now = ServingCheckSpec(max_p95_ms=20), datetime(2026, 1, 1, tzinfo=UTC)
>>> decide_served(spec, ServedInputs(3, True, None, "", {}), now).create
True
>>> done = JobView("sm-served-k", "Succeeded", 1, "t0", "2026-01-01T00:00:00Z")
>>> msg = '{"ok": true, "p50Ms": 9, "p95Ms": 25.5, "p99Ms": 30, "throughputRps": 800, "concurrency": 8, ' \\
...       '"requests": 8000, "errors": 0, "wallSeconds": 10}'
>>> d = decide_served(spec, ServedInputs(3, True, done, msg, {"latencyP95Ms": 0.7}), now)
>>> (d.condition.status, d.condition.reason, d.served.p95_ms, d.served.in_process.p95_ms)
('False', 'AboveMaxP95', 25.5, 0.7)
>>> d.condition.message
'served p95 25.50 ms > maxP95Ms 20 (p50 9.00 ms, p99 30.00 ms, 800.0 req/s at concurrency 8; in-process p95 0.70 ms)'
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from kubestill.api.served import ServeCheckResult, parse_serve_check_result
from kubestill.api.v1alpha1.distillationjob import StageState
from kubestill.api.v1alpha1.studentmodel import (
    InProcessLatency,
    ServedFigures,
    ServingCheckSpec,
    StudentModelStatus,
)

from .conditions import Cond, find, set_conditions, to_seconds
from .jobs import JobView, parse_time

CONDITION = "ServedLatency"
# The keys of spec.metrics the in-process figures are read from (the DistillationJob copies them from its
# report's latency.student, builders.studentmodel).
IN_PROCESS_KEYS = {"p50_ms": "latencyP50Ms", "p95_ms": "latencyP95Ms", "p99_ms": "latencyP99Ms"}


def check_key(generation: int | None, recheck: str = "") -> str:
    """A short digest of what a check measures: the spec's generation and the owner's recheck annotation.

    >>> check_key(3), check_key(3, "again") != check_key(3)
    ('52eb45f40b', True)
    """
    text = f"g:{generation}" + (f"\nx:{recheck}" if recheck else "")
    return hashlib.sha256(text.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class ServedInputs:
    """What the handler observed: the spec's generation, whether the model is Ready, the Job of the check due
    (its name from check_key; None: not created), its Pod's termination message once finished ("" before), and
    spec.metrics (for the in-process figures)."""

    generation: int | None
    ready: bool
    job: JobView | None
    message: str
    metrics: Mapping[str, float]


@dataclass(frozen=True)
class ServedDecision:
    """`create`: make the check Job for the key now; `served`: status.served (None keeps what is there);
    `condition`: ServedLatency (None: remove it); `events`: (type, reason, message) to post."""

    create: bool = False
    served: ServedFigures | None = None
    condition: Cond | None = None
    events: tuple[tuple[str, str, str], ...] = ()


def in_process(metrics: Mapping[str, float]) -> InProcessLatency | None:
    """The in-process figures among spec.metrics (None when it has none of them).

    >>> in_process({"accuracy": 0.9, "latencyP50Ms": 0.5}).p50_ms
    0.5
    >>> in_process({"accuracy": 0.9}) is None
    True
    """
    found = {field: float(metrics[key]) for field, key in IN_PROCESS_KEYS.items() if key in metrics}
    return InProcessLatency(**found) if found else None


def _figures(result: ServeCheckResult, inputs: ServedInputs, job: JobView, now: datetime) -> ServedFigures:
    return ServedFigures(
        p50_ms=result.p50_ms, p95_ms=result.p95_ms, p99_ms=result.p99_ms, throughput_rps=result.throughput_rps,
        concurrency=result.concurrency, requests=result.requests, errors=result.errors,
        duration_seconds=result.wall_seconds, measured_at=parse_time(job.completion_time) or to_seconds(now),
        observed_generation=inputs.generation, job_name=job.name, in_process=in_process(inputs.metrics))


def _summary(f: ServedFigures) -> str:
    text = (f"p50 {f.p50_ms:.2f} ms, p99 {f.p99_ms:.2f} ms, {f.throughput_rps:.1f} req/s at concurrency "
            f"{f.concurrency}")
    if f.errors:
        text += f", {f.errors} of {f.requests + f.errors} requests failed"
    if f.in_process is not None and f.in_process.p95_ms is not None:
        text += f"; in-process p95 {f.in_process.p95_ms:.2f} ms"
    return text


def _measured(spec: ServingCheckSpec, figures: ServedFigures) -> Cond:
    if spec.max_p95_ms is None:
        return Cond(CONDITION, "True", "Measured", f"served p95 {figures.p95_ms:.2f} ms ({_summary(figures)})")
    ok = figures.p95_ms <= spec.max_p95_ms
    return Cond(CONDITION, "True" if ok else "False", "WithinMaxP95" if ok else "AboveMaxP95",
                f"served p95 {figures.p95_ms:.2f} ms {'<=' if ok else '>'} maxP95Ms {spec.max_p95_ms:g} "
                f"({_summary(figures)})")


def _finished(spec: ServingCheckSpec, inputs: ServedInputs, job: JobView, now: datetime) -> ServedDecision:
    result = parse_serve_check_result(inputs.message)
    if job.state == StageState.SUCCEEDED and result is not None and result.ok:
        figures = _figures(result, inputs, job, now)
        cond = _measured(spec, figures)
        return ServedDecision(served=figures, condition=cond, events=(
            ("Normal" if cond.status == "True" else "Warning", cond.reason, cond.message),))
    why = (result.message if result is not None and result.message else
           inputs.message.strip()[-500:] or job.message or "no message")
    message = f"serving check Job {job.name} could not measure: {why}"
    return ServedDecision(condition=Cond(CONDITION, "False", "ServingCheckFailed", message),
                          events=(("Warning", "ServingCheckFailed", message),))


def decide_served(spec: ServingCheckSpec, inputs: ServedInputs, now: datetime) -> ServedDecision:
    """What the serving check of a StudentModel does next; `now` stands in for a finished Job's completion
    time when it has none."""
    if not spec.enabled:
        return ServedDecision()
    job = inputs.job
    if job is None:
        if not inputs.ready:
            return ServedDecision(condition=Cond(CONDITION, "Unknown", "WaitingForReady",
                                                 "the serving check runs once the model is Ready"))
        return ServedDecision(create=True, condition=Cond(CONDITION, "Unknown", "Measuring",
                                                          "serving check Job created"))
    if job.state not in (StageState.SUCCEEDED, StageState.FAILED):
        return ServedDecision(condition=Cond(CONDITION, "Unknown", "Measuring", f"serving check Job {job.name} "
                                             f"is {str(job.state).lower()}"))
    return _finished(spec, inputs, job, now)


def with_served(old: StudentModelStatus, new: StudentModelStatus, decision: ServedDecision,
                now: datetime) -> tuple[StudentModelStatus, list[tuple[str, str, str]]]:
    """`new` (the serving status just decided from `old`) with the decision's figures and ServedLatency (removed
    when the decision has none, with status.served); its events only when the condition's reason or message
    changed from `old`'s, so a replayed reconcile posts nothing twice."""
    if decision.condition is None:
        kept = [c for c in new.conditions if c.type != CONDITION]
        return new.model_copy(update={"conditions": kept, "served": None}), []
    conditions = set_conditions(new.conditions, [decision.condition], now, new.observed_generation)
    update: dict[str, object] = {"conditions": conditions}
    if decision.served is not None:
        update["served"] = decision.served
    before = find(old.conditions, CONDITION)
    changed = before is None or (before.reason, before.message) != (decision.condition.reason,
                                                                      decision.condition.message)
    return new.model_copy(update=update), list(decision.events) if changed else []


def gate_wait(spec: ServingCheckSpec, status: StudentModelStatus, generation: int | None) -> str | None:
    """Why a CanaryRollout must not start on this StudentModel yet, from its served gate (None: no reason).
    Only a gate (maxP95Ms) holds a rollout back: it waits until ServedLatency is True for the model's current
    `generation` (metadata.generation), so a breach, a failed check or a check still running, or a spec edit the
    operator has not measured yet, all keep it waiting.

    >>> gate_wait(ServingCheckSpec(), StudentModelStatus(), 1) is None
    True
    >>> gate_wait(ServingCheckSpec(max_p95_ms=20), StudentModelStatus(), 1)
    'waiting for the served-latency gate (maxP95Ms 20): not measured yet'
    """
    if not spec.enabled or spec.max_p95_ms is None:
        return None
    cond = find(status.conditions, CONDITION)
    if cond is not None and cond.status == "True" and cond.observed_generation == generation:
        return None
    why = "not measured yet" if cond is None else f"{cond.reason}: {cond.message}"
    return f"waiting for the served-latency gate (maxP95Ms {spec.max_p95_ms:g}): {why}"
