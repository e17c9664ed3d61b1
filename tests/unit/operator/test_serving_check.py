"""The serving check of a StudentModel: the decision table (logic.served), its Job (builders.served), the
in-process figures the DistillationJob copies into spec.metrics, and the StudentModel handler creating the Job
and reading its answer. The real command against a real tritonserver: tests/e2e/test_serving_check.py."""

from __future__ import annotations

import asyncio
import doctest
import json
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

import pytest

from kubestill.api import names, served
from kubestill.api.served import REQUEST_ENV, ServeCheckRequest, ServeCheckResult
from kubestill.api.v1alpha1.distillationjob import DistillationJobSpec
from kubestill.api.v1alpha1.studentmodel import (
    InProcessLatency,
    ServingCheckSpec,
    StudentModelSpec,
    StudentModelStatus,
)
from kubestill.builders.served import SERVED_LABEL, build_serve_check_job
from kubestill.builders.studentmodel import build_student_model
from kubestill.clients.kube import Connection
from kubestill.handlers import serving_check
from kubestill.handlers import studentmodel as sm
from kubestill.handlers.operator import build
from kubestill.logic import jobs
from kubestill.logic import served as logic
from kubestill.logic.jobs import JobView
from kubestill.logic.served import ServedInputs, check_key, decide_served, gate_wait, with_served
from kubestill.logic.serving import DeploymentView
from kubestill.servecheck import rows, run
from kubestill.settings import Settings

from ..runtime.fake_kube import FakeKube

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
RUNNING = JobView("sm-served-k", "Running", 1, "2026-01-01T11:59:00Z")
DONE = JobView("sm-served-k", "Succeeded", 1, "2026-01-01T11:59:00Z", "2026-01-01T11:59:20Z")
FAILED = JobView("sm-served-k", "Failed", 3, "2026-01-01T11:59:00Z", "2026-01-01T12:00:00Z",
                 "BackoffLimitExceeded: Job has reached the specified backoff limit")
MEASURED = ServeCheckResult(ok=True, p50_ms=4.0, p95_ms=12.5, p99_ms=20.0, throughput_rps=900.0, concurrency=8,
                            requests=9000, errors=0, wall_seconds=10.0).to_text()
SOME_ERRORS = ServeCheckResult(ok=True, message="3 of 9003 requests failed, the first: HTTP 503", p50_ms=4.0,
                               p95_ms=12.5, p99_ms=20.0, throughput_rps=900.0, concurrency=8, requests=9000,
                               errors=3, wall_seconds=10.0).to_text()
NONE_ANSWERED = ServeCheckResult(ok=False, message="all 40 requests failed, the first: InferenceServerException: "
                                 "[400] unknown model", concurrency=8, errors=40).to_text()


@pytest.mark.parametrize("module", [logic, served, names, rows, run, jobs], ids=lambda m: m.__name__)
def test_docstring_examples(module: ModuleType) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def gate(ms: float | None = None, enabled: bool = True) -> ServingCheckSpec:
    return ServingCheckSpec(max_p95_ms=ms, enabled=enabled)


@pytest.mark.parametrize(
    ("spec", "ready", "job", "message", "create", "condition", "p95"),
    [
        (gate(enabled=False), True, None, "", False, None, None),
        (gate(enabled=False), True, DONE, MEASURED, False, None, None),  # turned off after a check: nothing shown
        (gate(), False, None, "", False, ("Unknown", "WaitingForReady"), None),
        (gate(), True, None, "", True, ("Unknown", "Measuring"), None),
        (gate(20), True, RUNNING, "", False, ("Unknown", "Measuring"), None),
        (gate(20), False, RUNNING, "", False, ("Unknown", "Measuring"), None),  # readiness lost mid-check: goes on
        (gate(), True, DONE, MEASURED, False, ("True", "Measured"), 12.5),
        (gate(20), True, DONE, MEASURED, False, ("True", "WithinMaxP95"), 12.5),
        (gate(12.5), True, DONE, MEASURED, False, ("True", "WithinMaxP95"), 12.5),  # equal is within
        (gate(12.4), True, DONE, MEASURED, False, ("False", "AboveMaxP95"), 12.5),
        (gate(20), True, DONE, SOME_ERRORS, False, ("True", "WithinMaxP95"), 12.5),
        (gate(20), True, DONE, NONE_ANSWERED, False, ("False", "ServingCheckFailed"), None),
        (gate(), True, FAILED, NONE_ANSWERED, False, ("False", "ServingCheckFailed"), None),
        (gate(), True, FAILED, "", False, ("False", "ServingCheckFailed"), None),  # no Pod message: the Job's
        (gate(), True, DONE, "Traceback (most recent call last): ...", False, ("False", "ServingCheckFailed"), None),
        (gate(), False, DONE, MEASURED, False, ("True", "Measured"), 12.5),  # finished: reported whatever now
    ],
    ids=["off", "off-after-check", "not-ready", "ready-create", "running", "running-not-ready", "measured",
         "within", "equal-within", "above", "some-errors", "none-answered", "job-failed", "job-failed-no-message",
         "unparsable", "done-not-ready"],
)
def test_decide_served(spec: ServingCheckSpec, ready: bool, job: JobView | None, message: str, create: bool,
                       condition: tuple[str, str] | None, p95: float | None) -> None:
    d = decide_served(spec, ServedInputs(2, ready, job, message, {"latencyP95Ms": 0.7}), NOW)
    assert d.create is create
    assert (None if d.condition is None else (d.condition.status, d.condition.reason)) == condition
    assert (None if d.served is None else d.served.p95_ms) == p95


