"""Shared pieces of the live canary benches (canary_rollback, agreement_live): the e2e `echo` model's repository
(a Triton python-backend model told to fail, slow down or disagree by a control file; see its docstring)."""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ECHO_MODEL = REPO / "tests" / "e2e" / "canary" / "models" / "echo"


def echo_repository(root: Path, control: Path) -> Path:
    """`root`/repo holding the echo model whose behaviour `control` sets (written `ok` here); returns the repo."""
    repo = root / "repo"
    shutil.copytree(ECHO_MODEL / "1", repo / "echo" / "1")
    text = (ECHO_MODEL / "config.pbtxt.template").read_text().replace("{control_file}", str(control))
    (repo / "echo" / "config.pbtxt").write_text(text)
    control.write_text("ok")
    return repo
