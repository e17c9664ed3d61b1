"""The DistillationJob pipeline as one pure decision: given the spec, the last status and what exists in
the cluster, what is the new status and what must be done next?

`plan(...)` is a level-triggered reconcile step (like a controller-runtime Reconcile): it never remembers
anything between calls, so replaying it, or restarting the operator, yields the same Job names and at most
one creation per stage. Time is passed in.

Behaviour on spec edits (documented in the CRD description of the kind): changes apply to stages that have
not started yet; a running stage keeps the config it started with; a finished job is never re-run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from kubestill.api.names import job_name
from kubestill.api.v1alpha1.distillationjob import STAGES, DistillationJobSpec, Phase, Progress, Stage

from .conditions import Cond, rfc3339, set_conditions
from .gates import Verdict, evaluate_gates, quality_ratio
from .jobs import JobView, duration_seconds
from .roi import StageUsage, compute_roi
from .storage_check import StorageCheck

PHASE_OF_STAGE: dict[Stage, Phase] = {
    Stage.LABEL: Phase.LABELING,
    Stage.TRAIN: Phase.TRAINING,
    Stage.EVALUATE: Phase.EVALUATING,
    Stage.EXPORT: Phase.EXPORTING,
}
TERMINAL = (Phase.SUCCEEDED.value, Phase.FAILED.value)


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the DistillationJob."""

    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Observed:
    """What the handler found in the cluster for one DistillationJob."""

    jobs: Mapping[str, JobView] = field(default_factory=dict)  # by stage name
    report: Mapping[str, str] = field(default_factory=dict)  # data of the report ConfigMap
    # Problems with references that can be checked before any Job runs (missing claim, Secret ...).
    reference_problems: tuple[str, ...] = ()
    # Stages whose Job this operator created moments ago but whose watch event has not arrived yet (the
    # "expectations" of Kubernetes' own controllers): treated as pending, never created twice.
    expected: frozenset[str] = frozenset()
    # The check of the s3:// URIs with the job's credentials (None: the spec has none).
    storage: StorageCheck | None = None


@dataclass(frozen=True)
class Plan:
    status: dict[str, Any]
    create_stage: Stage | None = None
    publish: bool = False
    events: tuple[Event, ...] = ()


