"""The pipeline decision, one worked example per situation (time passed in, no cluster)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from kubestill.api.v1alpha1.distillationjob import DistillationJobSpec, Stage
from kubestill.logic.conditions import find
from kubestill.logic.jobs import JobView
from kubestill.logic.pipeline import Observed, plan

from .conftest import dj_manifest

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
DONE = JobView("x", "Succeeded", 1, "2026-01-01T10:00:00Z", "2026-01-01T11:00:00Z")
RUNNING = JobView("x", "Running", 1, "2026-01-01T11:00:00Z")
FAILED = JobView("x", "Failed", 2, "2026-01-01T11:00:00Z", "2026-01-01T11:05:00Z",
                 "exit code 2: spec.data.uri: no such file")
METRICS = {"primaryMetric": "accuracy", "teacher": {"accuracy": 0.9}, "student": {"accuracy": 0.88},
           "speedup": 4.0, "labels": ["a", "b"]}
PROGRESS = {"percent": 42.0, "step": 42, "totalSteps": 100, "epoch": 0.4, "eta": "2026-01-01T12:10:00Z"}


def _spec(**overrides: Any) -> DistillationJobSpec:
    return DistillationJobSpec.model_validate(dj_manifest(**overrides)["spec"])


def _jobs(*views: JobView) -> dict[str, JobView]:
    return {stage.value: view for stage, view in zip(Stage, views, strict=False)}


@pytest.mark.parametrize(
    ("jobs", "report", "phase", "create", "publish", "ready_reason"),
    [
        ({}, {}, "Labeling", Stage.LABEL, False, "InProgress"),
        (_jobs(RUNNING), {}, "Labeling", None, False, "InProgress"),
        (_jobs(DONE), {}, "Training", Stage.TRAIN, False, "InProgress"),
        (_jobs(DONE, RUNNING), {"progress.json": json.dumps(PROGRESS)}, "Training", None, False, "InProgress"),
        (_jobs(DONE, DONE), {}, "Evaluating", Stage.EVALUATE, False, "InProgress"),
        (_jobs(DONE, DONE, DONE), {"metrics.json": json.dumps(METRICS)}, "Exporting", Stage.EXPORT, False,
         "InProgress"),
        (_jobs(DONE, DONE, DONE), {}, "Failed", None, False, "MetricsMissing"),
        (_jobs(DONE, DONE, DONE), {"metrics.json": json.dumps({**METRICS, "student": {"accuracy": 0.5}})},
         "Failed", None, False, "GateFailed"),
        (_jobs(DONE, DONE, DONE, DONE), {"metrics.json": json.dumps(METRICS)}, "Succeeded", None, True,
         "Succeeded"),
        (_jobs(DONE, FAILED), {}, "Failed", None, False, "StageFailed"),
    ],
)
def test_plan(jobs: dict[str, JobView], report: dict[str, str], phase: str, create: Stage | None,
              publish: bool, ready_reason: str) -> None:
    result = plan("bbc", _spec(), 1, {}, Observed(jobs, report), NOW)
    assert result.status["phase"] == phase
    assert result.create_stage == create
    assert result.publish is publish
    ready = find(result.status["conditions"], "Ready")
    assert ready is not None and ready["reason"] == ready_reason
    assert result.status["observedGeneration"] == 1


def test_stage_names_are_deterministic() -> None:
    result = plan("bbc", _spec(), 1, {}, Observed(_jobs(DONE)), NOW)
    assert result.status["stages"]["train"]["jobName"] == "bbc-train"
    assert result.status["stages"]["label"] == {
        "jobName": "x", "state": "Succeeded", "attempts": 1,
        "startedAt": "2026-01-01T10:00:00Z", "finishedAt": "2026-01-01T11:00:00Z"}


def test_replay_is_stable() -> None:
    """Replaying a reconcile on its own output changes nothing and creates nothing new."""
    observed = Observed(_jobs(DONE, RUNNING), {"progress.json": json.dumps(PROGRESS)})
    first = plan("bbc", _spec(), 1, {}, observed, NOW)
    again = plan("bbc", _spec(), 1, first.status, observed, datetime(2026, 1, 1, 13, tzinfo=UTC))
    assert again.status == first.status
    assert again.create_stage is None
    assert again.events == ()


def test_progress_and_failure_message() -> None:
    running = plan("bbc", _spec(), 1, {}, Observed(_jobs(DONE, RUNNING), {"progress.json": json.dumps(PROGRESS)}),
                   NOW)
    assert running.status["progress"]["percent"] == 42.0
    assert running.status["progress"]["eta"] == "2026-01-01T12:10:00Z"
    assert "42% trained" in running.status["message"]
    failed = plan("bbc", _spec(), 1, {}, Observed(_jobs(DONE, FAILED)), NOW)
    assert "spec.data.uri: no such file" in failed.status["message"]
    assert failed.status["stages"]["train"]["message"] == FAILED.message
    assert [e.reason for e in failed.events] == ["StageSucceeded", "StageFailed", "PhaseFailed"]


def test_metrics_gate_and_roi_after_evaluate() -> None:
    spec = _spec(cost={"gpuHourPrice": 2, "teacherCostPerMillion": 8, "dailyRequests": 1_000_000},
                 resources={"train": {"gpus": 1}})
    result = plan("bbc", spec, 3, {}, Observed(_jobs(DONE, DONE, DONE), {"metrics.json": json.dumps(METRICS)}), NOW)
    status = result.status
    assert status["qualityRatio"] == pytest.approx(0.88 / 0.9, abs=1e-6)
    assert status["speedup"] == 4.0
    assert status["gate"]["passed"] is True
    # train ran 1 h on 1 GPU at 2/h; savings 1M x (8 - 8/4) = 6/day
    assert status["roi"] == {"distillationCost": 2.0, "dailySavings": 6.0, "currency": "USD",
                             "breakEvenDays": 0.333}
    gate = find(status["conditions"], "GatePassed")
    assert gate is not None and gate["status"] == "True"


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
def test_terminal_jobs_are_never_rerun(phase: str) -> None:
    result = plan("bbc", _spec(), 2, {"phase": phase}, Observed(), NOW)
    assert result.create_stage is None and result.status["phase"] == phase


def test_missing_references_block_the_first_job() -> None:
    problem = "PersistentVolumeClaim 'models' (from a pvc:// URI) not found in ml"
    result = plan("bbc", _spec(), 1, {}, Observed(reference_problems=(problem,)), NOW)
    assert result.create_stage is None
    assert result.status["phase"] == "Pending"
    cond = find(result.status["conditions"], "ReferencesResolved")
    assert cond is not None and cond["status"] == "False" and problem in cond["message"]
    assert [e.reason for e in result.events] == ["ReferenceNotFound"]


def test_published_student_is_recorded() -> None:
    result = plan("bbc", _spec(), 1, {}, Observed(_jobs(DONE, DONE, DONE, DONE),
                                                  {"metrics.json": json.dumps(METRICS)}), NOW)
    assert result.status["studentModel"] == {"name": "bbc-student"}
    assert result.status["completedAt"] == "2026-01-01T12:00:00Z"
    assert "StudentModelPublished" in [e.reason for e in result.events]


@pytest.mark.parametrize(
    ("jobs", "expected", "create"),
    [
        ({}, frozenset({"label"}), None),  # created, not yet seen: wait for the watch, never create twice
        (_jobs(DONE), frozenset({"train"}), None),
        (_jobs(DONE), frozenset({"label"}), Stage.TRAIN),  # an expectation of a seen stage changes nothing
        ({}, frozenset(), Stage.LABEL),  # expectation expired and still absent: (re)create it
    ],
)
def test_expected_jobs_are_not_created_again(jobs: dict[str, JobView], expected: frozenset[str],
                                              create: Stage | None) -> None:
    fresh = plan("bbc", _spec(), 1, {}, Observed(jobs), NOW)
    result = plan("bbc", _spec(), 1, fresh.status, Observed(jobs, expected=expected), NOW)
    assert result.create_stage == create
    assert [e.reason for e in result.events] == (["StageStarted"] if create else [])
    # The status is what the first pass wrote: waiting for the watch event changes nothing.
    assert result.status["stages"] == fresh.status["stages"]


def test_expected_job_skips_the_reference_check() -> None:
    result = plan("bbc", _spec(), 1, {}, Observed(reference_problems=("claim 'x' not found",),
                                                  expected=frozenset({"label"})), NOW)
    assert result.status["phase"] == "Labeling" and result.create_stage is None
