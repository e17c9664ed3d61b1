"""metrics.json through EvaluationReport: version 1 round-trips, version 0 (older trainers) migrates, a newer
or malformed report is a one-line ReportError naming the key."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kubestill.api.report import SCHEMA_VERSION, EvaluationReport, ReportError, load_report

V1: dict[str, Any] = {
    "schemaVersion": 1, "primaryMetric": "accuracy", "testRows": 24, "labels": ["a", "b"],
    "teacher": {"accuracy": 0.9, "macro_f1": 0.88}, "student": {"accuracy": 0.87, "agreement": None},
    "qualityRatio": 0.9667, "speedup": 3.1,
    "segments": {"a": {"support": 13, "teacher": {"accuracy": 0.9}, "student": {"accuracy": 0.85}}},
    "latency": {"device": "cpu", "batchedSpeedup": 2.5,
                "student": {"unit": "ms", "batchSize": 1, "samples": 24, "p50": 3.0, "p95": 4.2, "p99": 6.0,
                            "throughputRowsPerSecond": 800.0, "throughputBatchSize": 32}},
    "models": {"student": {"params": 11_000_000, "sizeMb": 44.1}},
    "gate": {"passed": True, "reasons": ["qualityRatio 0.9667 ..."]},
    "rowSets": {"test": {"rows": 24, "goldRows": 22, "teacher": {"accuracy": 0.9}, "student": {"accuracy": 0.87}},
                "unfiltered": {"rows": 30, "goldRows": 28, "teacher": {"accuracy": 0.8},
                               "student": {"agreement": 0.7}}},
    "data": {"totalRows": 240, "badRowsSkipped": 1, "dropped": {"low confidence": 6}, "droppedShare": 0.025,
             "missingLabels": 2, "unknownLabels": 1,
             "truncation": {"maxSeqLength": 128, "rows": 240, "truncatedRows": 3, "truncatedShare": 0.0125,
                            "maxTokens": 900, "p95Tokens": 60}},
}

# What the trainer wrote before the model existed (the last version-0 writer, verbatim in shape).
V0: dict[str, Any] = {
    "primaryMetric": "accuracy", "teacher": {"accuracy": 0.9}, "student": {"accuracy": 0.87},
    "qualityRatio": 0.9667, "speedup": 3.1, "gate": {"passed": True, "reasons": ["quality ratio 0.9667"]},
    "segments": {"a": {"teacher": {"accuracy": 0.9}, "student": {"accuracy": 0.85}, "count": {"rows": 13.0}}},
    "latency": {"student": {"batch1_p50_ms": 3.0, "batch1_p95_ms": 4.2, "batch1_p99_ms": 6.0,
                            "throughput_rows_per_s": 800.0, "throughput_batch_size": 32.0},
                "device": "cpu", "batchedSpeedup": 2.5},
    "models": {"student": {"params": 11_000_000, "sizeMb": 44.1}}, "testRows": 24, "labels": ["a", "b"],
}


def test_v1_round_trips() -> None:
    report = load_report(json.dumps(V1))
    assert report.schema_version == SCHEMA_VERSION
    assert report.latency.student is not None and report.latency.student.p95 == 4.2
    assert report.segments["a"].support == 13
    assert report.row_sets["unfiltered"].gold_rows == 28 and report.data is not None
    assert report.data.truncation is not None and report.data.truncation.truncated_rows == 3
    expected = json.loads(json.dumps(V1))
    expected["student"] = {"accuracy": 0.87}  # a null figure is left out on the way back
    assert {**report.to_wire(), "student": {"accuracy": 0.87}} == expected


def test_v0_migrates() -> None:
    report = load_report(V0)
    student = report.latency.student
    assert student is not None
    assert (student.unit, student.batch_size, student.p50, student.p95, student.p99) == ("ms", 1, 3.0, 4.2, 6.0)
    assert (student.throughput_rows_per_second, student.throughput_batch_size, student.samples) == (800.0, 32, None)
    assert report.latency.batched_speedup == 2.5 and report.latency.device == "cpu"
    assert report.segments["a"].support == 13
    assert report.gate is not None and report.gate.passed


def test_v0_minimal_and_empty_latency_load() -> None:
    report = load_report({"primaryMetric": "accuracy", "teacher": {"accuracy": 0.9}, "student": {},
                          "gate": {"passed": True}, "latency": {"student": {}}})
    assert report.latency.student is None and report.segments == {}


def test_unknown_keys_are_ignored() -> None:
    """A newer trainer of the same schema version may add a figure; an older operator still reads the report."""
    report = load_report({**V1, "energyJoules": 12.0, "latency": {**V1["latency"], "gpuUtil": 0.5}})
    assert report.latency.student is not None


def test_non_finite_figures_become_null() -> None:
    report = EvaluationReport(primary_metric="accuracy", teacher={"accuracy": float("nan")},
                              student={"accuracy": 0.5}, quality_ratio=float("inf"))
    assert report.teacher["accuracy"] is None and report.quality_ratio is None
    assert json.loads(report.to_json()) == {"schemaVersion": 1, "primaryMetric": "accuracy",
                                            "teacher": {"accuracy": None}, "student": {"accuracy": 0.5},
                                            "labels": [], "segments": {}, "latency": {}, "models": {},
                                            "rowSets": {}}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({**V1, "schemaVersion": 2}, "metrics.json: (top level): schemaVersion 2 is newer than this kubestill "
         "reads (1): upgrade the operator"),
        ({k: v for k, v in V1.items() if k != "student"}, "metrics.json: student: Field required"),
        ({**V1, "teacher": {"accuracy": "high"}}, "metrics.json: teacher.accuracy: Input should be a valid number"),
        ({**V1, "segments": {"a": {"teacher": {}}}}, "metrics.json: segments.a.support: Field required"),
        ({**V1, "latency": {"student": {"p50": 1.0}}},
         "metrics.json: latency.student.p95: Field required (and 1 more)"),
        ("{not json", "metrics.json is not JSON"),
        ("[1, 2]", "metrics.json is a JSON list, not an object"),
    ],
    ids=["newer", "no-student", "text-metric", "segment-without-support", "latency-partial", "not-json", "list"],
)
def test_malformed_is_one_clear_line(data: Any, message: str) -> None:
    with pytest.raises(ReportError) as err:
        load_report(data)
    assert str(err.value).startswith(message), str(err.value)
    assert "\n" not in str(err.value)


def test_data_warnings_worked_examples() -> None:
    import doctest

    from kubestill.api import report

    result = doctest.testmod(report)
    assert result.attempted > 0 and result.failed == 0
    data = report.DataReport(total_rows=100, unknown_labels=3, truncation=report.TruncationReport(
        max_seq_length=128, rows=100, truncated_rows=4, truncated_share=0.04, max_tokens=5000))
    assert data.warnings() == [
        "3 of 100 rows have a gold label that is not a teacher class: hard-label losses use the teacher's top "
        "class for them, gold metrics count them wrong",
        "4 of 100 rows (4.0%) are longer than training.maxSeqLength 128 tokens (longest 5000) and are cut"]
    assert report.DataReport(total_rows=100, dropped={"low confidence": 9}).warnings() == []