def test_measured_figures_and_messages() -> None:
    d = decide_served(gate(10), ServedInputs(2, True, DONE, SOME_ERRORS, {"latencyP50Ms": 0.5,
                                                                              "latencyP95Ms": 0.7}), NOW)
    assert d.served is not None and d.condition is not None
    f = d.served
    assert (f.p50_ms, f.p99_ms, f.throughput_rps, f.concurrency, f.requests, f.errors) == (4, 20, 900, 8, 9000, 3)
    assert (f.job_name, f.observed_generation, f.duration_seconds) == ("sm-served-k", 2, 10.0)
    assert f.measured_at == datetime(2026, 1, 1, 11, 59, 20, tzinfo=UTC)
    assert f.in_process is not None and (f.in_process.p50_ms, f.in_process.p95_ms, f.in_process.p99_ms) == (
        0.5, 0.7, None)
    assert d.condition.message == ("served p95 12.50 ms > maxP95Ms 10 (p50 4.00 ms, p99 20.00 ms, 900.0 req/s at "
                                   "concurrency 8, 3 of 9003 requests failed; in-process p95 0.70 ms)")
    assert d.events == (("Warning", "AboveMaxP95", d.condition.message),)
    failed = decide_served(gate(), ServedInputs(2, True, FAILED, "", {}), NOW)
    assert failed.condition is not None and failed.condition.message == (
        "serving check Job sm-served-k could not measure: BackoffLimitExceeded: Job has reached the specified "
        "backoff limit")


def test_with_served_posts_each_event_once_and_off_removes_everything() -> None:
    base = StudentModelStatus(observed_generation=2)
    d = decide_served(gate(20), ServedInputs(2, True, DONE, MEASURED, {}), NOW)
    first, events = with_served(base, base, d, NOW)
    assert [e[1] for e in events] == ["WithinMaxP95"]
    assert first.served is not None and first.served.p95_ms == 12.5
    cond = first.conditions[0]
    assert (cond.type, cond.status, cond.observed_generation) == ("ServedLatency", "True", 2)
    again, events = with_served(first, first, d, NOW)
    assert events == [] and again == first  # replayed reconcile: same status, no Event
    # Measuring again (a new generation) keeps the last figures until the new ones come.
    measuring = decide_served(gate(20), ServedInputs(3, True, None, "", {}), NOW)
    later, events = with_served(first, first, measuring, NOW)
    assert later.served == first.served and later.conditions[0].reason == "Measuring"
    off, events = with_served(first, first, decide_served(gate(enabled=False), ServedInputs(3, True, None, "",
                                                                                               {}), NOW), NOW)
    assert off.served is None and off.conditions == [] and events == []