def _json(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def parse_progress(report: Mapping[str, str]) -> dict[str, Any] | None:
    """progress.json from the report channel, validated; None when absent or unreadable."""
    raw = _json(report.get("progress.json"))
    if raw is None:
        return None
    try:
        return Progress.model_validate(raw).to_wire()
    except ValidationError:
        return None


def _stage_entry(view: JobView, old: Mapping[str, Any] | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"jobName": view.name, "state": view.state, "attempts": view.attempts}
    if view.start_time:
        entry["startedAt"] = view.start_time
    if view.completion_time and view.state in ("Succeeded", "Failed"):
        entry["finishedAt"] = view.completion_time
    message = (view.message or (old or {}).get("message", "")) if view.state == "Failed" else ""
    if message:
        entry["message"] = message
    return entry


def _metrics_fields(spec: DistillationJobSpec, metrics: Mapping[str, Any], verdict: Verdict) -> dict[str, Any]:
    out: dict[str, Any] = {
        "teacherMetrics": {k: float(v) for k, v in (metrics.get("teacher") or {}).items() if _is_num(v)},
        "studentMetrics": {k: float(v) for k, v in (metrics.get("student") or {}).items() if _is_num(v)},
        "gate": {"passed": verdict.passed, "reasons": list(verdict.reasons)},
    }
    ratio = quality_ratio(metrics)
    if ratio is not None:
        out["qualityRatio"] = round(ratio, 6)
    if _is_num(metrics.get("speedup")):
        out["speedup"] = round(float(metrics["speedup"]), 4)
    return out


def _is_num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _roi(spec: DistillationJobSpec, jobs: Mapping[str, JobView], speedup: float | None) -> dict[str, Any] | None:
    if spec.cost is None:
        return None
    usage = [
        StageUsage(duration_seconds(view), getattr(spec.resources, stage).gpus)
        for stage, view in jobs.items()
        if view.state == "Succeeded"
    ]
    roi = compute_roi(spec.cost, usage, speedup)
    out: dict[str, Any] = {
        "distillationCost": roi.distillation_cost,
        "dailySavings": roi.daily_savings,
        "currency": roi.currency,
    }
    if roi.break_even_days is not None:
        out["breakEvenDays"] = roi.break_even_days
    return out


def plan(
    name: str,
    spec: DistillationJobSpec,
    generation: int | None,
    status: Mapping[str, Any],
    observed: Observed,
    now: datetime,
) -> Plan:
    """The next status of a DistillationJob and the one action that moves it forward."""
    old_phase = status.get("phase") or Phase.PENDING.value
    old_stages: Mapping[str, Any] = status.get("stages") or {}
    new: dict[str, Any] = {k: v for k, v in status.items() if k not in ("kopf",)}
    new["observedGeneration"] = generation
    events: list[Event] = []
    conds: list[Cond] = []
    create: Stage | None = None
    publish = False

    # A finished job stays finished: its Jobs may be garbage-collected or edited away, its verdict stands.
    if old_phase in TERMINAL:
        return Plan(status=new if new != dict(status) else dict(status))

    if observed.reference_problems and not observed.jobs and not observed.expected:
        message = "; ".join(observed.reference_problems)
        conds.append(Cond("ReferencesResolved", "False", "ReferenceNotFound", message))
        conds.append(Cond("Ready", "False", "ReferenceNotFound", message))
        if status.get("message") != message:
            events.append(Event("Warning", "ReferenceNotFound", message))
        new.update(phase=Phase.PENDING.value, message=message)
        new["conditions"] = set_conditions(status.get("conditions") or [], conds, now, generation)
        return Plan(status=new, events=tuple(events))
    storage = observed.storage
    if storage is not None and storage.state != "passed" and not observed.jobs and not observed.expected:
        failed = storage.state == "failed"
        conds.append(Cond("ReferencesResolved", "False" if failed else "Unknown", storage.reason, storage.message))
        conds.append(Cond("Ready", "False", storage.reason, storage.message))
        if failed and status.get("message") != storage.message:
            events.append(Event("Warning", storage.reason, storage.message))
        new.update(phase=Phase.PENDING.value, message=storage.message)
        new["conditions"] = set_conditions(status.get("conditions") or [], conds, now, generation)
        return Plan(status=new, events=tuple(events))
    conds.append(Cond("ReferencesResolved", "True", "Resolved", "claims and Secrets the spec names exist"))

    stages: dict[str, Any] = {}
    phase = Phase.PENDING
    message = ""
    failure_reason = ""
    metrics = _json(observed.report.get("metrics.json"))
    for stage in STAGES:
        view = observed.jobs.get(stage.value)
        old_entry = old_stages.get(stage.value)
        if view is None:
            stages[stage.value] = {"jobName": job_name(name, stage.value), "state": "Pending", "attempts": 0}
            # Written as the created Job will be observed (Pending), so its first watch event changes nothing.
            phase, message = PHASE_OF_STAGE[stage], f"{stage.value}: Job {job_name(name, stage.value)} pending"
            if stage.value not in observed.expected:
                create = stage
                events.append(Event("Normal", "StageStarted",
                                    f"{stage.value}: created Job {job_name(name, stage.value)}"))
            break
        entry = _stage_entry(view, old_entry)
        stages[stage.value] = entry
        if (old_entry or {}).get("state") != view.state and view.state in ("Succeeded", "Failed"):
            kind = "Normal" if view.state == "Succeeded" else "Warning"
            detail = f": {entry.get('message')}" if entry.get("message") else ""
            events.append(Event(kind, f"Stage{view.state}", f"{stage.value} {view.state.lower()}{detail}"))
        if view.state == "Failed":
            phase, failure_reason = Phase.FAILED, "StageFailed"
            message = f"stage {stage.value} failed (Job {view.name})" + (
                f": {entry['message']}" if entry.get("message") else ""
            )
            break
        if view.state != "Succeeded":
            phase = PHASE_OF_STAGE[stage]
            message = f"{stage.value}: Job {view.name} {view.state.lower()}"
            if stage == Stage.TRAIN:
                progress = parse_progress(observed.report)
                if progress is not None:
                    new["progress"] = progress
                    message += f", {progress.get('percent', 0):.0f}% trained"
            break
        if stage == Stage.TRAIN:
            progress = parse_progress(observed.report) or dict(status.get("progress") or {})
            progress["percent"] = 100.0
            new["progress"] = progress
        if stage == Stage.EVALUATE:
            if metrics is None:
                phase, failure_reason = Phase.FAILED, "MetricsMissing"
                message = "evaluate succeeded but metrics.json never reached the report ConfigMap"
                break
            verdict = evaluate_gates(spec.evaluation, metrics)
            new.update(_metrics_fields(spec, metrics, verdict))
            roi = _roi(spec, observed.jobs, new.get("speedup"))
            if roi is not None:
                new["roi"] = roi
            summary = "; ".join(verdict.reasons)
            if verdict.passed:
                conds.append(Cond("GatePassed", "True", "GatePassed", summary))
            else:
                conds.append(Cond("GatePassed", "False", "GateFailed", summary))
            old_gate = (status.get("gate") or {}).get("passed")
            if old_gate != verdict.passed:
                kind = "Normal" if verdict.passed else "Warning"
                events.append(Event(kind, "GatePassed" if verdict.passed else "GateFailed", summary))
            if not verdict.passed:
                phase, failure_reason = Phase.FAILED, "GateFailed"
                message = f"quality gates failed, student not published: {summary}"
                break
        if stage == Stage.EXPORT:
            phase, publish = Phase.SUCCEEDED, True
            message = f"student published as StudentModel {spec.output.student_model_name}"
            new["studentModel"] = {"name": spec.output.student_model_name}
            if not status.get("studentModel"):
                events.append(Event("Normal", "StudentModelPublished", message))

    new["stages"] = stages
    new["phase"] = phase.value
    new["message"] = message
    if stages and not new.get("startedAt"):
        new["startedAt"] = rfc3339(now)
    if phase == Phase.SUCCEEDED:
        conds += [
            Cond("Ready", "True", "Succeeded", message),
            Cond("Progressing", "False", "Succeeded", "all stages finished"),
        ]
    elif phase == Phase.FAILED:
        conds += [
            Cond("Ready", "False", failure_reason, message),
            Cond("Progressing", "False", failure_reason, message),
        ]
    else:
        conds += [
            Cond("Ready", "False", "InProgress", message),
            Cond("Progressing", "True", "StageRunning", message),
        ]
    if phase.value in TERMINAL and not new.get("completedAt"):
        new["completedAt"] = rfc3339(now)
    # Running phases are announced by StageStarted; only the end of the pipeline gets an Event of its own.
    if phase.value != old_phase and phase.value in TERMINAL:
        kind = "Warning" if phase == Phase.FAILED else "Normal"
        events.append(Event(kind, f"Phase{phase.value}", message))
    new["conditions"] = set_conditions(status.get("conditions") or [], conds, now, generation)
    return Plan(status=new, create_stage=create, publish=publish, events=tuple(events))
