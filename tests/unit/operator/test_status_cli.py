"""`kubestill status` rows from DistillationJob / StudentModel objects (no cluster needed)."""

from __future__ import annotations

from typing import Any

import pytest

from kubestill.cli.status import job_rows, model_rows, table


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({}, ["bbc", "Pending", "label· train· evaluate· export·", "-", "-", "-", "-", ""]),
        ({"phase": "Training", "stages": {"label": {"state": "Succeeded"}, "train": {"state": "Running"}},
          "progress": {"percent": 42.4, "eta": "2026-01-01T12:10:05Z"}, "message": "train: 42% trained"},
         ["bbc", "Training", "label✓ train… evaluate· export·", "42% eta 12:10:05", "-", "-", "-",
          "train: 42% trained"]),
        ({"phase": "Failed", "gate": {"passed": False}, "qualityRatio": 0.71234, "speedup": 3.26,
          "stages": {s: {"state": "Succeeded"} for s in ("label", "train", "evaluate")}},
         ["bbc", "Failed", "label✓ train✓ evaluate✓ export·", "-", "FAILED q=0.712", "3.3x", "-", ""]),
    ],
)
def test_job_rows(status: dict[str, Any], expected: list[str]) -> None:
    assert job_rows([{"metadata": {"name": "bbc", "namespace": "ml"}, "status": status}], False) == [expected]


def test_model_rows_and_table() -> None:
    sm = {"metadata": {"name": "s", "namespace": "ml"}, "spec": {"task": "classification", "sourceJob": "bbc",
                                                                 "serving": {"replicas": 2}},
          "status": {"phase": "Ready", "readyReplicas": 2, "endpoint": {"http": "http://s-triton.ml.svc:8000"}}}
    rows = model_rows([sm], True)
    assert rows == [["ml", "s", "classification", "Ready", "2/2", "http://s-triton.ml.svc:8000", "bbc"]]
    assert table(["A", "B"], [["x", "yy"]]) == "A  B\nx  yy"
