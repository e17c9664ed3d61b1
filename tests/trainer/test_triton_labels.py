"""model.py refuses a `labels` parameter (StudentModel spec.labels) that is not the artifact's class order (issue #13,
fault 9, ../shared/cases/turn2/09: the served names meant other classes to anyone reading the config, e.g. a later
DistillationJob's Triton teacher reading PROBABILITIES in config order). It fails before loading anything, names
spec.labels and both orders, and leaves a `LoadFailure` in the termination log for the operator. Triton's
`triton_python_backend_utils` is stubbed: initialize() does not use it. A tiny classifier artifact, built here.
Also: the StudentModel's ONNX Runtime options (spec.serving.onnxRuntime, rendered into config.pbtxt) reach the
real ONNX Runtime session model.py serves from."""

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


def _parameters(pbtxt: str) -> dict[str, dict[str, str]]:
    """config.pbtxt's parameters as Triton hands them to initialize() in the model config's JSON."""
    params = {}
    for line in pbtxt.splitlines():
        if line.startswith("parameters"):
            key, value = line.split('key: ', 1)[1].split(' value: { string_value: ', 1)
            params[json.loads(key)] = {"string_value": json.loads(value.rsplit(" } }", 1)[0])}
    return params


def _args(artifact: Path, labels: list[str]) -> dict[str, str]:
    """What Triton hands initialize(): the model config as JSON, parameters as rendered for the StudentModel."""
    pbtxt = render_config_pbtxt("topics", "classification", ServingSpec(), str(artifact), labels)
    return {"model_config": json.dumps({"parameters": _parameters(pbtxt)})}


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


# --- ONNX Runtime's CPU options (ServingSpec.onnxRuntime) reach the session model.py serves from ----------------


@pytest.fixture(scope="module")
def onnx_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny classifier with the model.onnx the export stage writes (`export_onnx`)."""
    from kubestill.api.v1alpha1 import DistillationJobSpec
    from kubestill_trainer.stages.export import export_onnx
    from kubestill_trainer.tasks import task_class

    model_dir = tiny_lm.classifier_artifact(tmp_path_factory.mktemp("export"), ARTIFACT_ORDER) / "model"
    spec = DistillationJobSpec.model_validate(json.loads((model_dir / "kubestill.json").read_text())["spec"])
    task = task_class(spec.task)(spec)
    export_onnx(task, task.load_model(model_dir), model_dir)
    return model_dir


@pytest.mark.parametrize(("serving", "threads", "spinning"), [
    ({}, 0, "0"),  # no CPU given: ONNX Runtime's thread count, no spinning (the default)
    ({"resources": {"cpu": "1500m"}, "onnxRuntime": {"allowSpinning": True}}, 1, "1"),
    ({"resources": {"cpu": "4"}, "instanceGroup": {"count": 2}}, 2, "0"),  # the CPU shared by the instances
    ({"resources": {"cpu": "4"}, "onnxRuntime": {"intraOpThreads": 3}}, 3, "0"),
], ids=["defaults", "cpu-and-spinning", "shared-by-instances", "explicit"])
def test_onnx_runtime_options_reach_the_session(onnx_artifact: Path, model_py: Any, serving: dict[str, Any],
                                                threads: int, spinning: str) -> None:
    pbtxt = render_config_pbtxt("topics", "classification", ServingSpec.model_validate(serving), str(onnx_artifact))
    model = model_py.TritonPythonModel()
    model.initialize({"model_config": json.dumps({"parameters": _parameters(pbtxt)})})
    assert (model.servable.runtime, model.servable.threads) == ("onnxruntime", threads)
    options = model.servable.answer.args[0].session.get_session_options()  # the OnnxModel behind answer
    assert options.intra_op_num_threads == threads
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == spinning
    res = model.servable.answer({"TEXT": np.array([[b"markets rise as rates fall"]], dtype=object)})
    assert res["PROBABILITIES"].shape == (1, len(ARTIFACT_ORDER))


def test_a_config_without_the_options_takes_them_from_the_environment(
        onnx_artifact: Path, model_py: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A config.pbtxt rendered before the options existed (or a model.py exported before it read them): the
    serving image's load_servable takes them from the container's environment, which the operator sets."""
    pbtxt = render_config_pbtxt("topics", "classification", ServingSpec(), str(onnx_artifact))
    params = {k: v for k, v in _parameters(pbtxt).items() if k not in ("intra_op_threads", "allow_spinning")}
    monkeypatch.setenv("KUBESTILL_INTRA_OP_THREADS", "1")
    monkeypatch.setenv("KUBESTILL_ALLOW_SPINNING", "1")
    model = model_py.TritonPythonModel()
    model.initialize({"model_config": json.dumps({"parameters": params})})
    options = model.servable.answer.args[0].session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "1"


def test_model_py_doctests() -> None:
    import doctest

    from kubestill_trainer.serving import triton_model

    result = doctest.testmod(triton_model)
    assert result.attempted >= 5 and result.failed == 0
