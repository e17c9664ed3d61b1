"""The DistillationJob pipeline as one pure decision: given the spec, the last status and what exists in
the cluster, what is the new status and what must be done next?

`decide(...)` is a level-triggered reconcile step (like a controller-runtime Reconcile): it never remembers
anything between calls, so replaying it, or restarting the operator, yields the same Job names and at most
one creation per stage. Time is passed in; the status in and out is the typed DistillationJobStatus.

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
from kubestill.api.report import DataReport, ReportError, TrainingDataReport, load_report
from kubestill.api.v1alpha1._base import ObjectReference
from kubestill.api.v1alpha1.distillationjob import (
    FINISHED_STATES,
    STAGES,
    TERMINAL_PHASES,
    DistillationJobSpec,
    DistillationJobStatus,
    GateVerdict,
    Phase,
    Progress,
    RoiReport,
    Stage,
    StageState,
    StageStatus,
)

from .conditions import Cond, set_conditions, to_seconds
from .gates import Verdict, evaluate_gates, ratio_of
from .jobs import JobView, duration_seconds
from .roi import StageUsage, compute_roi
from .storage_check import StorageCheck

PHASE_OF_STAGE: dict[Stage, Phase] = {
    Stage.LABEL: Phase.LABELING,
    Stage.TRAIN: Phase.TRAINING,
    Stage.EVALUATE: Phase.EVALUATING,
    Stage.EXPORT: Phase.EXPORTING,
}


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the DistillationJob."""

    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Observed:
    """What the handler found for one DistillationJob: its name and generation, and what is in the cluster."""

    name: str
    generation: int | None
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
class Actions:
    """What the handler must do after the status: create one stage Job, publish the StudentModel, post Events."""

    create_stage: Stage | None = None
    publish: bool = False
    events: tuple[Event, ...] = ()


NOTHING = Actions()


