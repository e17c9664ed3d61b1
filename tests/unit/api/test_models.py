"""The Python models accept every example and reject every invalid object, naming the field."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from kubestill.api.v1alpha1 import (
    CanaryRollout,
    DistillationJob,
    StudentModel,
    format_duration,
    parse_duration,
)
from tests.invalid_objects import ACCEPTED, CASES, EXAMPLES, Case

MODELS: dict[str, type[BaseModel]] = {
    "DistillationJob": DistillationJob,
    "StudentModel": StudentModel,
    "CanaryRollout": CanaryRollout,
}


def _docs() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(Path(EXAMPLES).glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("apiVersion", "").startswith("kubestill.io/"):
                out.append((f"{path.name}:{doc['metadata']['name']}", doc))
    return out


@pytest.mark.parametrize(("name", "doc"), _docs(), ids=[n for n, _ in _docs()])
def test_examples_parse(name: str, doc: dict[str, Any]) -> None:
    MODELS[doc["kind"]].model_validate(doc)


def _python_field(case: Case) -> str:
    # spec.loss.terms[0].temperature -> ("spec", "loss", "terms", 0, "temperature") as pydantic reports it.
    return case.field.replace("[", ".").replace("]", "")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_invalid_objects_rejected_naming_the_field(case: Case) -> None:
    obj = case.build()
    with pytest.raises(ValidationError) as err:
        MODELS[obj["kind"]].model_validate(obj)
    paths = []
    for error in err.value.errors():
        path = ".".join(str(p) for p in error["loc"])
        # A cross-field rule reports its object's path and names the field first in its message.
        message = error["msg"].removeprefix("Value error, ")
        head = message.split(":", 1)[0]
        if ":" in message and " " not in head:
            path = f"{path}.{head}"
        paths.append(path)
    assert _python_field(case) in paths, f"{case.id}: expected an error at {_python_field(case)}, got {paths}"
    # A rule's message is the API server's message too (field constraints are worded by each side).
    rule_messages = [e["msg"] for e in err.value.errors() if e["type"] == "value_error"]
    assert not rule_messages or any(case.words in m for m in rule_messages), rule_messages


@pytest.mark.parametrize("case", ACCEPTED, ids=[c.id for c in ACCEPTED])
def test_boundary_values_accepted(case: Case) -> None:
    obj = case.build("ok")
    MODELS[obj["kind"]].model_validate(obj)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("1h30m", 5400), ("2d", 172800), ("500ms", 0.5), ("1d2h3m4s", 93784)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "6 hours", "1w", "h", "-5s", "30m1h", "1s1s", "100000s", "2d 3h"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (59, "59s"), (3600, "1h"), (93784, "1d2h3m4s")])
def test_format_duration(seconds: int, text: str) -> None:
    assert format_duration(timedelta(seconds=seconds)) == text
    assert parse_duration(text) == timedelta(seconds=seconds)


def test_defaults_fill_nested_objects() -> None:
    dj = DistillationJob.model_validate(next(d for n, d in _docs() if d["kind"] == "DistillationJob"))
    assert dj.spec.evaluation.min_quality_ratio == 0.97
    assert dj.spec.output.serving.onnx_runtime.allow_spinning is False
    assert dj.spec.output.serving.instance_group.count is None  # derived from resources.cpu (api/triton.py)
    wire = dj.to_wire()
    assert wire["spec"]["output"]["serving"]["maxBatchSize"] == 64
