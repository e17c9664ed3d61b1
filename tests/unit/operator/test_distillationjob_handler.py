"""The DistillationJob kind on the runtime, with a fake client and kopf's indexes as plain dicts: the first
reconcile creates the label Job and queues the status; the Job's ADDED event only meets the expectation; the
echo of the status write is skipped; the Job's success creates the next stage."""

from __future__ import annotations

import asyncio
from typing import Any

from kubestill.clients.kube import Connection
from kubestill.handlers import distillationjob as dj
from kubestill.handlers.operator import build
from kubestill.settings import Settings

from ..runtime.fake_kube import FakeKube
from .conftest import dj_manifest

KEY = ("ml", "bbc")
DJ_PATH = "/apis/kubestill.io/v1alpha1/namespaces/ml/distillationjobs/bbc"
JOBS = "/apis/batch/v1/namespaces/ml/jobs"


def job_event(api: FakeKube, name: str, **status: Any) -> dict[str, Any]:
    body = api.objects[f"{JOBS}/{name}"]
    return {**body, "status": status}


def test_a_new_job_through_its_first_stage() -> None:
    async def scenario() -> dict[str, Any]:
        api = FakeKube()
        body = api.put(DJ_PATH, dj_manifest())
        ops = build(Settings(), Connection(api))  # type: ignore[arg-type]
        ctl = ops.distillation_jobs
        indexes: dict[str, Any] = {dj.BODIES: {KEY: [dj.index_dj(body)[KEY]]}, dj.STAGE_JOBS: {}, dj.REPORTS: {}}

        await ctl.on_event(None, body, indexes)  # the initial listing
        await ctl.status.idle()
        out: dict[str, Any] = {"posted": [r[2]["metadata"]["name"] for r in api.writes("POST")
                                          if r[1] == JOBS]}
        out["status"] = api.objects[DJ_PATH]["status"]
        out["expected"] = ctl.expectations.pending(KEY, ())

        # The label Job's ADDED event (still pending): the expectation is met, nothing is reconciled.
        before = len(api.requests)
        indexes[dj.STAGE_JOBS][KEY] = [("label", dj.index_job(job_event(api, "bbc-label"))[KEY][1])]  # type: ignore[index]
        await ctl.on_child_event("ADDED", job_event(api, "bbc-label"), indexes)
        # The echo of our status write: skipped.
        await ctl.on_event("MODIFIED", api.objects[DJ_PATH], indexes)
        out["requests_after_echoes"] = len(api.requests) - before

        # The label Job succeeded: the train Job is created.
        done = job_event(api, "bbc-label", succeeded=1, startTime="2026-01-01T10:00:00Z",
                         completionTime="2026-01-01T11:00:00Z",
                         conditions=[{"type": "Complete", "status": "True"}])
        indexes[dj.STAGE_JOBS][KEY] = [("label", dj.index_job(done)[KEY][1])]  # type: ignore[index]
        await ctl.on_child_event("MODIFIED", done, indexes)
        await ctl.status.idle()
        out["posted_after"] = [r[2]["metadata"]["name"] for r in api.writes("POST") if r[1] == JOBS]
        out["final"] = api.objects[DJ_PATH]["status"]
        await ops.close()
        return out

    out = asyncio.run(scenario())
    assert out["posted"] == ["bbc-label"]
    assert out["status"]["phase"] == "Labeling"
    assert out["status"]["stages"]["label"]["state"] == "Pending"
    assert out["expected"] == frozenset({"label"})
    assert out["requests_after_echoes"] == 0
    assert out["posted_after"] == ["bbc-label", "bbc-train"]
    assert out["final"]["phase"] == "Training"
    assert out["final"]["stages"]["label"]["state"] == "Succeeded"
    assert out["final"]["startedAt"] == out["status"]["startedAt"]


def test_an_invalid_stored_spec_fails_the_job_with_the_reason() -> None:
    async def scenario() -> dict[str, Any]:
        api = FakeKube()
        body = api.put(DJ_PATH, dj_manifest(task="juggling"))
        ops = build(Settings(), Connection(api))  # type: ignore[arg-type]
        ctl = ops.distillation_jobs
        await ctl.on_event(None, body, {dj.BODIES: {KEY: [dj.index_dj(body)[KEY]]}})
        await ctl.status.idle()
        await ops.close()
        return api.objects[DJ_PATH]["status"]

    status = asyncio.run(scenario())
    assert status["phase"] == "Failed" and status["message"].startswith("invalid spec:")
    assert status["conditions"][0]["reason"] == "InvalidSpec"