def _json(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def parse_progress(report: Mapping[str, str]) -> Progress | None:
    """progress.json from the report channel, validated; None when absent or unreadable."""
    raw = _json(report.get("progress.json"))
    if raw is None:
        return None
    try:
        return Progress.model_validate(raw)
    except ValidationError:
        return None


def invalid_spec(status: DistillationJobStatus, message: str, generation: int | None,
                 now: datetime) -> DistillationJobStatus:
    """The status of a job whose stored spec the models refuse (the API server's schema and CEL rules catch
    nearly everything; this is the rest, made visible): Failed, Ready=False InvalidSpec."""
    return status.model_copy(update={
        "phase": Phase.FAILED, "message": message, "observed_generation": generation,
        "conditions": set_conditions(status.conditions, [Cond("Ready", "False", "InvalidSpec", message)], now,
                                     generation)})


def _stage_entry(view: JobView, old: StageStatus | None) -> StageStatus:
    message = (view.message or (old.message if old else "")) if view.state == StageState.FAILED else ""
    return StageStatus(job_name=view.name, state=view.state, attempts=view.attempts, started_at=view.start_time,
                       finished_at=view.completion_time if view.state in FINISHED_STATES else None,
                       message=message)


def _metrics_fields(metrics: Mapping[str, Any], verdict: Verdict) -> dict[str, Any]:
    """Status fields (by model field name) from metrics.json, read through the EvaluationReport (non-finite
    figures are unmeasured there, so no NaN reaches the status), and the gate verdict. A report that does not
    parse leaves the figures out; the verdict already says why it failed."""
    out: dict[str, Any] = {"gate": GateVerdict(passed=verdict.passed, reasons=list(verdict.reasons))}
    try:
        report = load_report(metrics)
    except ReportError:
        return out
    out["teacher_metrics"] = {k: v for k, v in report.teacher.items() if v is not None}
    out["student_metrics"] = {k: v for k, v in report.student.items() if v is not None}
    ratio = ratio_of(report)
    if ratio is not None:
        out["quality_ratio"] = round(ratio, 6)
    if report.speedup is not None:
        out["speedup"] = round(report.speedup, 4)
    return out


DATA_REPORT_KEY = "data.json"  # the label stage's DataReport in the report ConfigMap (kubestill_trainer.stages.label)


def _data_report(observed: Observed) -> DataReport | None:
    """The label stage's DataReport: its own key in the report ConfigMap, published as soon as the label stage has
    counted (so the conditions below appear before training starts), else metrics.json's copy (a trainer image
    older than the key); None without either, or when neither parses."""
    text = observed.report.get(DATA_REPORT_KEY)
    if text:
        try:
            return DataReport.model_validate_json(text)
        except ValidationError:
            return None
    metrics = _json(observed.report.get("metrics.json"))
    if metrics is None:
        return None
    try:
        return load_report(metrics).data
    except ReportError:
        return None


def _data_condition(data: DataReport) -> Cond:
    """DataComplete: False, with the counts, when rows were skipped as unreadable, lack a gold label or have one
    the teacher lacks, or were cut at maxSeqLength."""
    dropped = ", ".join(f"{k} {v}" for k, v in sorted(data.dropped.items()))
    filtered = f"; the quality filter dropped {sum(data.dropped.values())} ({dropped})" if dropped else ""
    warnings = data.warnings()
    if not warnings:
        return Cond("DataComplete", "True", "AllRowsUsed",
                    f"{data.total_rows} rows read, labelled where needed and within maxSeqLength{filtered}")
    return Cond("DataComplete", "False", "RowsSkippedOrCut", "; ".join(warnings) + filtered)


def _training_data_condition(training: TrainingDataReport) -> Cond:
    """TrainingDataSufficient: False, with what to do, when the train split is smaller than the student kind
    is known to learn from or classes have too few rows. A warning for the user, not a gate: the evaluation's
    gates judge what the student learnt."""
    warnings = training.warnings()
    if warnings:
        reason = "FewTrainingRows" if training.train_rows < training.recommended_rows else "SparseClasses"
        return Cond("TrainingDataSufficient", "False", reason, "; ".join(warnings))
    return Cond("TrainingDataSufficient", "True", "EnoughTrainingRows", training.summary())


def _data_conditions(observed: Observed) -> list[Cond]:
    """DataComplete and TrainingDataSufficient from the label stage's counts; none before it has counted."""
    data = _data_report(observed)
    if data is None:
        return []
    return [_data_condition(data)] + ([_training_data_condition(data.training)] if data.training else [])


def _roi(spec: DistillationJobSpec, jobs: Mapping[str, JobView], speedup: float | None) -> RoiReport | None:
    if spec.cost is None:
        return None
    usage = [
        StageUsage(duration_seconds(view), getattr(spec.resources, stage).gpus)
        for stage, view in jobs.items()
        if view.state == StageState.SUCCEEDED
    ]
    roi = compute_roi(spec.cost, usage, speedup)
    return RoiReport(distillation_cost=roi.distillation_cost, daily_savings=roi.daily_savings,
                     currency=roi.currency, break_even_days=roi.break_even_days)


def _blocked(status: DistillationJobStatus, base: DistillationJobStatus, observed: Observed,
             now: datetime) -> tuple[DistillationJobStatus, Actions] | None:
    """Before any Job exists: a missing reference or an s3:// check that has not passed holds the job
    Pending (with a Warning Event when the reason is new); None when nothing holds it."""
    if observed.jobs or observed.expected:
        return None
    storage = observed.storage
    if observed.reference_problems:
        message = "; ".join(observed.reference_problems)
        reason, resolved, warn = "ReferenceNotFound", "False", True
    elif storage is not None and storage.state != "passed":
        message, reason = storage.message, storage.reason
        warn = storage.state == "failed"
        resolved = "False" if warn else "Unknown"
    else:
        return None
    conds = [Cond("ReferencesResolved", resolved, reason, message), Cond("Ready", "False", reason, message)]
    events = (Event("Warning", reason, message),) if warn and status.message != message else ()
    new = base.model_copy(update={"phase": Phase.PENDING, "message": message, "conditions": set_conditions(
        status.conditions, conds, now, observed.generation)})
    return new, Actions(events=events)


@dataclass
class _Walk:
    """The stages walked so far, in order, and what they add up to (local to one `decide`)."""

    stages: dict[str, StageStatus] = field(default_factory=dict)
    phase: Phase = Phase.PENDING
    message: str = ""
    failure_reason: str = ""
    create: Stage | None = None
    publish: bool = False
    events: list[Event] = field(default_factory=list)
    conds: list[Cond] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)  # other status fields, by model field name

    def fail(self, reason: str, message: str) -> None:
        self.phase, self.failure_reason, self.message = Phase.FAILED, reason, message


