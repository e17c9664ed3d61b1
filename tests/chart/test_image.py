"""The operator image (operator/Dockerfile) holds the operator and its core dependencies only, runs as the
non-root user the chart expects, and exposes the ports the chart probes and scrapes. Docker is not available
here, so this checks what the build relies on: the operator imports without the trainer stack, and the
Dockerfile agrees with the chart's defaults."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

import yaml

from .helm import CHART, REPO_ROOT

DOCKERFILE = REPO_ROOT / "operator" / "Dockerfile"
TRAINER_STACK = ("torch", "transformers", "peft", "sentence_transformers", "onnx", "kubestill_trainer")

BLOCKER = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {TRAINER_STACK!r}:
            raise ImportError("not in the operator image: " + name)
sys.meta_path.insert(0, Block())
import kubestill.main
print("imported", len([m for m in sys.modules if m.startswith("kubestill")]), "kubestill modules")
"""


def test_operator_imports_without_the_trainer_stack() -> None:
    result = subprocess.run([sys.executable, "-c", BLOCKER], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert "imported" in result.stdout


def test_core_dependencies_exclude_the_trainer_stack() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    names = [re.split(r"[<>=\[ ;!~]", dep)[0].lower().replace("-", "_") for dep in project["dependencies"]]
    assert not set(names) & set(TRAINER_STACK), names


def test_dockerfile_matches_the_chart() -> None:
    text = DOCKERFILE.read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    users = re.findall(r"^USER\s+(\d+):(\d+)\s*$", text, flags=re.M)
    assert users == [(str(values["podSecurityContext"]["runAsUser"]), str(values["podSecurityContext"]["runAsGroup"]))]
    assert users[0][0] != "0"
    exposed = {int(p) for line in re.findall(r"^EXPOSE\s+(.+)$", text, flags=re.M) for p in line.split()}
    assert {values["probes"]["port"], values["metrics"]["port"]} <= exposed
    # The runtime stage installs the core dependencies, then the core package, from wheels built in the image
    # (no network), without extras.
    installs = re.findall(r"pip install [^\n]*", text)
    assert installs and all("[" not in line and "--no-index" in line for line in installs)
    assert "kubestill" in installs[-1] and "--no-deps" in installs[-1]
    bases = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", text, flags=re.M)
    assert bases and bases[0].startswith("python:") and "slim" in bases[0]
