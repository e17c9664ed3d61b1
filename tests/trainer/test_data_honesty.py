"""Honest data handling on small real data (BBC News titles, a MiniLM teacher): missing and unknown gold labels,
over-long texts, an unreadable row, a test split with unlabelled rows and a confidence filter, all counted in
labels/report.json and metrics.json; a failed gate exits 3 at the evaluate stage and `all` exports nothing; with
130 classes an absolute confidence threshold is refused for dropping most rows, a relative one keeps them."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kubestill.api.v1alpha1 import DistillationJobSpec
from kubestill.api.v1alpha1.distillationjob import DataSpec
from kubestill_trainer.tasks.base import Row
from kubestill_trainer.tasks.classification import Classification

from .conftest import BBC, MINILM, run_trainer, write_job

pytestmark = pytest.mark.slow

LONG = 20_000  # characters: far beyond maxSeqLength tokens


def _titles() -> list[Row]:
    from kubestill_trainer.data import load_rows
    from kubestill_trainer.storage import resolve_uri

    return load_rows(resolve_uri(BBC), DataSpec(uri=BBC, fields={"text": "title", "label": "label"}))


def _write(path: Path, records: list[dict[str, Any]], bad: bytes | None = None) -> Path:
    lines = [json.dumps(r).encode() for r in records]
    if bad is not None:
        lines.insert(len(lines) // 2, bad)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _spec(teacher: Path, rows: Path, work: Path, **changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "task": "classification",
        "teacher": {"modelUri": f"file://{teacher}"},
        "student": {"architecture": {"numLayers": 1, "fromTeacherLayers": [5]}},
        "data": {"uri": f"file://{rows}", "fields": {"text": "text", "label": "label"}, "seed": 5},
        "loss": {"terms": [{"name": "logit-kl", "temperature": 2.0}]},
        "training": {"epochs": 1, "batchSize": 16, "learningRate": 1e-4, "maxSeqLength": 32},
        "output": {"studentModelName": "s", "artifactUri": f"file://{work}"},
    }
    for key, value in changes.items():
        spec[key] = {**spec.get(key, {}), **value}
    return spec


def test_counts_reach_the_report_and_a_failed_gate_exits_3(bbc_teacher: Path, tmp_path: Path) -> None:
    rows = random.Random(1).sample(_titles(), 160)
    records: list[dict[str, Any]] = []
    for i, r in enumerate(rows):
        record: dict[str, Any] = {"id": f"r{i}", "text": r.text}
        if i % 6:  # every sixth row has no gold label
            record["label"] = r.label
        records.append(record)
    records[1]["label"] = "weather"  # not a class of the teacher
    records[2]["text"] = (records[2]["text"] + " ") * (LONG // len(records[2]["text"]))
    data = _write(tmp_path / "rows.jsonl", records, bad=b'{"id": "bad", "text": "caf\xe9", "label": "sport"}')
    work = tmp_path / "work"
    spec = _spec(bbc_teacher, data, work, data={"onBadRows": "skip", "maxBadRowShare": 0.05},
                 labeling={"temperature": 2.0, "minConfidence": 0.5, "maxDroppedShare": 0.9},
                 evaluation={"minQualityRatio": 0.5, "latencyBudgetMs": 0.01})  # no model answers in 10 µs
    config = write_job(tmp_path / "job.yaml", spec)
    done = run_trainer(["all", "--config", str(config)])
    assert done.returncode == 3, done.stderr[-3000:]
    why = [line for line in done.stderr.splitlines() if line.startswith("kubestill-trainer:")]
    assert len(why) == 1 and why[0].startswith("kubestill-trainer: gate failed at stage evaluate: "), why
    assert "> latencyBudgetMs 0.01" in why[0]
    assert not (work / "export").exists(), "a refused student was exported"

    label_report = json.loads((work / "labels" / "report.json").read_text())
    metrics = json.loads((work / "eval" / "metrics.json").read_text())
    data_report = metrics["data"]
    assert data_report == label_report["data"]
    assert data_report["totalRows"] == 160 and data_report["badRowsSkipped"] == 1
    assert label_report["badRows"][0]["where"].endswith("rows.jsonl:81")
    assert data_report["missingLabels"] == sum(1 for r in records if "label" not in r) == 27
    assert data_report["unknownLabels"] == 1
    truncation = data_report["truncation"]
    assert truncation["maxSeqLength"] == 32 and truncation["truncatedRows"] >= 1 and truncation["maxTokens"] > 1000
    assert data_report["dropped"] == {"low confidence": label_report["dropped"]["low confidence"]}
    training = data_report["training"]  # 160 rows are far too few for a 1-layer student: said, not refused
    assert training["student"] == "a student of 1 layer cut from the teacher", training
    assert training["trainRows"] == label_report["splits"]["train"] and training["recommendedRows"] == 1000
    assert training["classes"] == 5 and training["recommendedClassRows"] == 16
    assert f"label: {training['trainRows']} training rows for a student of 1 layer" in done.stderr

    test, unfiltered = metrics["rowSets"]["test"], metrics["rowSets"]["unfiltered"]
    assert metrics["primaryMetric"] == "accuracy" and test["rows"] == metrics["testRows"]
    assert 0 < test["goldRows"] < test["rows"], test  # some test rows lack a label: accuracy is over the others
    assert metrics["student"]["gold_labels"] == pytest.approx(test["goldRows"] / test["rows"])
    assert label_report["splits"]["test-dropped"] > 0
    assert unfiltered["rows"] == test["rows"] + label_report["splits"]["test-dropped"]
    assert {"accuracy", "agreement"} <= set(unfiltered["student"]) and unfiltered["teacher"]["agreement"] == 1.0

    again = run_trainer(["evaluate", "--config", str(config)])
    assert again.returncode == 3 and "gate failed at stage evaluate" in again.stderr


@pytest.fixture(scope="module")
def many_classes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Row]]:
    """A 130-class teacher (MiniLM, a head fitted on 520 titles, BBC's 5 topics each split 26 ways) and 240
    other titles to label: its top probability is low on most of them, as with any teacher over many classes."""
    from kubestill_trainer.fit_head import fit_teacher
    from kubestill_trainer.storage import resolve_uri

    rows = random.Random(2).sample(_titles(), 760)
    fit, rest = rows[:520], rows[520:]
    out = tmp_path_factory.mktemp("many") / "teacher"
    fit_teacher(resolve_uri(MINILM), [r.text for r in fit], [f"{r.label}-{i % 26}" for i, r in enumerate(fit)],
                out, 64)
    return out, rest


def test_relative_confidence_keeps_many_class_rows_absolute_is_refused(
        many_classes: tuple[Path, list[Row]], tmp_path: Path) -> None:
    teacher, rows = many_classes
    data = _write(tmp_path / "rows.jsonl", [{"id": r.id, "text": r.text} for r in rows])
    absolute = _spec(teacher, data, tmp_path / "abs", labeling={"minConfidence": 0.3})
    refused = run_trainer(["label", "--config", str(write_job(tmp_path / "abs.yaml", absolute))])
    assert refused.returncode == 3, refused.stderr[-3000:]
    assert "above labeling.maxDroppedShare 0.5" in refused.stderr and "minRelativeConfidence" in refused.stderr
    report = json.loads((tmp_path / "abs" / "labels" / "report.json").read_text())
    assert report["droppedShare"] > 0.5 and not (tmp_path / "abs" / "labels" / "rows.jsonl").exists()

    relative = _spec(teacher, data, tmp_path / "rel", labeling={"minRelativeConfidence": 0.3})
    kept = run_trainer(["label", "--config", str(write_job(tmp_path / "rel.yaml", relative))])
    assert kept.returncode == 0, kept.stderr[-3000:]
    report = json.loads((tmp_path / "rel" / "labels" / "report.json").read_text())
    assert report["droppedShare"] < 0.5 and report["kept"] == 240 - report["dropped"]["low confidence"]
    assert report["data"]["droppedShare"] == report["droppedShare"]  # reported either way
    training = report["data"]["training"]  # ~190 train rows over ~130 classes: nearly every class is sparse
    assert training["classes"] > 100 and training["sparseClassCount"] > 100, training  # the teacher's classes
    assert len(training["sparseClasses"]) == 10 and max(training["sparseClasses"].values()) < 16, training
    assert "classes have fewer than 16 training rows by the teacher's label" in kept.stderr


def _classification(**data: Any) -> Classification:
    return Classification(DistillationJobSpec.model_validate({
        "task": "classification", "teacher": {"modelUri": "file:///t"}, "student": {"baseModelUri": "file:///s"},
        "data": {"uri": "file:///d", **data}, "loss": {"terms": [{"name": "logit-kl"}]},
        "output": {"studentModelName": "s", "artifactUri": "file:///w"}}))


def test_accuracy_is_only_ever_against_gold_labels() -> None:
    """Worked example: 4 rows, 2 with a gold label. The teacher says a, a, b, b; the student a, b, b, a."""
    task = _classification(fields={"label": "label"})
    meta = {"labels": ["a", "b"]}
    teacher = {"logits": np.array([[2.0, 0], [2, 0], [0, 2], [0, 2]])}
    student = {"logits": np.array([[2.0, 0], [0, 2], [0, 2], [2, 0]])}
    rows = [Row("1", "x", label="a"), Row("2", "x"), Row("3", "x", label="a"), Row("4", "x")]
    got = task.metrics(student, teacher, rows, meta)
    assert got["accuracy"] == 0.5 and got["agreement"] == 0.5 and got["gold_labels"] == 0.5
    assert task.gold_rows(rows, meta) == 2
    unlabelled = [Row(r.id, r.text) for r in rows]
    got = task.metrics(student, teacher, unlabelled, meta)
    assert "accuracy" not in got and got["agreement"] == 0.5  # never the teacher in the gold label's place
    assert task.primary(meta) == "accuracy" and _classification().primary(meta) == "agreement"