def _not_created(walk: _Walk, stage: Stage, observed: Observed) -> None:
    """The first stage without a Job: written as the created Job will be observed (Pending), so its first
    watch event changes nothing; created unless it is expected already."""
    name = job_name(observed.name, stage.value)
    walk.stages[stage.value] = StageStatus(job_name=name, state=StageState.PENDING, attempts=0)
    walk.phase, walk.message = PHASE_OF_STAGE[stage], f"{stage.value}: Job {name} pending"
    if stage.value not in observed.expected:
        walk.create = stage
        walk.events.append(Event("Normal", "StageStarted", f"{stage.value}: created Job {name}"))


def _running(walk: _Walk, stage: Stage, view: JobView, observed: Observed) -> None:
    walk.phase = PHASE_OF_STAGE[stage]
    walk.message = f"{stage.value}: Job {view.name} {view.state.lower()}"
    progress = parse_progress(observed.report) if stage == Stage.TRAIN else None
    if progress is not None:
        walk.fields["progress"] = progress
        walk.message += f", {progress.percent:.0f}% trained"


def _evaluated(walk: _Walk, spec: DistillationJobSpec, status: DistillationJobStatus, observed: Observed) -> bool:
    """The evaluate stage succeeded: metrics, gates and ROI into the status; False when the pipeline stops
    here (metrics missing, or a gate failed)."""
    metrics = _json(observed.report.get("metrics.json"))
    if metrics is None:
        walk.fail("MetricsMissing", "evaluate succeeded but metrics.json never reached the report ConfigMap")
        return False
    verdict = evaluate_gates(spec.evaluation, metrics)
    walk.fields.update(_metrics_fields(metrics, verdict))
    roi = _roi(spec, observed.jobs, walk.fields.get("speedup", status.speedup))
    if roi is not None:
        walk.fields["roi"] = roi
    summary = "; ".join(verdict.reasons)
    reason = "GatePassed" if verdict.passed else "GateFailed"
    walk.conds.append(Cond("GatePassed", "True" if verdict.passed else "False", reason, summary))
    if (status.gate.passed if status.gate else None) != verdict.passed:
        walk.events.append(Event("Normal" if verdict.passed else "Warning", reason, summary))
    if not verdict.passed:
        walk.fail("GateFailed", f"quality gates failed, student not published: {summary}")
    return verdict.passed


def _succeeded(walk: _Walk, stage: Stage, spec: DistillationJobSpec, status: DistillationJobStatus,
               observed: Observed) -> bool:
    """What a succeeded stage adds; False when the pipeline stops at it."""
    if stage == Stage.TRAIN:
        progress = parse_progress(observed.report) or status.progress or Progress()
        walk.fields["progress"] = progress.model_copy(update={"percent": 100.0})
    elif stage == Stage.EVALUATE:
        return _evaluated(walk, spec, status, observed)
    elif stage == Stage.EXPORT:
        walk.phase, walk.publish = Phase.SUCCEEDED, True
        walk.message = f"student published as StudentModel {spec.output.student_model_name}"
        walk.fields["student_model"] = ObjectReference(name=spec.output.student_model_name)
        if status.student_model is None:
            walk.events.append(Event("Normal", "StudentModelPublished", walk.message))
    return True


