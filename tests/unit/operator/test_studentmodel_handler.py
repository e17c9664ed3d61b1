"""The StudentModel kind on the runtime, with a fake client and kopf's indexes as plain dicts: the first
reconcile applies the Triton objects and reports Pending; a ready Deployment makes it Ready (readyAt once,
an Event per phase change); an unchanged state writes nothing."""

from __future__ import annotations

import asyncio
from typing import Any

from kubestill.clients.kube import Connection
from kubestill.handlers import studentmodel as sm
from kubestill.handlers.operator import build
from kubestill.logic.serving import DeploymentView
from kubestill.settings import Settings

from ..runtime.fake_kube import FakeKube

KEY = ("ml", "bbc-student")
SM_PATH = "/apis/kubestill.io/v1alpha1/namespaces/ml/studentmodels/bbc-student"


def manifest() -> dict[str, Any]:
    return {"apiVersion": "kubestill.io/v1alpha1", "kind": "StudentModel",
            "metadata": {"name": "bbc-student", "namespace": "ml", "uid": "uid-2", "generation": 1},
            "spec": {"artifactUri": "pvc://runs/bbc/export", "task": "classification", "labels": ["a", "b"]}}


def test_a_model_from_applied_to_ready() -> None:
    async def scenario() -> dict[str, Any]:
        api = FakeKube()
        body = api.put(SM_PATH, manifest())
        ops = build(Settings(), Connection(api))  # type: ignore[arg-type]
        ctl = ops.student_models
        indexes: dict[str, Any] = {sm.BODIES: {KEY: [sm.index_sm(body)[KEY]]}, sm.DEPLOYMENTS: {},
                                   sm.CHECK_JOBS: {}}
        await ctl.on_event(None, body, indexes)
        out: dict[str, Any] = {"created": sorted(r[2]["kind"] for r in api.writes("POST") if r[2].get("kind") in (
            "ConfigMap", "Deployment", "Service")), "first": api.objects[SM_PATH]["status"]}

        indexes[sm.DEPLOYMENTS][KEY] = [DeploymentView(1, 1, 1, 1, 1, 1)]
        await ctl.on_child_event("MODIFIED", {"metadata": {"namespace": "ml", "name": "bbc-student-triton",
                                                           "labels": {"kubestill.io/studentmodel": "bbc-student"}}},
                                 indexes)
        out["ready"] = api.objects[SM_PATH]["status"]
        patches = len(api.writes())
        await ctl.on_event("MODIFIED", {**api.objects[SM_PATH], "metadata": {
            **api.objects[SM_PATH]["metadata"], "resourceVersion": "9999"}}, indexes)  # someone else's change
        out["rewrites"] = len(api.writes()) - patches
        await ops.close()
        return out

    out = asyncio.run(scenario())
    assert out["created"] == ["ConfigMap", "Deployment", "Service"]
    assert out["first"]["phase"] == "Pending"
    assert out["first"]["conditions"][0]["reason"] == "DeploymentMissing"
    ready = out["ready"]
    assert (ready["phase"], ready["readyReplicas"], ready["serviceName"]) == ("Ready", 1, "bbc-student-triton")
    assert ready["endpoint"]["http"] == "http://bbc-student-triton.ml.svc:8000"
    assert "readyAt" in ready
    assert out["rewrites"] == 0  # nothing changed: no status write, no re-apply of the children