@pytest.mark.parametrize(
    ("spec", "condition", "generation", "waits"),
    [
        (gate(), None, 1, None),
        (gate(), ("False", "ServingCheckFailed", 1), 1, None),  # measured only: a failed check holds nothing
        (gate(20, enabled=True), ("True", "WithinMaxP95", 1), 1, None),
        (gate(20), ("False", "AboveMaxP95", 1), 1, "AboveMaxP95"),
        (gate(20), ("Unknown", "Measuring", 1), 1, "Measuring"),
        (gate(20), ("False", "ServingCheckFailed", 1), 1, "ServingCheckFailed"),
        (gate(20), ("True", "WithinMaxP95", 1), 2, "WithinMaxP95"),  # passed for an older spec: not yet
        (gate(20), None, 1, "not measured yet"),
    ],
    ids=["no-gate", "no-gate-failed", "within", "above", "measuring", "failed", "older-generation", "none"],
)
def test_gate_wait(spec: ServingCheckSpec, condition: tuple[str, str, int] | None, generation: int,
                   waits: str | None) -> None:
    conds = [] if condition is None else [{"type": "ServedLatency", "status": condition[0], "reason": condition[1],
                                           "observedGeneration": condition[2]}]
    status = StudentModelStatus.model_validate({"conditions": conds})
    got = gate_wait(spec, status, generation)
    assert (got is None) if waits is None else (got is not None and waits in got)


def sm_body(check: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"artifactUri": "pvc://runs/bbc/export", "task": "reranking"}
    if check is not None:
        spec["servingCheck"] = check
    return {"apiVersion": "kubestill.io/v1alpha1", "kind": "StudentModel",
            "metadata": {"name": "bbc-student", "namespace": "ml", "uid": "uid-2", "generation": 4}, "spec": spec}


RESTRICTED_POD = {"runAsNonRoot": True, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}}
RESTRICTED = {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def test_the_check_job() -> None:
    body = sm_body({"concurrency": 4, "duration": "30s", "warmup": "0s", "texts": ["a query", "a passage"]})
    spec = StudentModelSpec.model_validate(body["spec"])
    job = build_serve_check_job(body, spec, "abc", image="kubestill-operator:0.1.0", extra_labels={"team": "x"},
                                pull_secrets=("regcred",), pod_security_context=RESTRICTED_POD,
                                security_context=RESTRICTED)
    meta, pod = job["metadata"], job["spec"]["template"]["spec"]
    assert meta["name"] == "bbc-student-served-abc"
    assert meta["labels"][SERVED_LABEL] == "abc" and meta["labels"]["kubestill.io/studentmodel"] == "bbc-student"
    assert meta["labels"]["team"] == "x" and meta["ownerReferences"][0]["uid"] == "uid-2"
    assert job["spec"]["backoffLimit"] == 2
    assert job["spec"]["activeDeadlineSeconds"] == 30 + 60 + 240  # load + readiness wait + margin
    (container,) = pod["containers"]
    assert container["command"] == ["kubestill", "servecheck"]
    assert container["image"] == "kubestill-operator:0.1.0"
    assert container["securityContext"] == RESTRICTED and pod["securityContext"] == RESTRICTED_POD
    assert pod["automountServiceAccountToken"] is False and pod["restartPolicy"] == "Never"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]  # read-only root: a writable /tmp
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["KUBESTILL_TERMINATION_LOG"] == "/dev/termination-log" and env["HOME"] == "/tmp"
    request = ServeCheckRequest.from_env(env)
    assert request == ServeCheckRequest(url="http://bbc-student-triton.ml.svc:8000", model_name="bbc-student",
                                        task="reranking", concurrency=4, duration_seconds=30.0,
                                        warmup_seconds=0.0, texts=["a query", "a passage"])
    assert json.loads(env[REQUEST_ENV])["modelName"] == "bbc-student"
    plain = build_serve_check_job(body, spec, "abc", image="i")["spec"]["template"]["spec"]
    assert "securityContext" not in plain and "volumes" not in plain  # no contexts asked for: none added


def test_the_student_model_carries_the_in_process_latency(dj: dict[str, Any]) -> None:
    report = {"schemaVersion": 1, "primaryMetric": "accuracy", "teacher": {"accuracy": 0.9},
              "student": {"accuracy": 0.88}, "labels": ["a", "b"],
              "latency": {"student": {"p50": 0.5, "p95": 0.7, "p99": 0.9}}}
    metrics = build_student_model(dj, DistillationJobSpec.model_validate(dj["spec"]), report)["spec"]["metrics"]
    assert (metrics["latencyP50Ms"], metrics["latencyP95Ms"], metrics["latencyP99Ms"]) == (0.5, 0.7, 0.9)
    assert logic.in_process(metrics) == InProcessLatency(p50_ms=0.5, p95_ms=0.7, p99_ms=0.9)


