"""model.py refuses a `labels` parameter (StudentModel spec.labels) that is not the artifact's class order (issue #13,
fault 9, ../shared/cases/turn2/09: the served names meant other classes to anyone reading the config, e.g. a later
DistillationJob's Triton teacher reading PROBABILITIES in config order). It fails before loading anything, names
spec.labels and both orders, and leaves a `LoadFailure` in the termination log for the operator. Triton's
`triton_python_backend_utils` is stubbed: initialize() does not use it. A tiny classifier artifact, built here."""

from __future__ import annotations

import importlib
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kubestill.api.triton import render_config_pbtxt
from kubestill.api.v1alpha1.common import ServingSpec

from . import tiny_lm

ARTIFACT_ORDER = ["business", "entertainment", "politics", "sport", "tech"]
HAND_WRITTEN = ["sport", "business", "tech", "politics", "entertainment"]  # the case's StudentModel


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exported classifier directory (kubestill.json with its labels and spec), random tiny BERT."""
    return tiny_lm.classifier_artifact(tmp_path_factory.mktemp("export"), ARTIFACT_ORDER) / "model"


@pytest.fixture
def model_py(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", types.ModuleType("triton_python_backend_utils"))
    monkeypatch.setenv("KUBESTILL_TERMINATION_LOG", str(tmp_path / "termination-log"))
    return importlib.import_module("kubestill_trainer.serving.triton_model")


def _args(artifact: Path, labels: list[str]) -> dict[str, str]:
    """What Triton hands initialize(): the model config as JSON, parameters as rendered for the StudentModel."""
    pbtxt = render_config_pbtxt("topics", "classification", ServingSpec(), str(artifact), labels)
    params = {}
    for line in pbtxt.splitlines():
        if line.startswith("parameters"):
            key, value = line.split('key: ', 1)[1].split(' value: { string_value: ', 1)
            params[json.loads(key)] = {"string_value": json.loads(value.rsplit(" } }", 1)[0])}
    return {"model_config": json.dumps({"parameters": params})}


def test_another_order_is_refused_before_loading(artifact: Path, model_py: Any, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from kubestill_trainer.serving import loader

    monkeypatch.setattr(loader, "load_servable", lambda *_: pytest.fail("the model was loaded"))
    with pytest.raises(ValueError) as err:
        model_py.TritonPythonModel().initialize(_args(artifact, HAND_WRITTEN))
    message = str(err.value)
    assert f"StudentModel spec.labels {HAND_WRITTEN}" in message
    assert f"artifact's class order {ARTIFACT_ORDER}" in message and "the same classes in another order" in message
    from kubestill.api.triton import LABELS_MISMATCH, LoadFailure

    failure = LoadFailure.from_text((tmp_path / "termination-log").read_text())
    assert failure == LoadFailure(LABELS_MISMATCH, message)


def test_other_classes_are_refused(artifact: Path, model_py: Any) -> None:
    with pytest.raises(ValueError, match=r"only in spec.labels \['sports'\], only in the artifact \['sport'\]"):
        model_py.TritonPythonModel().initialize(_args(artifact, [*ARTIFACT_ORDER[:3], "sports", "tech"]))


@pytest.mark.parametrize("labels", [ARTIFACT_ORDER, []], ids=["artifact-order", "unset"])
def test_the_artifacts_order_or_none_is_served(artifact: Path, model_py: Any, labels: list[str]) -> None:
    """The order that is published (or, unset, the artifact's own) is the order of PROBABILITIES and LABEL."""
    model = model_py.TritonPythonModel()
    model.initialize(_args(artifact, labels))
    texts = np.array([[b"markets rise as rates fall"], [b"sport teams win the cup"]], dtype=object)
    res = model.servable.answer({"TEXT": texts})
    for label, probs in zip(res["LABEL"], res["PROBABILITIES"], strict=True):
        assert label[0].decode() == ARTIFACT_ORDER[int(np.argmax(probs))]
