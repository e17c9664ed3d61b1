"""The guard of the standard exports: label maps as transformers writes them, and the comparison that refuses
an export whose outputs differ from kubestill's model (worked examples; no model needed)."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from kubestill_trainer.stages import export_standard
from kubestill_trainer.stages.export_standard import STANDARD_TOLERANCE, _check, label_maps


def test_doctests() -> None:
    result = doctest.testmod(export_standard)
    assert result.attempted >= 1 and result.failed == 0


@pytest.mark.parametrize(("labels", "id2label", "label2id"), [
    ([], {}, {}),
    (["pos"], {"0": "pos"}, {"pos": 0}),
    (["b", "a", "c"], {"0": "b", "1": "a", "2": "c"}, {"b": 0, "a": 1, "c": 2}),  # our order, not sorted
])
def test_label_maps(labels: list[str], id2label: dict[str, str], label2id: dict[str, int]) -> None:
    assert label_maps(labels) == {"id2label": id2label, "label2id": label2id}


@pytest.mark.parametrize(("delta", "worst"), [(0.0, 0.0), (5e-5, 5e-5), (0.9 * STANDARD_TOLERANCE,) * 2])
def test_check_accepts_float_noise(delta: float, worst: float) -> None:
    ours = np.array([[0.5, -1.0], [2.0, 0.25]], dtype=np.float64)
    got = ours.copy()
    got[1, 0] += delta
    assert _check("x", ours, got) == pytest.approx(worst)


@pytest.mark.parametrize(("got", "message"), [
    (np.array([[0.5, -1.0], [2.001, 0.25]]), r"differs from kubestill's model by 1\.000e-03"),
    (np.array([[0.5, -1.0]]), r"output shape \(1, 2\) differs from kubestill's \(2, 2\)"),
    (np.array([[0.5, -1.0], [np.nan, 0.25]]), "differs from kubestill's model by nan"),
])
def test_check_refuses_a_different_export(got: np.ndarray, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=message):
        _check("x", np.array([[0.5, -1.0], [2.0, 0.25]]), got)
