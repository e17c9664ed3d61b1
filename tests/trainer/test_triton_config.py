"""config.pbtxt rendering follows the tensor contract of kubestill.api.triton."""

from __future__ import annotations

import json
import re

import pytest

from kubestill.api.triton import TENSORS, render_config_pbtxt
from kubestill.api.v1alpha1 import ServingSpec, Task


@pytest.mark.parametrize(
    ("task", "inputs", "outputs"),
    [
        (Task.CLASSIFICATION, ["TEXT"], ["LABEL", "PROBABILITIES"]),
        (Task.EMBEDDING, ["TEXT"], ["EMBEDDING"]),
        (Task.RERANKING, ["QUERY", "PASSAGE"], ["SCORE"]),
        (Task.GENERATION, ["PROMPT"], ["TEXT"]),
    ],
)
def test_tensor_contract(task: Task, inputs: list[str], outputs: list[str]) -> None:
    spec = TENSORS[task]
    assert [t.name for t in spec.inputs] == inputs
    assert [t.name for t in spec.outputs] == outputs
    text = render_config_pbtxt("m", task, ServingSpec(), "/art")
    for name in inputs + outputs:
        assert f'name: "{name}"' in text


def test_serving_settings_and_parameters() -> None:
    serving = ServingSpec.model_validate({
        "maxBatchSize": 64, "instanceGroup": {"count": 2},
        "dynamicBatching": {"maxQueueDelayMicroseconds": 500, "preferredBatchSizes": [8, 16]}})
    text = render_config_pbtxt("bbc", "classification", serving, "/models/a b", ["x", 'y"z'])
    assert text.startswith('name: "bbc"\nbackend: "python"\nmax_batch_size: 64\n')
    assert "instance_group [ { kind: KIND_CPU count: 2 } ]" in text
    assert "dynamic_batching { preferred_batch_size: [ 8, 16 ] max_queue_delay_microseconds: 500 }" in text
    assert 'parameters { key: "artifact_dir" value: { string_value: "/models/a b" } }' in text
    raw = re.search(r'key: "labels" value: \{ string_value: (".*") \}', text)
    assert raw is not None and json.loads(json.loads(raw.group(1))) == ["x", 'y"z']


def test_dynamic_batching_off() -> None:
    serving = ServingSpec.model_validate({"dynamicBatching": {"enabled": False}})
    assert "dynamic_batching" not in render_config_pbtxt("m", "embedding", serving, "/a")


@pytest.mark.parametrize(("serving", "runtime"), [
    ({}, "auto"),                       # the default: ONNX Runtime where the artifact has model.onnx
    ({"runtime": "torch"}, "torch"),    # the fallback, forced
    ({"runtime": "auto"}, "auto"),
])
def test_runtime_parameter(serving: dict[str, str], runtime: str) -> None:
    text = render_config_pbtxt("m", "embedding", ServingSpec.model_validate(serving), "/a")
    assert f'parameters {{ key: "runtime" value: {{ string_value: "{runtime}" }} }}' in text


def test_unknown_runtime_is_refused() -> None:
    with pytest.raises(ValueError, match="runtime"):
        ServingSpec.model_validate({"runtime": "tensorrt"})


def test_the_onnx_served_tasks_are_the_trainers() -> None:
    """The API's ONNX_SERVED_TASKS (what gets an instance per core by default) is what the trainer serves through
    ONNX Runtime under runtime auto."""
    from kubestill.api.triton import ONNX_SERVED_TASKS
    from kubestill_trainer.tasks import task_class

    assert {t for t in Task if task_class(t).serves_onnx} == ONNX_SERVED_TASKS
