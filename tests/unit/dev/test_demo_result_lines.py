"""What the demo prints of a finished DistillationJob: figures rounded, the ROI in words."""

from __future__ import annotations

import doctest
from typing import Any

import pytest

from kubestill.dev import demo
from kubestill.dev.demo import result_lines


def test_doctests() -> None:
    assert doctest.testmod(demo).failed == 0


@pytest.mark.parametrize(("status", "expected"), [
    ({}, []),
    ({"qualityRatio": 1.0, "teacherMetrics": {"b": 0.5, "a": 1.0}, "studentMetrics": {}},
     ["quality ratio 1.000, speedup not measured", "  teacher: a 1.000, b 0.500", "  student: "]),
    ({"roi": {"distillationCost": 12.5, "dailySavings": 5.0, "breakEvenDays": 2.5, "currency": "EUR"}},
     ["ROI: distillation cost 12.50 EUR, saves 5.00 EUR a day, break-even after 2.5 days"]),
    ({"roi": {"distillationCost": 3.0, "dailySavings": 0.0, "breakEvenDays": None}},
     ["ROI: distillation cost 3.00 USD, saves 0.00 USD a day, no break-even (no daily savings)"]),
])
def test_result_lines(status: dict[str, Any], expected: list[str]) -> None:
    assert result_lines(status) == expected
