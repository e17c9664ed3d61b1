"""The linear probe: logistic regression on frozen features (fit_linear_head), and a static student's fresh
head fitted with it before training (Classification.init_head), with worked examples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from kubestill.api.v1alpha1 import DistillationJobSpec
from kubestill_trainer.tasks.base import Row
from kubestill_trainer.tasks.classification import Classification, EncoderClassifier, load_classifier
from kubestill_trainer.tasks.linear_probe import fit_linear_head, pooled_states

from .conftest import BBC


def test_separable_classes_are_fitted_on_raw_features() -> None:
    # Three clusters far from the origin and on very different scales per dimension: the standardisation is
    # folded back, so the head reads the raw features and classifies every point.
    centres = torch.tensor([[100.0, 0.01], [110.0, 0.03], [120.0, 0.02]])
    gen = torch.Generator().manual_seed(1)
    x = torch.cat([c + torch.randn(20, 2, generator=gen) * torch.tensor([1.0, 0.001]) for c in centres])
    y = torch.arange(3).repeat_interleave(20)
    head = fit_linear_head(x, y, 3)
    assert (head(x).argmax(-1) == y).all()
    assert head.weight.shape == (3, 2) and head.bias.shape == (3,)


def test_deterministic() -> None:
    x = torch.randn(30, 4, generator=torch.Generator().manual_seed(2))
    y = torch.arange(3).repeat(10)
    a, b = fit_linear_head(x, y, 3), fit_linear_head(x, y, 3)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


def test_a_class_without_rows_is_never_predicted_on_them() -> None:
    x = torch.tensor([[0.0], [0.1], [1.0], [1.1]])
    y = torch.tensor([0, 0, 2, 2])  # class 1 has no row
    pred = fit_linear_head(x, y, 3)(x).argmax(-1)
    assert pred.tolist() == [0, 0, 2, 2]


@pytest.mark.parametrize(("features", "labels", "classes", "message"), [
    (torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), 2, "N > 0"),
    (torch.zeros(4), torch.zeros(4, dtype=torch.long), 2, "features \\[N, D\\]"),
    (torch.zeros(4, 3), torch.zeros(3, dtype=torch.long), 2, "labels \\[N\\]"),
    (torch.zeros(2, 3), torch.tensor([0, 2]), 2, "in \\[0, 2\\), got 0..2"),
    (torch.zeros(2, 3), torch.tensor([-1, 0]), 2, "got -1..0"),
])
def test_refuses(features: torch.Tensor, labels: torch.Tensor, classes: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fit_linear_head(features, labels, classes)


def _task(student: dict[str, Any], teacher: Path) -> Classification:
    return Classification(DistillationJobSpec.model_validate({
        "task": "classification", "teacher": {"modelUri": f"file://{teacher}"}, "student": student,
        "data": {"uri": BBC, "fields": {"text": "title", "label": "label"}},
        "loss": {"terms": [{"name": "logit-kl"}]}, "training": {"maxSeqLength": 32},
        "output": {"studentModelName": "s", "artifactUri": "file:///tmp/x"},
    }))


@pytest.fixture(scope="module")
def bbc_rows(bbc_teacher: Path) -> tuple[list[Row], dict[str, np.ndarray], dict[str, Any]]:  # type: ignore[type-arg]
    """120 BBC titles with the teacher's logits as targets, the first 60 without a gold label."""
    from kubestill.api.v1alpha1.distillationjob import DataSpec
    from kubestill_trainer.data import load_rows
    from kubestill_trainer.storage import resolve_uri

    rows = load_rows(resolve_uri(BBC), DataSpec(uri=BBC, fields={"text": "title", "label": "label"}))[:120]
    rows = [Row(r.id, r.text, label=None) if i < 60 else r for i, r in enumerate(rows)]
    teacher = load_classifier(bbc_teacher, 32)
    with torch.no_grad():
        logits = teacher(teacher.encode(rows, 32)).logits
    assert logits is not None
    return rows, {"logits": logits.numpy()}, {"labels": teacher.labels}


def test_static_student_head_fitted_to_its_hard_labels(bbc_teacher: Path, bbc_rows: Any) -> None:
    rows, targets, meta = bbc_rows
    task = _task({"architecture": {"numLayers": 0, "init": "teacher-embeddings"}}, bbc_teacher)
    student = task.build_student(meta, bbc_teacher)
    assert isinstance(student, EncoderClassifier) and student.head_is_fresh
    before = student.head.weight.detach().clone()
    done = task.init_head(student, rows, targets, meta)
    assert done is not None and done["method"] == "logistic-regression" and done["rows"] == 120
    assert not student.head_is_fresh and not torch.equal(before, student.head.weight)
    # The head now predicts the labels the cross-entropy term uses (teacher's top class on the 60 rows without
    # gold, gold on the others) on most training rows; a random head sits near chance (5 classes).
    labels = task.hard_labels(rows, {"logits": torch.from_numpy(targets["logits"])}, meta)
    pred = student.head(pooled_states(student, [r.text for r in rows])).argmax(-1)
    assert float((pred == labels).float().mean()) == pytest.approx(done["trainAccuracy"], abs=1e-4)
    assert done["trainAccuracy"] > 0.8
    assert task.init_head(student, rows, targets, meta) is None  # fitted once: no longer fresh
    assert student.training  # left in training mode, as the train loop expects


def test_students_with_layers_or_a_loaded_head_keep_it(bbc_teacher: Path, bbc_rows: Any) -> None:
    rows, targets, meta = bbc_rows
    cut = _task({"architecture": {"numLayers": 1}}, bbc_teacher)
    student = cut.build_student(meta, bbc_teacher)
    assert cut.init_head(student, rows, targets, meta) is None  # the teacher's head, copied
    assert load_classifier(bbc_teacher).head_is_fresh is False


@pytest.mark.parametrize(("copies", "fitted"), [(1, True), (84, False)])
def test_the_train_stage_fits_the_head_only_below_the_data_need(
        bbc_teacher: Path, bbc_rows: Any, tmp_path: Path, copies: int, fitted: bool) -> None:
    """A static student from the teacher's embeddings needs 10,000 train rows (data_checks.STATIC_RAW): with 120
    the stage fits its head; with 10,080 it leaves the head random for KD to train with the table."""
    from kubestill_trainer.context import RunContext
    from kubestill_trainer.data_checks import STATIC_RAW
    from kubestill_trainer.stages.train_setup import Examples, build_models

    rows, targets, meta = bbc_rows
    many = [Row(f"{r.id}-{i}", r.text, label=r.label) for i in range(copies) for r in rows]
    logits = np.concatenate([targets["logits"]] * copies)
    assert (len(many) < STATIC_RAW) == fitted
    spec = _task({"architecture": {"numLayers": 0, "init": "teacher-embeddings"}}, bbc_teacher).spec
    ctx = RunContext.create(spec, {}, f"file://{tmp_path}")
    examples = Examples(meta, many, many, {"logits": logits}, np.ones(len(many), np.float32), [], {})
    models = build_models(ctx, examples)
    assert (models.head_init is not None) == fitted, models.head_init
    assert isinstance(models.model, EncoderClassifier) and models.model.head_is_fresh is not fitted
