"""The ONNX Runtime serving path answers what the torch path answers: real students (cut from MiniLM, and a
static one), exported by the real export stage, called through `load_servable` on real BBC News text.

Stated tolerance: PROBABILITIES and EMBEDDING within 1e-4 (max abs difference) of torch, the same LABEL; the
export stage itself checks the graph's logits / embeddings within ONNX_TOLERANCE (1e-3).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kubestill.api.v1alpha1 import DistillationJobSpec
from kubestill.api.v1alpha1.distillationjob import DataSpec
from kubestill_trainer.context import RunContext
from kubestill_trainer.data import load_rows
from kubestill_trainer.serving.loader import load_servable
from kubestill_trainer.stages.export import run_export
from kubestill_trainer.storage import resolve_uri
from kubestill_trainer.tasks import task_class

from .conftest import BBC, MINILM

pytestmark = pytest.mark.slow
SERVED_TOLERANCE = 1e-4


def _texts() -> list[str]:
    rows = load_rows(resolve_uri(BBC), DataSpec(uri=BBC, fields={"text": "title", "pair": "lead"}))
    # Titles and leads: short and long rows in one batch, so padding and truncation (maxSeqLength) both occur.
    return [t for r in rows[:24] for t in (r.text, r.pair or "")]


def _export(tmp_path: Path, spec: dict[str, Any], meta: dict[str, Any], teacher: Path) -> Path:
    parsed = DistillationJobSpec.model_validate(spec)
    task = task_class(parsed.task)(parsed)
    ctx = RunContext.create(parsed, {"name": "onnx"}, str(tmp_path / "work"))
    task.build_student(meta, teacher).save(ctx.path("train", "student"))
    run_export(ctx)
    return ctx.path("export", "model")


def _batch(texts: list[str]) -> dict[str, np.ndarray[Any, Any]]:
    return {"TEXT": np.array([[t.encode()] for t in texts], dtype=np.object_)}


def _spec(task: str, teacher: str, arch: dict[str, Any], tmp_path: Path, **serving: Any) -> dict[str, Any]:
    fields = {"text": "title", "label": "label"} if task == "classification" else {"text": "title"}
    loss = "logit-kl" if task == "classification" else "embedding-mse"
    return {"task": task, "teacher": {"modelUri": teacher}, "student": {"architecture": arch},
            "data": {"uri": BBC, "fields": fields}, "loss": {"terms": [{"name": loss}]},
            "training": {"maxSeqLength": 48},
            "output": {"studentModelName": "s", "artifactUri": f"file://{tmp_path / 'work'}", "serving": serving}}


@pytest.mark.parametrize("arch", [{"numLayers": 2, "fromTeacherLayers": [0, 5]}, {"numLayers": 0}])
def test_classifier_onnx_answers_as_torch(bbc_teacher: Path, tmp_path: Path, arch: dict[str, Any]) -> None:
    labels = json.loads((bbc_teacher / "kubestill.json").read_text())["labels"]
    model_dir = _export(tmp_path, _spec("classification", f"file://{bbc_teacher}", arch, tmp_path),
                        {"labels": labels}, bbc_teacher)
    card = json.loads((model_dir / "kubestill.json").read_text())
    assert (model_dir / "model.onnx").exists() and card["onnx"]["opset"] >= 17
    onnx, torch_ = load_servable(model_dir, "auto"), load_servable(model_dir, "torch")
    assert (onnx.runtime, torch_.runtime) == ("onnxruntime", "torch")
    texts = _texts()
    for batch in (texts[:1], texts[:7], texts):
        a, b = onnx.answer(_batch(batch)), torch_.answer(_batch(batch))
        assert a["PROBABILITIES"].shape == b["PROBABILITIES"].shape == (len(batch), len(labels))
        assert float(np.max(np.abs(a["PROBABILITIES"] - b["PROBABILITIES"]))) < SERVED_TOLERANCE
        assert a["LABEL"].tolist() == b["LABEL"].tolist()


def test_embedder_onnx_answers_as_torch(tmp_path: Path) -> None:
    model_dir = _export(tmp_path, _spec("embedding", MINILM, {"numLayers": 0}, tmp_path), {},
                        resolve_uri(MINILM))
    onnx, torch_ = load_servable(model_dir), load_servable(model_dir, "torch")
    assert onnx.runtime == "onnxruntime"
    texts = _texts()
    for batch in (texts[:1], texts):
        a, b = onnx.answer(_batch(batch))["EMBEDDING"], torch_.answer(_batch(batch))["EMBEDDING"]
        assert a.dtype == np.float32 and a.shape == b.shape == (len(batch), 384)
        assert float(np.max(np.abs(a - b))) < SERVED_TOLERANCE


def test_runtime_torch_exports_no_onnx(bbc_teacher: Path, tmp_path: Path) -> None:
    labels = json.loads((bbc_teacher / "kubestill.json").read_text())["labels"]
    spec = _spec("classification", f"file://{bbc_teacher}", {"numLayers": 0}, tmp_path, runtime="torch")
    model_dir = _export(tmp_path, spec, {"labels": labels}, bbc_teacher)
    assert not (model_dir / "model.onnx").exists()
    assert load_servable(model_dir).runtime == "torch"  # auto without model.onnx: the torch fallback
