"""Names the operator and the trainer share (environment variables, labels, annotations) come from
kubestill.api.names: a literal spelled in both packages could be renamed on one side only."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from kubestill.api import names
from kubestill.api.v1alpha1.distillationjob import DistillationJobSpec
from kubestill.builders.job import build_stage_job

ROOT = Path(__file__).resolve().parents[3]
SHARED = re.compile(
    r"^(KUBESTILL_[A-Z0-9_]+|kubestill\.io/[a-z0-9.-]+|app\.kubernetes\.io/[a-z-]+|/dev/termination-log)$"
)


def _literals(package: Path, skip: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Shared-looking string literals -> the files spelling them (docstrings and comments do not count)."""
    found: dict[str, list[str]] = {}
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(skip):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SHARED.match(node.value):
                found.setdefault(node.value, []).append(rel)
    return found


def test_no_shared_literal_outside_names() -> None:
    # dev/ is the local node standing in for the kubelet (it sets what a Pod spec would); names.py is the home.
    operator = _literals(ROOT / "operator" / "kubestill",
                         skip=("operator/kubestill/api/names.py", "operator/kubestill/dev/"))
    trainer = _literals(ROOT / "trainer-image" / "kubestill_trainer")
    both = {name: operator[name] + trainer[name] for name in set(operator) & set(trainer)}
    assert both == {}, f"spelled in both packages, move to kubestill.api.names: {both}"


def test_the_stage_pod_environment_is_named_in_names() -> None:
    spec = DistillationJobSpec.model_validate({
        "task": "classification", "teacher": {"openai": {"baseUrl": "https://api.example/v1", "model": "m",
                                                         "apiKeySecretRef": {"name": "k", "key": "token"}}},
        "student": {"baseModelUri": "file:///m"}, "data": {"uri": "file:///d.jsonl"},
        "loss": {"terms": [{"name": "logit-kl"}]},
        "output": {"studentModelName": "s", "artifactUri": "file:///out"},
    })
    dj = {"apiVersion": "kubestill.io/v1alpha1", "kind": "DistillationJob",
          "metadata": {"name": "bbc", "namespace": "ml", "uid": "u"}, "spec": spec.to_wire()}
    job = build_stage_job(dj, spec, "label", default_image="trainer:latest")
    env = {e["name"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    kubestill_env = {n for n in env if n.startswith("KUBESTILL_")}
    known = {v for k, v in vars(names).items() if k.endswith("_ENV")}
    assert kubestill_env and kubestill_env <= known, kubestill_env - known
