"""Classification end to end on a small real subset (BBC News titles, MiniLM teacher): all four stages
through the real command line, a kill-and-resume of the train stage, the exported student served by the
real tritonserver answering as the trainer's own evaluation did, and that server used as a Triton teacher."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .conftest import BBC, run_trainer, trainer_env, write_job

pytestmark = pytest.mark.slow

ROUNDS = 6  # times each client sends its share of the test rows to the two-instance server


def _spec(teacher: Path, workdir: Path, **training: Any) -> dict[str, Any]:
    return {
        "task": "classification",
        "teacher": {"modelUri": f"file://{teacher}"},
        "student": {"architecture": {"numLayers": 2, "fromTeacherLayers": [0, 5]}, "quantization": {"method": "int8"}},
        "data": {
            "uri": BBC,
            "fields": {"text": "title", "label": "label", "segment": "label"},
            "maxSamples": 240,
            "seed": 3,
        },
        "labeling": {"batchSize": 64, "minConfidence": 0.3},
        "loss": {
            "terms": [{"name": "logit-kl", "temperature": 2.0, "alpha": 0.7}, {"name": "hidden-mse", "weight": 0.5}]
        },
        "training": {"epochs": 2, "batchSize": 16, "learningRate": 1e-4, "maxSeqLength": 48, **training},
        "evaluation": {"minQualityRatio": 0.5, "maxSegmentDrop": 0.5, "latencyBudgetMs": 500},
        "output": {
            "studentModelName": "bbc-student",
            "artifactUri": f"file://{workdir}",
            "formats": ["safetensors", "onnx"],
            "serving": {"maxBatchSize": 16},
        },
    }


def test_all_stages_then_triton_serves_what_evaluate_measured(bbc_teacher: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    config = write_job(tmp_path / "job.yaml", _spec(bbc_teacher, work))
    done = run_trainer(["all", "--config", str(config), "--workdir", f"file://{work}"])
    assert done.returncode == 0, done.stderr[-3000:]

    report = json.loads((work / "labels" / "report.json").read_text())
    assert report["total"] == 240 and report["kept"] + sum(report["dropped"].values()) == 240
    # low-confidence test rows are kept aside (test-dropped) for the unfiltered evaluation, never trained on
    assert sum(report["splits"][s] for s in ("train", "validation", "test")) == report["kept"]
    progress = json.loads((work / "progress.json").read_text())
    assert progress["percent"] == 100.0 and progress["step"] == progress["totalSteps"] > 0
    metrics = json.loads((work / "eval" / "metrics.json").read_text())
    assert metrics["primaryMetric"] == "accuracy" and metrics["labels"] == sorted(metrics["labels"])
    assert metrics["teacher"]["accuracy"] > 0.8, metrics["teacher"]
    assert metrics["student"]["agreement"] > 0.5, metrics["student"]
    assert metrics["speedup"] > 0 and metrics["latency"]["student"]["p95"] > 0  # figures: bench/
    assert len(metrics["gate"]["reasons"]) == 3 and set(metrics["segments"]) == set(metrics["labels"])
    unfiltered = metrics["rowSets"]["unfiltered"]
    assert unfiltered["rows"] == metrics["testRows"] + report["splits"]["test-dropped"]
    assert metrics["data"]["totalRows"] == 240 and metrics["data"]["truncation"]["maxSeqLength"] == 48
    assert (work / "eval" / "report.md").read_text().startswith("# Distillation report")
    assert (work / "eval" / "learning_curve.png").stat().st_size > 1000
    assert "onnx: max abs diff vs torch" in done.stdout + done.stderr
    export = json.loads((work / "export" / "export.json").read_text())
    assert export["onnx"]["maxAbsDiff"] < 1e-3 and export["int8"]["agreementWithFp32"] >= 0.9

    import tritonclient.http as httpclient

    from kubestill.api.triton import render_config_pbtxt, runtime_env
    from kubestill.api.v1alpha1.common import ServingSpec
    from kubestill.dev.served_load import group_processes
    from kubestill.dev.triton import assemble_repository, start_tritonserver
    from kubestill_trainer.labelstore import load_labels
    from kubestill_trainer.serving.loader import load_for_serving
    from kubestill_trainer.tasks.metrics import softmax

    rows, _ = load_labels(work / "labels").subset("test")
    task, model = load_for_serving(work / "export" / "model")
    own = softmax(task.predict(model, rows, 16)["logits"])
    repo = assemble_repository(tmp_path / "repo", "bbc-student", work / "export" / "triton")
    with start_tritonserver(repo, tmp_path / "triton.log") as server:
        client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
        labels, probs = [], []
        for i in range(0, len(rows), 16):  # batches up to max_batch_size
            arr = np.array([[r.text.encode()] for r in rows[i : i + 16]], dtype=np.object_)
            inp = httpclient.InferInput("TEXT", list(arr.shape), "BYTES")
            inp.set_data_from_numpy(arr)
            result = client.infer("bbc-student", [inp])
            labels += [x[0].decode() for x in result.as_numpy("LABEL")]
            probs.append(result.as_numpy("PROBABILITIES"))
        served = np.concatenate(probs)
        np.testing.assert_allclose(served, own, atol=1e-4)
        accuracy = float(np.mean([lab == r.label for lab, r in zip(labels, rows, strict=True)]))
        assert accuracy == pytest.approx(metrics["student"]["accuracy"])

        # The served student as a Triton teacher of another job: same classes, same answers.
        spec = _spec(bbc_teacher, tmp_path / "work2")
        spec["teacher"] = {"triton": {"url": server.http_url, "modelName": "bbc-student"}}
        spec["student"] = {"baseModelUri": f"file://{work / 'export' / 'model'}"}
        spec["loss"] = {"terms": [{"name": "logit-kl"}]}
        labelled = run_trainer(
            ["label", "--config", str(write_job(tmp_path / "job2.yaml", spec)), "--workdir", str(tmp_path / "work2")]
        )
        assert labelled.returncode == 0, labelled.stderr[-3000:]
        meta = json.loads((tmp_path / "work2" / "labels" / "meta.json").read_text())
        assert meta["labels"] == metrics["labels"] and meta["teacher"] == "Triton"

    # As a StudentModel with resources.cpu "2" serves it: the operator's config.pbtxt gives two CPU instances
    # (two python-backend processes) of one ONNX Runtime thread each, without spinning; under concurrent
    # clients both processes work and every answer is the one-instance server's.
    serving = ServingSpec.model_validate({"maxBatchSize": 16, "resources": {"cpu": "2", "memory": "4Gi"}})
    two_instances = render_config_pbtxt("bbc-student", "classification", serving, str(work / "export" / "model"))
    assert "count: 2" in two_instances and "KIND_CPU" in two_instances
    repo2 = assemble_repository(tmp_path / "repo2", "bbc-student", work / "export" / "triton", two_instances)
    # The Triton container's environment too (threads, spinning, the tokenizer's pool), not this process's.
    env = runtime_env(serving, "classification")
    assert env["TOKENIZERS_PARALLELISM"] == "false"
    with start_tritonserver(repo2, tmp_path / "triton2.log", extra_env=env) as server:
        loaded = [line for line in server.log_tail(400).splitlines() if "kubestill: " in line]
        assert len(loaded) == 2 and all("onnxruntime" in line and "intra-op threads 1, spinning off" in line
                                        for line in loaded), loaded
        before = {pid: cpu for pid, (name, cpu) in group_processes(server.popen.pid).items()
                  if name.startswith("triton_python")}  # the python backend's stubs, one per instance
        assert len(before) == 2, group_processes(server.popen.pid)

        def ask(start: int) -> list[np.ndarray]:
            client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
            answers = []
            for _ in range(ROUNDS):
                for i in range(start, len(rows), 4):  # one row a request, as most clients send
                    arr = np.array([[rows[i].text.encode()]], dtype=np.object_)
                    inp = httpclient.InferInput("TEXT", [1, 1], "BYTES")
                    inp.set_data_from_numpy(arr)
                    answers.append(client.infer("bbc-student", [inp]).as_numpy("PROBABILITIES")[0])
            return answers

        with ThreadPoolExecutor(4) as pool:
            by_client = list(pool.map(ask, range(4)))
        for start, answers in enumerate(by_client):
            expected = [served[i] for i in range(start, len(rows), 4)] * ROUNDS
            # Batches of other sizes pad to other lengths: the earlier tolerance, not bit-equality.
            np.testing.assert_allclose(np.stack(answers), np.stack(expected), atol=1e-4)
        after = group_processes(server.popen.pid)
        worked = {pid: after[pid][1] - cpu for pid, cpu in before.items()}
        # Relative, not absolute: /proc counts 10 ms ticks and Triton need not split the batches evenly.
        assert all(seconds >= 0.15 * sum(worked.values()) > 0 for seconds in worked.values()), worked


def test_killed_train_resumes_from_its_last_checkpoint(bbc_teacher: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    spec = _spec(bbc_teacher, work, epochs=3, checkpointEverySteps=3)
    spec["loss"] = {"terms": [{"name": "logit-kl", "temperature": 2.0}]}
    config = write_job(tmp_path / "job.yaml", spec)
    assert run_trainer(["label", "--config", str(config)]).returncode == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubestill_trainer", "train", "--config", str(config)],
        env=trainer_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    state = work / "train" / "checkpoint" / "state.pt"
    deadline = time.monotonic() + 240
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert state.exists(), "no checkpoint was written before the train stage ended"
    assert not (work / "train" / "done.json").exists(), "killed too late: training had finished"
    resumed = run_trainer(["train", "--config", str(config)])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from checkpoint at step" in resumed.stderr
    summary = json.loads((work / "train" / "done.json").read_text())
    assert summary["resumedFrom"] >= 3 and summary["steps"] == summary["totalSteps"]
    history = json.loads((work / "train" / "history.json").read_text())["train"]
    assert [h["step"] for h in history] == list(range(1, summary["totalSteps"] + 1))
