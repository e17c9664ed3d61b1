"""The pipeline decision, one worked example per situation (time passed in, no cluster)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from kubestill.api.v1alpha1.distillationjob import DistillationJobSpec, DistillationJobStatus, Stage
from kubestill.logic.conditions import find
from kubestill.logic.jobs import JobView
from kubestill.logic.pipeline import Actions, Observed, decide

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


def _observed(jobs: dict[str, JobView] | None = None, report: dict[str, str] | None = None,
              generation: int = 1, **more: Any) -> Observed:
    return Observed("bbc", generation, jobs or {}, report or {}, **more)


def plan(spec: DistillationJobSpec, status: DistillationJobStatus | None, observed: Observed,
         now: datetime = NOW) -> tuple[DistillationJobStatus, Actions]:
    return decide(spec, status or DistillationJobStatus(), observed, now)


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
        # evaluate exits GATE_EXIT_CODE on a failed gate, after publishing metrics.json: judged as a gate
        (_jobs(DONE, DONE, FAILED), {"metrics.json": json.dumps({**METRICS, "student": {"accuracy": 0.5}})},
         "Failed", None, False, "GateFailed"),
        (_jobs(DONE, DONE, FAILED), {}, "Failed", None, False, "StageFailed"),
        (_jobs(DONE, DONE, FAILED), {"metrics.json": json.dumps(METRICS)}, "Failed", None, False, "StageFailed"),
    ],
)
def test_plan(jobs: dict[str, JobView], report: dict[str, str], phase: str, create: Stage | None,
              publish: bool, ready_reason: str) -> None:
    status, actions = plan(_spec(), None, _observed(jobs, report))
    assert status.phase == phase
    assert actions.create_stage == create
    assert actions.publish is publish
    ready = find(status.conditions, "Ready")
    assert ready is not None and ready.reason == ready_reason
    assert status.observed_generation == 1


def test_stage_names_are_deterministic() -> None:
    status, _ = plan(_spec(), None, _observed(_jobs(DONE)))
    assert status.stages["train"].job_name == "bbc-train"
    assert status.to_wire()["stages"]["label"] == {
        "jobName": "x", "state": "Succeeded", "attempts": 1,
        "startedAt": "2026-01-01T10:00:00Z", "finishedAt": "2026-01-01T11:00:00Z", "message": ""}


def test_replay_is_stable() -> None:
    """Replaying a reconcile on its own output changes nothing and creates nothing new."""
    observed = _observed(_jobs(DONE, RUNNING), {"progress.json": json.dumps(PROGRESS)})
    first, _ = plan(_spec(), None, observed)
    again, actions = plan(_spec(), first, observed, datetime(2026, 1, 1, 13, tzinfo=UTC))
    assert again == first
    assert actions.create_stage is None
    assert actions.events == ()


def test_replay_after_a_round_trip_through_the_wire_is_stable() -> None:
    """What the API server stores and gives back (JSON) equals the decision, so nothing is written twice."""
    observed = _observed(_jobs(DONE, DONE, DONE), {"metrics.json": json.dumps(METRICS)})
    first, _ = plan(_spec(), None, observed)
    stored = DistillationJobStatus.model_validate(json.loads(json.dumps(first.to_wire())))
    assert stored == first
    waiting = _observed(observed.jobs, observed.report, expected=frozenset({"export"}))  # created, not seen yet
    again, actions = plan(_spec(), stored, waiting, datetime(2026, 1, 1, 13, tzinfo=UTC))
    assert again == stored and actions == Actions()


def test_progress_and_failure_message() -> None:
    running, _ = plan(_spec(), None, _observed(_jobs(DONE, RUNNING), {"progress.json": json.dumps(PROGRESS)}))
    assert running.progress is not None and running.progress.percent == 42.0
    assert running.to_wire()["progress"]["eta"] == "2026-01-01T12:10:00Z"
    assert "42% trained" in running.message
    failed, actions = plan(_spec(), None, _observed(_jobs(DONE, FAILED)))
    assert "spec.data.uri: no such file" in failed.message
    assert failed.stages["train"].message == FAILED.message
    assert [e.reason for e in actions.events] == ["StageSucceeded", "StageFailed", "PhaseFailed"]


def test_metrics_gate_and_roi_after_evaluate() -> None:
    spec = _spec(cost={"gpuHourPrice": 2, "teacherCostPerMillion": 8, "dailyRequests": 1_000_000},
                 resources={"train": {"gpus": 1}})
    status, _ = plan(spec, None, _observed(_jobs(DONE, DONE, DONE), {"metrics.json": json.dumps(METRICS)}, 3))
    assert status.quality_ratio == pytest.approx(0.88 / 0.9, abs=1e-6)
    assert status.speedup == 4.0
    assert status.gate is not None and status.gate.passed is True
    # train ran 1 h on 1 GPU at 2/h; savings 1M x (8 - 8/4) = 6/day
    assert status.to_wire()["roi"] == {"distillationCost": 2.0, "dailySavings": 6.0, "currency": "USD",
                                       "breakEvenDays": 0.333}
    gate = find(status.conditions, "GatePassed")
    assert gate is not None and gate.status == "True"


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
def test_terminal_jobs_are_never_rerun(phase: str) -> None:
    status, actions = plan(_spec(), DistillationJobStatus.model_validate({"phase": phase}), _observed(generation=2))
    assert actions.create_stage is None and status.phase == phase and status.observed_generation == 2


def test_missing_references_block_the_first_job() -> None:
    problem = "PersistentVolumeClaim 'models' (from a pvc:// URI) not found in ml"
    status, actions = plan(_spec(), None, _observed(reference_problems=(problem,)))
    assert actions.create_stage is None
    assert status.phase == "Pending"
    cond = find(status.conditions, "ReferencesResolved")
    assert cond is not None and cond.status == "False" and problem in cond.message
    assert [e.reason for e in actions.events] == ["ReferenceNotFound"]


def test_published_student_is_recorded() -> None:
    status, actions = plan(_spec(), None, _observed(_jobs(DONE, DONE, DONE, DONE),
                                                   {"metrics.json": json.dumps(METRICS)}))
    assert status.to_wire()["studentModel"] == {"name": "bbc-student"}
    assert status.to_wire()["completedAt"] == "2026-01-01T12:00:00Z"
    assert "StudentModelPublished" in [e.reason for e in actions.events]


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
    fresh, _ = plan(_spec(), None, _observed(jobs))
    status, actions = plan(_spec(), fresh, _observed(jobs, expected=expected))
    assert actions.create_stage == create
    assert [e.reason for e in actions.events] == (["StageStarted"] if create else [])
    # The status is what the first pass wrote: waiting for the watch event changes nothing.
    assert status.stages == fresh.stages


def test_expected_job_skips_the_reference_check() -> None:
    status, actions = plan(_spec(), None, _observed(reference_problems=("claim 'x' not found",),
                                                    expected=frozenset({"label"})))
    assert status.phase == "Labeling" and actions.create_stage is None


@pytest.mark.parametrize(
    ("text", "reason_part"),
    [
        (json.dumps({**METRICS, "teacher": [0.9]}), "teacher"),  # a list where a mapping belongs
        (json.dumps({**METRICS, "student": "0.88"}), "student"),
        ('{"primaryMetric": "accuracy", "teacher": {"accuracy": 0.9, "f1": NaN}, '
         '"student": {"accuracy": 0.1, "f1": NaN}, "speedup": Infinity}', "qualityRatio"),
    ],
    ids=["teacher-list", "student-string", "nan-and-infinity"],
)
def test_a_malformed_or_non_finite_report_fails_the_job_and_writes_a_valid_status(text: str,
                                                                                  reason_part: str) -> None:
    """Found by a review: these made decide raise (retried forever) or put NaN into the status (not JSON)."""
    status, actions = plan(_spec(), None, _observed(_jobs(DONE, DONE, DONE), {"metrics.json": text}))
    assert status.phase.value == "Failed" and actions.create_stage is None
    assert status.gate is not None and not status.gate.passed
    assert any(reason_part in r for r in status.gate.reasons), status.gate.reasons
    wire = json.dumps(status.to_wire(), allow_nan=False)  # raises on NaN or Infinity
    assert "NaN" not in wire and "Infinity" not in wire


def test_the_spec_primary_metric_is_the_one_judged() -> None:
    """A report judged on another metric than evaluation.primaryMetric (e.g. a differently configured trainer
    image) fails, naming both."""
    report = {"primaryMetric": "accuracy", "teacher": {"accuracy": 0.9, "macro_f1": 0.8},
              "student": {"accuracy": 0.89, "macro_f1": 0.2}}
    spec = _spec(evaluation={"primaryMetric": "macro_f1", "minQualityRatio": 0.95})
    status, _ = plan(spec, None, _observed(_jobs(DONE, DONE, DONE), {"metrics.json": json.dumps(report)}))
    assert status.phase.value == "Failed" and status.gate is not None
    assert "evaluation.primaryMetric asks for 'macro_f1'" in status.gate.reasons[0]


def test_a_gate_refusal_exit_still_fills_metrics_and_reasons() -> None:
    failing = {**METRICS, "student": {"accuracy": 0.5}}
    status, _ = plan(_spec(), None, _observed(_jobs(DONE, DONE, FAILED), {"metrics.json": json.dumps(failing)}))
    assert status.student_metrics == {"accuracy": 0.5} and status.gate is not None and not status.gate.passed
    assert status.gate.reasons[0].startswith("qualityRatio 0.5556")
    gate = find(status.conditions, "GatePassed")
    assert gate is not None and gate.status == "False" and "minQualityRatio" in status.message


@pytest.mark.parametrize(("data", "status", "words"), [
    ({"totalRows": 50, "dropped": {"low confidence": 5}}, "True",
     "50 rows read, labelled where needed and within maxSeqLength; the quality filter dropped 5 (low confidence 5)"),
    ({"totalRows": 50, "missingLabels": 7, "badRowsSkipped": 1}, "False",
     "1 unreadable rows skipped (data.onBadRows skip); 7 of 50 rows have no gold label"),
    (None, None, ""),  # a report of an older trainer: no condition
])
def test_data_complete_condition(data: dict[str, Any] | None, status: str | None, words: str) -> None:
    metrics = {**METRICS, "data": data} if data else METRICS
    result, _ = plan(_spec(), None, _observed(_jobs(DONE, DONE, DONE), {"metrics.json": json.dumps(metrics)}))
    cond = find(result.conditions, "DataComplete")
    if status is None:
        assert cond is None
    else:
        assert cond is not None and cond.status == status and cond.message.startswith(words)


SMALL_STATIC = {"student": "a static student started from a Model2Vec distillation", "trainRows": 120,
                "recommendedRows": 250, "advice": "add unlabelled text"}


@pytest.mark.parametrize(("training", "status", "reason", "words"), [
    ({**SMALL_STATIC, "trainRows": 400}, "True", "EnoughTrainingRows",
     "400 training rows for a static student started from a Model2Vec distillation (known to learn from 250 or "
     "more)"),
    (SMALL_STATIC, "False", "FewTrainingRows",
     "120 training rows for a static student started from a Model2Vec distillation, fewer than the 250 it is "
     "known to learn from: add unlabelled text"),
    ({**SMALL_STATIC, "trainRows": 2000, "classes": 3, "recommendedClassRows": 16, "sparseClasses": {"c": 2},
      "sparseClassCount": 1}, "False", "SparseClasses",
     "1 of 3 classes has fewer than 16 training rows by the teacher's label (c 2)"),
    (None, None, None, ""),  # a trainer before the check: no condition
])
def test_training_data_sufficient_condition(training: dict[str, Any] | None, status: str | None,
                                            reason: str | None, words: str) -> None:
    data: dict[str, Any] = {"totalRows": 3000, **({"training": training} if training else {})}
    metrics = {**METRICS, "data": data}
    result, _ = plan(_spec(), None, _observed(_jobs(DONE, DONE, DONE), {"metrics.json": json.dumps(metrics)}))
    cond = find(result.conditions, "TrainingDataSufficient")
    if status is None:
        assert cond is None
    else:
        assert cond is not None and (cond.status, cond.reason) == (status, reason)
        assert cond.message.startswith(words), cond.message
    assert result.phase.value != "Failed"  # a warning, never a gate


@pytest.mark.parametrize(("jobs", "report", "expected"), [
    # The label stage's data.json: both conditions as soon as it has finished, training still running.
    ((DONE, RUNNING), {"data.json": json.dumps({"totalRows": 130, "training": SMALL_STATIC})},
     {"DataComplete": "True", "TrainingDataSufficient": "False"}),
    # A label stage that refused the data still says what it counted.
    ((FAILED,), {"data.json": json.dumps({"totalRows": 50, "missingLabels": 7})}, {"DataComplete": "False"}),
    # Nothing before the label stage has finished, even with a report from an earlier attempt.
    ((RUNNING,), {"data.json": json.dumps({"totalRows": 50})}, {}),
    # data.json is the label stage's own word; metrics.json's copy only stands in for an older trainer.
    ((DONE, DONE, DONE), {"data.json": json.dumps({"totalRows": 50, "missingLabels": 7}),
                          "metrics.json": json.dumps({**METRICS, "data": {"totalRows": 50}})},
     {"DataComplete": "False"}),
    # Unparseable: no condition rather than a wrong one.
    ((DONE, RUNNING), {"data.json": "{not json"}, {}),
])
def test_data_conditions_from_the_label_stage(jobs: tuple[JobView, ...], report: dict[str, str],
                                              expected: dict[str, str]) -> None:
    result, _ = plan(_spec(), None, _observed(_jobs(*jobs), report))
    found = {c.type: c.status for c in result.conditions if c.type in ("DataComplete", "TrainingDataSufficient")}
    assert found == expected