def _gate_failure(walk: _Walk, stage: Stage, spec: DistillationJobSpec, status: DistillationJobStatus,
                  observed: Observed) -> bool:
    """A failed evaluate Job that left a failing metrics.json: the gate verdict, as for a succeeded one; True
    when that is what failed (False: an ordinary stage failure)."""
    if stage != Stage.EVALUATE or _json(observed.report.get("metrics.json")) is None:
        return False
    return not _evaluated(walk, spec, status, observed)


def _walk(spec: DistillationJobSpec, status: DistillationJobStatus, observed: Observed) -> _Walk:
    """Every stage in order, up to the first that is not finished (or failed)."""
    walk = _Walk()
    for stage in STAGES:
        view = observed.jobs.get(stage.value)
        if view is None:
            _not_created(walk, stage, observed)
            break
        old = status.stages.get(stage.value)
        entry = walk.stages[stage.value] = _stage_entry(view, old)
        detail = f": {entry.message}" if entry.message else ""
        if (old.state if old else None) != view.state and view.state in FINISHED_STATES:
            walk.events.append(Event("Normal" if view.state == StageState.SUCCEEDED else "Warning",
                                     f"Stage{view.state}", f"{stage.value} {view.state.lower()}{detail}"))
        if stage == Stage.LABEL and view.state in FINISHED_STATES:
            walk.conds.extend(_data_conditions(observed))
        if view.state == StageState.FAILED:
            # The trainer's evaluate exits non-zero (GATE_EXIT_CODE) when a gate fails, after publishing
            # metrics.json: judged here as when it exits 0, so the status carries the metrics and GateFailed.
            if not _gate_failure(walk, stage, spec, status, observed):
                walk.fail("StageFailed", f"stage {stage.value} failed (Job {view.name})" + detail)
            break
        if view.state != StageState.SUCCEEDED:
            _running(walk, stage, view, observed)
            break
        if not _succeeded(walk, stage, spec, status, observed):
            break
    return walk


def _phase_conditions(walk: _Walk) -> list[Cond]:
    if walk.phase == Phase.SUCCEEDED:
        return [Cond("Ready", "True", "Succeeded", walk.message),
                Cond("Progressing", "False", "Succeeded", "all stages finished")]
    if walk.phase == Phase.FAILED:
        return [Cond("Ready", "False", walk.failure_reason, walk.message),
                Cond("Progressing", "False", walk.failure_reason, walk.message)]
    return [Cond("Ready", "False", "InProgress", walk.message),
            Cond("Progressing", "True", "StageRunning", walk.message)]


def decide(spec: DistillationJobSpec, status: DistillationJobStatus, observed: Observed,
           now: datetime) -> tuple[DistillationJobStatus, Actions]:
    """The next status of a DistillationJob and the one action that moves it forward.

    A finished job stays finished: its Jobs may be garbage-collected or edited away, its verdict stands.
    """
    base = status.model_copy(update={"observed_generation": observed.generation})
    if status.phase in TERMINAL_PHASES:
        return base, NOTHING
    blocked = _blocked(status, base, observed, now)
    if blocked is not None:
        return blocked
    walk = _walk(spec, status, observed)
    conds = [Cond("ReferencesResolved", "True", "Resolved", "claims and Secrets the spec names exist"),
             *walk.conds, *_phase_conditions(walk)]
    terminal = walk.phase in TERMINAL_PHASES
    update: dict[str, Any] = {**walk.fields, "stages": walk.stages, "phase": walk.phase, "message": walk.message,
                              "conditions": set_conditions(status.conditions, conds, now, observed.generation)}
    if status.started_at is None:
        update["started_at"] = to_seconds(now)
    if terminal and status.completed_at is None:
        update["completed_at"] = to_seconds(now)
    # Running phases are announced by StageStarted; only the end of the pipeline gets an Event of its own.
    if walk.phase != status.phase and terminal:
        walk.events.append(Event("Warning" if walk.phase == Phase.FAILED else "Normal", f"Phase{walk.phase}",
                                 walk.message))
    return base.model_copy(update=update), Actions(walk.create, walk.publish, tuple(walk.events))
