"""Quality filter reasons, the deterministic split, input formats and curriculum ordering."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kubestill.api.v1alpha1.distillationjob import DataSpec, StaticInit, StudentSpec
from kubestill_trainer.data import DataError, load_rows, split_rows
from kubestill_trainer.data_checks import relative_confidence, training_data_check
from kubestill_trainer.stages.label import EMPTY, INVALID, LOW_CONFIDENCE, filter_reason
from kubestill_trainer.stages.schedule import epoch_order, lr_factor, plan_steps
from kubestill_trainer.tasks.base import Row


@pytest.mark.parametrize(
    ("row", "confidence", "invalid", "min_conf", "drop_empty", "needs_pair", "want"),
    [
        (Row("1", "text"), 0.9, None, 0.5, True, False, None),
        (Row("1", "  "), 0.9, None, 0.5, True, False, EMPTY),
        (Row("1", "  "), 0.9, None, 0.5, False, False, None),
        (Row("1", "q", pair=""), 0.9, None, 0.0, True, True, EMPTY),
        (Row("1", "text"), 0.9, "not a label", 0.5, True, False, INVALID),
        (Row("1", "text"), 0.4, None, 0.5, True, False, LOW_CONFIDENCE),
        (Row("1", "text"), 0.5, None, 0.5, True, False, None),
        (Row("1", ""), 0.1, "bad", 0.5, True, False, EMPTY),  # first reason wins
    ],
)
def test_filter_reason(row: Row, confidence: float, invalid: str | None, min_conf: float, drop_empty: bool,
                       needs_pair: bool, want: str | None) -> None:
    assert filter_reason(row, confidence, invalid, min_conf, drop_empty, needs_pair) == want


@pytest.mark.parametrize(
    ("p", "classes", "min_relative", "want"),
    [
        # relative = log(C p) / log C: p = 0.2 over 130 classes is 26x chance, 0.669 of the way to certainty
        (0.2, 130, 0.3, None),
        (0.03, 130, 0.3, LOW_CONFIDENCE),  # p >= 130^0.3 / 130 = 0.0331 is needed
        (0.0332, 130, 0.3, None),
        (0.3, 5, 0.3, LOW_CONFIDENCE),  # with 5 classes the same 0.3 needs p >= 0.324
        (0.33, 5, 0.3, None),
        (0.2, 5, 0.0, None),  # at chance: relative 0, kept by a threshold of 0
        (0.55, 2, 0.2, LOW_CONFIDENCE),  # 2 classes: p >= 2^0.2 / 2 = 0.574
        (0.58, 2, 0.2, None),
        (0.01, 130, None, None),  # no relative threshold: not filtered
    ],
)
def test_relative_confidence_filter(p: float, classes: int, min_relative: float | None, want: str | None) -> None:
    relative = float(relative_confidence(np.array([p]), classes)[0])
    assert filter_reason(Row("1", "t"), p, None, 0.0, True, False, relative, min_relative) == want


def test_relative_confidence_is_scale_free() -> None:
    """The same multiple of chance on the same share of log C scores the same, whatever C; bounds are 0 and 1."""
    for classes in (2, 5, 130, 1000):
        got = relative_confidence(np.array([0.0, 1 / classes, classes ** -0.5, 1.0]), classes)
        np.testing.assert_allclose(got, [0.0, 0.0, 0.5, 1.0], atol=1e-12)
    assert relative_confidence(np.array([0.4]), 1)[0] == 1.0  # one class: nothing to be unsure about


def test_split_is_deterministic_sized_and_order_independent() -> None:
    ids = [f"r{i}" for i in range(1000)]
    a = split_rows(ids, 0.8, 0.1, seed=7)
    b = split_rows(list(reversed(ids)), 0.8, 0.1, seed=7)
    assert a == b
    counts = {s: list(a.values()).count(s) for s in ("train", "validation", "test")}
    assert counts == {"train": 800, "validation": 100, "test": 100}
    assert split_rows(ids, 0.8, 0.1, seed=8) != a


@pytest.mark.parametrize("n", [3, 4, 10])
def test_small_splits_are_never_empty(n: int) -> None:
    split = split_rows([str(i) for i in range(n)], 0.8, 0.1, seed=1)
    assert {"train", "test"} <= set(split.values())


def test_jsonl_csv_and_text_dir(tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl").write_text(
        "\n".join(json.dumps({"id": f"a{i}", "q": f"t{i}", "lab": "x", "seg": "s"}) for i in range(3)) + "\n")
    rows = load_rows(tmp_path / "rows.jsonl",
                     DataSpec(uri="file:///x", fields={"text": "q", "label": "lab", "segment": "seg"}))
    assert [r.id for r in rows] == ["a0", "a1", "a2"] and rows[0].label == "x" and rows[0].segment == "s"
    (tmp_path / "rows.csv").write_text("text,label\nhello,a\nworld,b\n")
    rows = load_rows(tmp_path / "rows.csv", DataSpec(uri="file:///x", fields={"label": "label"}))
    assert [(r.id, r.text, r.label) for r in rows] == [("0", "hello", "a"), ("1", "world", "b")]
    docs = tmp_path / "docs"
    (docs / "sport").mkdir(parents=True)
    (docs / "sport" / "1.txt").write_text("Title here\n\nLead paragraph.\n\nMore body.")
    rows = load_rows(docs, DataSpec(uri="file:///x", fields={"text": "title", "pair": "lead", "label": "label"}))
    assert rows == [Row("sport/1.txt", "Title here", "Lead paragraph.", "sport")]


def test_missing_text_field_is_named(tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(DataError, match=r"data\.fields\.text"):
        load_rows(tmp_path / "rows.jsonl", DataSpec(uri="file:///x"))


def test_max_samples_is_a_deterministic_sample(tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps({"text": f"t{i}"}) + "\n" for i in range(100)))
    spec = DataSpec(uri="file:///x", max_samples=10)
    a = load_rows(tmp_path / "rows.jsonl", spec)
    assert len(a) == 10 and a == load_rows(tmp_path / "rows.jsonl", spec)
    assert [r.id for r in a] != [str(i) for i in range(10)]  # not just the first rows


@pytest.mark.parametrize(
    ("examples", "batch", "accum", "epochs", "max_steps", "want"),
    [(100, 10, 1, 3, None, (10, 30)), (101, 10, 1, 1, None, (11, 11)), (100, 10, 2, 2, None, (5, 10)),
     (100, 10, 1, 3, 7, (10, 7)), (5, 32, 1, 2, None, (1, 2))],
)
def test_plan_steps(examples: int, batch: int, accum: int, epochs: int, max_steps: int | None,
                    want: tuple[int, int]) -> None:
    assert plan_steps(examples, batch, accum, epochs, max_steps) == want


@pytest.mark.parametrize(("step", "want"), [(0, 0.1), (9, 1.0), (10, 1.0), (55, 0.5), (100, 0.0)])
def test_lr_warmup_then_linear_decay(step: int, want: float) -> None:
    assert lr_factor(step, 100, 0.1) == pytest.approx(want)


def test_epoch_order_reproducible_and_curriculum_easy_first() -> None:
    assert epoch_order(50, 1, 0, None) == epoch_order(50, 1, 0, None)
    assert epoch_order(50, 1, 0, None) != epoch_order(50, 1, 1, None)
    assert sorted(epoch_order(50, 1, 0, None)) == list(range(50))
    conf = np.array([0.2, 0.9, 0.5, 0.9, 0.1])
    order = epoch_order(5, 1, 0, conf)
    assert [conf[i] for i in order] == [0.9, 0.9, 0.5, 0.2, 0.1]


def test_worked_examples_in_the_docstrings_hold() -> None:
    import doctest

    from kubestill_trainer import data_checks

    for module in (data_checks,):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


@pytest.mark.parametrize(("student", "train_rows", "kind", "recommended", "warns"), [
    # the FAQ bench's 1,149 train rows: 0.93 of the teacher from a Model2Vec start, 0.37 from raw embeddings
    ({"architecture": {"numLayers": 0}}, 1149, "a static student started from a Model2Vec distillation", 1000, False),
    ({"architecture": {"numLayers": 0}}, 120, "a static student started from a Model2Vec distillation", 1000, True),
    ({"architecture": {"numLayers": 0, "init": "teacher-embeddings"}}, 1149,
     "a static student started from the teacher's input embeddings", 10000, True),
    ({"architecture": {"numLayers": 2}}, 999, "a student of 2 layers cut from the teacher", 1000, True),
    ({"architecture": {"numLayers": 2}}, 1000, "a student of 2 layers cut from the teacher", 1000, False),
    ({"baseModelUri": "file:///s"}, 5000, "a base model trained in full", 1000, False),
    ({"baseModelUri": "file:///s", "lora": {"r": 8}}, 300, "LoRA adapters on a base model", 1000, True),
])
def test_training_data_check_per_student_kind(student: dict[str, object], train_rows: int, kind: str,
                                              recommended: int, warns: bool) -> None:
    report = training_data_check(StudentSpec.model_validate(student), train_rows)
    assert (report.student, report.recommended_rows, report.sufficient) == (kind, recommended, not warns)
    assert bool(report.warnings()) == warns
    if warns:  # the line says what to do
        assert "unlabelled text" in report.warnings()[0] and str(recommended) in report.warnings()[0]


def test_training_data_check_advice_for_pairs_and_a_static_student_of_an_hf_classifier() -> None:
    static = StudentSpec.model_validate({"architecture": {"numLayers": 0}})
    paired = training_data_check(static, 10, paired=True).warnings()[0]
    assert "add more pairs" in paired and "unlabelled" not in paired  # a row without its pair is dropped
    raw = training_data_check(static, 5000, static_init=StaticInit.TEACHER_EMBEDDINGS)
    assert raw.recommended_rows == 10000 and raw.student.endswith("the teacher's input embeddings")
    assert training_data_check(static, 1, {"a": 1}).warnings()[0].startswith("1 training row for")


def test_training_data_check_names_the_sparsest_classes_first() -> None:
    rows = {f"c{i}": i for i in range(30)}  # c0 .. c15 under 16 rows
    report = training_data_check(StudentSpec.model_validate({"architecture": {"numLayers": 2}}), 5000, rows)
    assert report.sparse_class_count == 16 and list(report.sparse_classes) == [f"c{i}" for i in range(10)]
    (line,) = report.warnings()
    assert line.startswith("16 of 30 classes have fewer than 16 training rows by the teacher's label (c0 0, c1 1")
    assert ", ...)" in line
