"""Static-embedding students (student.architecture.numLayers: 0) through all four stages of the real command
line: no transformer layer at all, the teacher's token embeddings pooled, then the head; they train, beat
their untrained selves, and export to ONNX and int8 like any other student."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .conftest import BBC, MINILM, run_trainer, write_job

pytestmark = pytest.mark.slow


def _run(tmp_path: Path, spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    config = write_job(tmp_path / "job.yaml", spec)
    done = run_trainer(["all", "--config", str(config)])
    assert done.returncode == 0, done.stderr[-3000:]
    work = tmp_path / "work"
    config_json = json.loads((work / "export" / "model" / "config.json").read_text())
    assert config_json["num_hidden_layers"] == 0
    return json.loads((work / "eval" / "metrics.json").read_text()), json.loads(
        (work / "export" / "export.json").read_text())


def _output(tmp_path: Path, name: str) -> dict[str, Any]:
    return {"studentModelName": name, "artifactUri": f"file://{tmp_path / 'work'}", "formats": ["safetensors", "onnx"]}


def test_static_classifier(bbc_teacher: Path, tmp_path: Path) -> None:
    metrics, export = _run(tmp_path, {
        "task": "classification",
        "teacher": {"modelUri": f"file://{bbc_teacher}"},
        "student": {"architecture": {"numLayers": 0}, "quantization": {"method": "int8"}},
        "data": {"uri": BBC, "fields": {"text": "title", "label": "label"}, "maxSamples": 400, "seed": 5},
        "loss": {"terms": [{"name": "logit-kl", "temperature": 2.0, "alpha": 0.9}]},
        "training": {"epochs": 4, "batchSize": 16, "learningRate": 2e-3, "maxSeqLength": 32},
        "evaluation": {"minQualityRatio": 0.5},
        "output": _output(tmp_path, "static-classifier"),
    })
    # Its fresh head was fitted by logistic regression on its own pooled states before the first step.
    head_init = json.loads((tmp_path / "work" / "train" / "done.json").read_text())["headInit"]
    assert head_init["method"] == "logistic-regression" and head_init["rows"] > 0, head_init
    # Five balanced classes: chance is 0.2; a trained static student is far above it.
    assert metrics["student"]["agreement"] > 0.5, metrics["student"]
    assert metrics["speedup"] > 1.0, metrics
    assert export["onnx"]["maxAbsDiff"] < 1e-3 and export["int8"]["agreementWithFp32"] >= 0.9


def test_static_embedder(tmp_path: Path) -> None:
    metrics, export = _run(tmp_path, {
        "task": "embedding",
        "teacher": {"modelUri": MINILM},
        "student": {"architecture": {"numLayers": 0}, "quantization": {"method": "int8"}},
        "data": {"uri": BBC, "fields": {"text": "title", "pair": "lead"}, "maxSamples": 300, "seed": 5},
        "loss": {"terms": [{"name": "embedding-mse"}, {"name": "embedding-cosine"}]},
        "training": {"epochs": 3, "batchSize": 16, "learningRate": 2e-3, "maxSeqLength": 64},
        "evaluation": {"minQualityRatio": 0.3},
        "output": _output(tmp_path, "static-embedder"),
    })
    # The untrained static student (the teacher's raw token embeddings, mean-pooled) sits at cosine 0.26 to the
    # teacher (bench/embedding.py --student static); 3 epochs on 240 titles reach about 0.42.
    assert metrics["student"]["cosine"] > 0.35, metrics["student"]
    assert metrics["student"]["recall@10"] > 0.8, metrics["student"]
    assert metrics["speedup"] > 1.0, metrics
    assert export["onnx"]["maxAbsDiff"] < 1e-3 and export["int8"]["cosineToFp32"] > 0.9
