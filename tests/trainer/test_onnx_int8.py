"""int8 where it holds quality: the export stage quantises model.onnx with ONNX Runtime and keeps
model_int8.onnx only when it agrees with the float graph on held-out rows (export_onnx_int8's tolerances:
top class on >= 99% of rows, mean cosine >= 0.99); the serving path then runs it, and the float graph
otherwise. Real students exported by the real export stage, on BBC News titles.
"""

from __future__ import annotations

import doctest
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kubestill.api.v1alpha1 import DistillationJobSpec
from kubestill.api.v1alpha1.distillationjob import DataSpec
from kubestill_trainer.context import RunContext
from kubestill_trainer.data import load_rows
from kubestill_trainer.labelstore import Labels, save_labels
from kubestill_trainer.serving.loader import load_servable
from kubestill_trainer.stages import export_onnx_int8 as int8_module
from kubestill_trainer.stages.export import run_export
from kubestill_trainer.stages.export_onnx_int8 import MIN_AGREEMENT, MIN_COSINE, export_onnx_int8
from kubestill_trainer.storage import resolve_uri
from kubestill_trainer.tasks import onnx_model, task_class
from kubestill_trainer.tasks.base import Row
from kubestill_trainer.tasks.metrics import mean_cosine
from kubestill_trainer.tasks.onnx_model import INT8_ONNX_FILE, ONNX_FILE, OnnxModel

from .conftest import BBC, MINILM


def test_doctests() -> None:
    for module in (int8_module, onnx_model):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def _titles(n: int) -> list[str]:
    rows = load_rows(resolve_uri(BBC), DataSpec(uri=BBC, fields={"text": "title"}))
    return [r.text for r in random.Random(1).sample(rows, n)]


def _export(tmp_path: Path, task: str, teacher: Path, meta: dict[str, Any], held_out: list[str]) -> Path:
    """The export stage on a static student (0 layers) of `teacher`, with `held_out` as the labels' test rows
    (none: no labels directory, as an export run on its own). Its token table is the teacher's input embeddings
    (init teacher-embeddings): these tests are about the int8 check, not about where a student starts."""
    fields = {"text": "title", "label": "label"} if task == "classification" else {"text": "title"}
    spec = DistillationJobSpec.model_validate({
        "task": task, "teacher": {"modelUri": f"file://{teacher}"},
        "student": {"architecture": {"numLayers": 0, "init": "teacher-embeddings"}},
        "data": {"uri": BBC, "fields": fields},
        "loss": {"terms": [{"name": "logit-kl" if task == "classification" else "embedding-mse"}]},
        "training": {"maxSeqLength": 48},
        "output": {"studentModelName": "s", "artifactUri": f"file://{tmp_path / 'work'}"}})
    ctx = RunContext.create(spec, {"name": "int8"}, str(tmp_path / "work"))
    task_class(spec.task)(spec).build_student(meta, teacher).save(ctx.path("train", "student"))
    if held_out:
        rows = [Row(str(i), t) for i, t in enumerate(held_out)]
        save_labels(ctx.path("labels"), Labels(rows, ["test"] * len(rows), {}, meta), {})
    run_export(ctx)
    return ctx.path("export", "model")


@pytest.mark.slow
def test_static_embedder_int8_is_kept_and_served(tmp_path: Path) -> None:
    model_dir = _export(tmp_path, "embedding", resolve_uri(MINILM), {}, _titles(200))
    verdict = json.loads((model_dir / "kubestill.json").read_text())["onnx"]["int8"]
    export = json.loads((model_dir.parent / "export.json").read_text())["onnx"]["int8"]
    assert verdict == export and verdict["kept"] and verdict["rows"] == 200
    assert MIN_COSINE == verdict["minCosine"] <= verdict["cosineToFloat"] < 1.0
    assert (model_dir / INT8_ONNX_FILE).exists()
    served = load_servable(model_dir)
    assert (served.runtime, served.graph) == ("onnxruntime", INT8_ONNX_FILE)
    # The served int8 vectors stay close to the float graph's on other rows too (a fresh sample of titles).
    texts = _titles(300)[200:]
    int8 = served.answer({"TEXT": np.array([[t.encode()] for t in texts], dtype=np.object_)})["EMBEDDING"]
    fp32 = OnnxModel(model_dir, 48, graph=ONNX_FILE).run(texts)["EMBEDDING"]
    assert mean_cosine(int8, fp32) >= 0.98


@pytest.mark.slow
def test_classifier_int8_out_of_tolerance_leaves_the_float_graph(bbc_teacher: Path, tmp_path: Path) -> None:
    # An untrained static student under the teacher's head: many near-tied logits, so int8 changes the top
    # class of about 4% of the titles (measured 0.96 agreement), more than the 1% the tolerance allows.
    labels = json.loads((bbc_teacher / "kubestill.json").read_text())["labels"]
    model_dir = _export(tmp_path, "classification", bbc_teacher, {"labels": labels}, _titles(200))
    verdict = json.loads((model_dir / "kubestill.json").read_text())["onnx"]["int8"]
    assert verdict["kept"] is False and verdict["agreementWithFloat"] < MIN_AGREEMENT == verdict["minAgreement"]
    assert not (model_dir / INT8_ONNX_FILE).exists()
    served = load_servable(model_dir)
    assert (served.runtime, served.graph) == ("onnxruntime", ONNX_FILE)


@pytest.mark.slow
def test_int8_unchecked_or_refused_leaves_the_float_graph(tmp_path: Path) -> None:
    model_dir = _export(tmp_path, "embedding", resolve_uri(MINILM), {}, [])  # no held-out rows to check on
    card = json.loads((model_dir / "kubestill.json").read_text())
    assert card["onnx"]["int8"]["kept"] is False and "no held-out rows" in card["onnx"]["int8"]["reason"]
    assert not (model_dir / INT8_ONNX_FILE).exists()
    texts = _titles(64)
    kept = export_onnx_int8(model_dir, texts, 48)
    assert kept["kept"] and (model_dir / INT8_ONNX_FILE).exists()
    # A tolerance its measured cosine misses: refused, the file deleted, and the float graph is what serves.
    strict = export_onnx_int8(model_dir, texts, 48, min_cosine=(kept["cosineToFloat"] + 1.0) / 2)
    assert strict["kept"] is False and strict["cosineToFloat"] == pytest.approx(kept["cosineToFloat"])
    assert not (model_dir / INT8_ONNX_FILE).exists()
    assert load_servable(model_dir).graph == ONNX_FILE
