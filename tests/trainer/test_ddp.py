"""Data-parallel training: the pure parts (sharding, when to re-launch, the torchrun command) table-driven,
and the real train stage re-launched under torchrun with 2 CPU processes (gloo), only rank 0 writing."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

import pytest

from kubestill.api.v1alpha1 import DistillationJobSpec
from kubestill_trainer.distributed import DistInfo, requested_processes, shard, should_relaunch, torchrun_command

from .conftest import BBC, MINILM, run_trainer, trainer_env, write_job


@pytest.mark.parametrize(
    ("n", "world", "rank", "expected"),
    [
        (6, 1, 0, [0, 1, 2, 3, 4, 5]),
        (6, 2, 0, [0, 2, 4]),
        (6, 2, 1, [1, 3, 5]),
        (7, 2, 1, [1, 3, 5]),  # equal counts: the odd one out is dropped
        (7, 3, 2, [2, 5]),
    ],
)
def test_shard_is_strided_and_equal_per_rank(n: int, world: int, rank: int, expected: list[int]) -> None:
    assert shard(list(range(n)), DistInfo(rank=rank, world_size=world)) == expected


def _spec(gpus: int) -> DistillationJobSpec:
    return DistillationJobSpec.model_validate({
        "task": "embedding", "teacher": {"modelUri": MINILM}, "student": {"architecture": {"numLayers": 1}},
        "data": {"uri": BBC}, "loss": {"terms": [{"name": "embedding-mse"}]},
        "output": {"studentModelName": "s", "artifactUri": "file:///tmp/x"},
        "resources": {"train": {"gpus": gpus}}})


@pytest.mark.parametrize(
    ("gpus", "env", "processes", "relaunch"),
    [
        (0, {}, 1, False),
        (1, {}, 1, False),
        (4, {}, 4, True),
        (4, {"RANK": "0", "WORLD_SIZE": "4", "LOCAL_RANK": "0"}, 4, False),  # already under torchrun
        (0, {"KUBESTILL_TRAIN_PROCESSES": "2"}, 2, True),
    ],
)
def test_when_the_train_stage_relaunches(gpus: int, env: dict[str, str], processes: int, relaunch: bool) -> None:
    spec = _spec(gpus)
    assert requested_processes(spec, env) == processes
    assert should_relaunch(spec, env) is relaunch


def test_torchrun_command() -> None:
    cmd = torchrun_command(2, ["train", "--config", "c.yaml"])
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--nproc_per_node=2" in cmd and cmd[-4:] == ["kubestill_trainer", "train", "--config", "c.yaml"]


def _job(workdir: Path) -> dict[str, Any]:
    return {
        "task": "embedding", "teacher": {"modelUri": MINILM},
        "student": {"architecture": {"numLayers": 1, "fromTeacherLayers": [0]}},
        "data": {"uri": BBC, "fields": {"text": "title"}, "maxSamples": 64, "seed": 2},
        "loss": {"terms": [{"name": "embedding-cosine"}]},
        "training": {"epochs": 1, "batchSize": 8, "learningRate": 1e-4, "maxSeqLength": 32},
        "output": {"studentModelName": "ddp", "artifactUri": f"file://{workdir}"},
    }


@pytest.mark.slow
def test_train_stage_runs_data_parallel_in_two_cpu_processes(tmp_path: Path) -> None:
    random.seed(0)
    work = tmp_path / "work"
    config = write_job(tmp_path / "job.yaml", _job(work))
    assert run_trainer(["label", "--config", str(config)]).returncode == 0
    env = trainer_env({"KUBESTILL_TRAIN_PROCESSES": "2", "KUBESTILL_DDP_BACKEND": "gloo", "OMP_NUM_THREADS": "1"})
    trained = run_trainer(["train", "--config", str(config)], env=env)
    assert trained.returncode == 0, trained.stderr[-3000:]
    done = json.loads((work / "train" / "done.json").read_text())
    report = json.loads((work / "labels" / "report.json").read_text())
    n_train = report["splits"]["train"]
    # Each of the 2 ranks steps through its half of the train split: half the steps of one process.
    assert done["processes"] == 2 and done["totalSteps"] == -(-(n_train // 2) // 8)
    assert done["steps"] == done["totalSteps"]
    # Both ranks trained and validated the same replica (DDP keeps them in sync) ...
    val = [line for line in trained.stderr.splitlines() if "validation loss" in line]
    assert len(val) == 2 and len({line.rsplit("validation loss", 1)[1] for line in val}) == 1, val
    # ... and only rank 0 wrote the student and the history.
    assert (work / "train" / "student" / "kubestill.json").exists()
    history = json.loads((work / "train" / "history.json").read_text())["train"]
    assert [h["step"] for h in history] == list(range(1, done["totalSteps"] + 1))


@pytest.mark.slow
def test_early_stopping_under_data_parallel_keeps_ranks_together(tmp_path: Path) -> None:
    """Every epoch end asks rank 0 whether to stop (a broadcast): ranks deciding apart would hang the run."""
    work = tmp_path / "work"
    job = _job(work)
    job["training"].update({"epochs": 3, "earlyStoppingPatience": 1})
    config = write_job(tmp_path / "job.yaml", job)
    assert run_trainer(["label", "--config", str(config)]).returncode == 0
    env = trainer_env({"KUBESTILL_TRAIN_PROCESSES": "2", "KUBESTILL_DDP_BACKEND": "gloo", "OMP_NUM_THREADS": "1"})
    trained = run_trainer(["train", "--config", str(config)], env=env, timeout=300)
    assert trained.returncode == 0, trained.stderr[-3000:]
    done = json.loads((work / "train" / "done.json").read_text())
    history = json.loads((work / "train" / "history.json").read_text())
    assert done["processes"] == 2 and done["bestStep"] == history["best"]["step"]
    assert done["steps"] == (done["totalSteps"] if not done["stoppedEarly"] else history["validation"][-1]["step"])
    # Both ranks validated every epoch they ran, with the same losses.
    val = [line.rsplit("validation loss", 1)[1] for line in trained.stderr.splitlines()
           if "train: step" in line and "validation loss" in line]
    assert sorted(val) == sorted([f" {v['loss']:.4f}" for v in history["validation"]] * 2), val
