"""training.keepBest and training.earlyStoppingPatience: the train stage keeps the weights of the epoch with the
lowest validation loss, and stops once patience runs out. The real train stage runs on real data (a static
student on BBC titles, seconds); only the validation loss is scripted, so which epoch is best is known."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from kubestill.api.v1alpha1 import DistillationJobSpec
from kubestill_trainer.context import RunContext
from kubestill_trainer.stages import train as train_stage
from kubestill_trainer.stages.checkpoint import load_checkpoint, save_checkpoint
from kubestill_trainer.stages.label import run_label
from kubestill_trainer.stages.report_md import render_report
from kubestill_trainer.stages.schedule import epochs_since_best
from kubestill_trainer.stages.train import run_train

from .conftest import BBC

STEPS_PER_EPOCH = 10  # 200 rows, 80% train, batch 16


@pytest.mark.parametrize(
    ("losses", "want"),
    [([1.0], 0), ([1.0, 0.9], 0), ([1.0, 1.1], 1), ([0.5, 0.7, 0.6], 2), ([1.0, 1.0], 1), ([0.9, 0.8, 0.8, 0.7], 0)],
)
def test_epochs_since_best(losses: list[float], want: int) -> None:
    assert epochs_since_best(losses) == want


def test_epochs_since_best_needs_a_loss() -> None:
    with pytest.raises(ValueError, match="no validation loss"):
        epochs_since_best([])


def _spec(bbc_teacher: Path, work: Path, epochs: int, training: dict[str, Any]) -> DistillationJobSpec:
    return DistillationJobSpec.model_validate({
        "task": "classification",
        "teacher": {"modelUri": f"file://{bbc_teacher}"},
        "student": {"architecture": {"numLayers": 0}},
        "data": {"uri": BBC, "fields": {"text": "title", "label": "label"}, "maxSamples": 200, "seed": 5},
        "loss": {"terms": [{"name": "logit-kl", "temperature": 2.0, "alpha": 0.9}]},
        "training": {"epochs": epochs, "batchSize": 16, "learningRate": 2e-3, "maxSeqLength": 32, "seed": 1,
                     "checkpointEverySteps": 1000, **training},
        "output": {"studentModelName": "best", "artifactUri": f"file://{work}"},
    })


@pytest.fixture(scope="module")
def labelled(bbc_teacher: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One label stage, copied into each test's workdir."""
    work = tmp_path_factory.mktemp("labelled")
    run_label(RunContext.create(_spec(bbc_teacher, work, 1, {}), {"name": "best"}, f"file://{work}"))
    return work / "labels"


def _train(bbc_teacher: Path, labels: Path, work: Path, epochs: int, training: dict[str, Any],
           curve: list[float] | None, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, Any], dict[str, Any]]:
    shutil.copytree(labels, work / "labels")
    ctx = RunContext.create(_spec(bbc_teacher, work, epochs, training), {"name": "best"}, f"file://{work}")
    saved: dict[int, dict[str, torch.Tensor]] = {}  # best-epoch weights as the stage saved them, by step

    def spy(path: Path, state: dict[str, Any]) -> None:
        if path.name == "best":
            saved[int(state["step"])] = {k: v.detach().clone() for k, v in state["model"].items()}
        save_checkpoint(path, state)

    with monkeypatch.context() as patch:
        if curve is not None:
            scripted: Iterator[float] = iter(curve)
            patch.setattr(train_stage, "_validation_loss", lambda *_a, **_k: next(scripted))
        patch.setattr(train_stage, "save_checkpoint", spy)
        summary = run_train(ctx)
    # Resume state is gone once the stage is done.
    assert not (work / "train" / "best").exists() and not (work / "train" / "checkpoint").exists()
    return summary, {**json.loads((work / "train" / "history.json").read_text()), "saved": saved}


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k: v for f in sorted(model_dir.glob("*.safetensors")) for k, v in load_file(f).items()}


def _same(student: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> bool:
    """The saved student is exactly this state dict (model.save writes the state dict's own names)."""
    return student.keys() == state.keys() and all(torch.equal(state[k], v) for k, v in student.items())


def test_early_stopping_stops_and_keeps_the_best_epoch(bbc_teacher: Path, labelled: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    summary, history = _train(bbc_teacher, labelled, tmp_path, 6, {"earlyStoppingPatience": 2},
                              [1.0, 0.8, 0.9, 0.95, 0.1, 0.1], monkeypatch)
    # Epoch 2 is best; epochs 3 and 4 do not improve, so the run stops after 4 of 6 epochs.
    assert summary["stoppedEarly"] is True
    assert summary["steps"] == 4 * STEPS_PER_EPOCH and summary["totalSteps"] == 6 * STEPS_PER_EPOCH
    assert summary["bestStep"] == 2 * STEPS_PER_EPOCH and summary["bestValidationLoss"] == 0.8
    assert history["best"] == {"step": 2 * STEPS_PER_EPOCH, "loss": 0.8}
    assert [v["loss"] for v in history["validation"]] == [1.0, 0.8, 0.9, 0.95]
    assert sorted(history["saved"]) == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]  # each new lowest loss
    assert _same(_weights(tmp_path / "train" / "student"), history["saved"][2 * STEPS_PER_EPOCH])
    history.pop("saved")
    progress = json.loads((tmp_path / "progress.json").read_text())
    assert progress["percent"] == 100.0, progress
    # The evaluate stage's report says which weights were kept, and marks them on the learning curve.
    metrics = {"primaryMetric": "accuracy", "gate": {"passed": True}, "qualityRatio": 1.0, "testRows": 20,
               "teacher": {"accuracy": 0.9}, "student": {"accuracy": 0.9}, "latency": {}}
    report = render_report(metrics, history, tmp_path)
    assert f"Kept the weights of step {2 * STEPS_PER_EPOCH}" in report
    assert (tmp_path / "learning_curve.png").stat().st_size > 1000


def test_keep_best_without_patience_runs_every_epoch(bbc_teacher: Path, labelled: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    kept, kept_history = _train(bbc_teacher, labelled, tmp_path / "kept", 3, {"keepBest": True}, [0.5, 0.4, 0.6],
                                monkeypatch)
    assert kept["stoppedEarly"] is False and kept["steps"] == 3 * STEPS_PER_EPOCH
    assert kept["bestStep"] == 2 * STEPS_PER_EPOCH
    # The same run without keepBest (same seed, same order) ends with the last epoch's weights: different ones.
    last, history = _train(bbc_teacher, labelled, tmp_path / "last", 3, {}, None, monkeypatch)
    assert last["bestStep"] is None and history["best"] is None
    kept_weights = _weights(tmp_path / "kept" / "train" / "student")
    last_weights = _weights(tmp_path / "last" / "train" / "student")
    assert kept_weights.keys() == last_weights.keys()
    assert any(not torch.equal(kept_weights[k], last_weights[k]) for k in kept_weights)
    assert _same(kept_weights, kept_history["saved"][2 * STEPS_PER_EPOCH])


def test_a_resumed_run_forgets_best_weights_from_the_replayed_stretch(tmp_path: Path) -> None:
    best = tmp_path / "best"
    save_checkpoint(best, {"model": {}, "step": 30})
    train_stage._drop_best_after(best, 30)
    assert load_checkpoint(best) is not None
    train_stage._drop_best_after(best, 20)
    assert load_checkpoint(best) is None
