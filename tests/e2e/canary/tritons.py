"""Model repositories for the canary tests: the `echo` model, told to fail or slow down by a control file."""

from __future__ import annotations

import shutil
from pathlib import Path

MODELS = Path(__file__).parent / "models"


def make_repository(root: Path, control_file: Path) -> Path:
    """A model repository with the `echo` model whose behaviour `control_file` sets (ok | fail | slow:MS)."""
    repo = root / "repo"
    shutil.copytree(MODELS / "echo" / "1", repo / "echo" / "1", dirs_exist_ok=True)
    template = (MODELS / "echo" / "config.pbtxt.template").read_text()
    (repo / "echo" / "config.pbtxt").write_text(template.replace("{control_file}", str(control_file)))
    control_file.write_text("ok")
    return repo