def test_a_distillation_job_sets_the_check_of_the_student_model_it_publishes(dj: dict[str, Any]) -> None:
    dj["spec"]["output"]["servingCheck"] = {"maxP95Ms": 25, "concurrency": 16}
    report = {"schemaVersion": 1, "primaryMetric": "accuracy", "teacher": {"accuracy": 0.9},
              "student": {"accuracy": 0.88}, "labels": ["a", "b"]}
    spec = build_student_model(dj, DistillationJobSpec.model_validate(dj["spec"]), report)["spec"]
    assert spec["servingCheck"] == {"enabled": True, "concurrency": 16, "duration": "10s", "warmup": "2s",
                                    "maxP95Ms": 25.0, "texts": []}
    assert "latencyP50Ms" not in spec["metrics"]  # no latency in the report: none copied


def test_check_key_follows_generation_and_recheck() -> None:
    assert check_key(1) != check_key(2)
    assert check_key(1, "") != check_key(1, "2026-01-01")
    assert check_key(1) == check_key(1)


# --- the handler ------------------------------------------------------------------------------------------------

KEY = ("ml", "bbc-student")
SM_PATH = "/apis/kubestill.io/v1alpha1/namespaces/ml/studentmodels/bbc-student"


def test_a_ready_model_is_checked_and_its_answer_reaches_status() -> None:
    async def scenario() -> dict[str, Any]:
        api = FakeKube()
        body = api.put(SM_PATH, {**sm_body({"maxP95Ms": 10}), "spec": {**sm_body()["spec"], "task": "embedding",
                                                                        "servingCheck": {"maxP95Ms": 10}}})
        ops = build(Settings(judge_image="kubestill-operator:test"), Connection(api))  # type: ignore[arg-type]
        ctl = ops.student_models
        indexes: dict[str, Any] = {sm.BODIES: {KEY: [sm.index_sm(body)[KEY]]},
                                   sm.DEPLOYMENTS: {KEY: [DeploymentView(1, 1, 1, 1, 1, 1)]},
                                   sm.CHECK_JOBS: {}, sm.SERVED_JOBS: {}}
        await ctl.on_event(None, body, indexes)
        created = [r[2] for r in api.writes("POST") if r[2].get("kind") == "Job"]
        out: dict[str, Any] = {"jobs": created, "measuring": api.objects[SM_PATH]["status"]}

        job = created[0]
        finished = {**job, "status": {"succeeded": 1, "startTime": "2026-01-01T11:59:00Z",
                                      "completionTime": "2026-01-01T11:59:20Z",
                                      "conditions": [{"type": "Complete", "status": "True"}]}}
        indexes[sm.SERVED_JOBS][KEY] = [serving_check.index_served_job(finished)[KEY]]
        pod = {"metadata": {"name": "p"}, "status": {"phase": "Succeeded", "containerStatuses": [
            {"name": "servecheck", "state": {"terminated": {"exitCode": 0, "message": MEASURED}}}]}}

        async def pods(api_version: str, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
            return [pod] if kind == "Pod" and selector.endswith(job["metadata"]["name"]) else []

        api.list = pods  # type: ignore[method-assign]
        await ctl.on_child_event("MODIFIED", finished, indexes)
        out["measured"] = api.objects[SM_PATH]["status"]
        out["again"] = [r[2] for r in api.writes("POST") if r[2].get("kind") == "Job"]
        await ops.close()
        return out

    out = asyncio.run(scenario())
    assert len(out["jobs"]) == 1 and out["jobs"][0]["metadata"]["name"].startswith("bbc-student-served-")
    assert out["jobs"][0]["spec"]["template"]["spec"]["containers"][0]["image"] == "kubestill-operator:test"
    conds = {c["type"]: c for c in out["measuring"]["conditions"]}
    assert conds["Ready"]["status"] == "True"
    assert (conds["ServedLatency"]["status"], conds["ServedLatency"]["reason"]) == ("Unknown", "Measuring")
    measured = out["measured"]
    conds = {c["type"]: c for c in measured["conditions"]}
    assert (conds["ServedLatency"]["status"], conds["ServedLatency"]["reason"]) == ("False", "AboveMaxP95")
    assert conds["Ready"]["status"] == "True" and measured["phase"] == "Ready"  # served, only not within the gate
    assert measured["served"]["p95Ms"] == 12.5 and measured["served"]["throughputRps"] == 900.0
    assert measured["served"]["observedGeneration"] == 4
    assert len(out["again"]) == 1  # one Job per generation
