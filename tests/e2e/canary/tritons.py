"""Model repositories for the canary tests: the `echo` model, told to fail or slow down by a control file."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kubestill.dev.triton import TritonProcess, start_tritonserver

MODELS = Path(__file__).parent / "models"


def make_repository(root: Path, control_file: Path) -> Path:
    """A model repository with the `echo` model whose behaviour `control_file` sets (ok | fail | slow:MS)."""
    repo = root / "repo"
    shutil.copytree(MODELS / "echo" / "1", repo / "echo" / "1", dirs_exist_ok=True)
    template = (MODELS / "echo" / "config.pbtxt.template").read_text()
    (repo / "echo" / "config.pbtxt").write_text(template.replace("{control_file}", str(control_file)))
    control_file.write_text("ok")
    return repo


@contextmanager
def echo_pair(root: Path) -> Iterator[tuple[TritonProcess, TritonProcess, Path]]:
    """Baseline and candidate tritonservers serving the echo model under `root`; yields them and the candidate's
    control file (write "fail", "slow:MS", "wrong" to change how it answers)."""
    base_dir, cand_dir = root / "baseline", root / "candidate"
    base_dir.mkdir()
    cand_dir.mkdir()
    control = cand_dir / "control"
    with (
        start_tritonserver(make_repository(base_dir, base_dir / "control"), base_dir / "triton.log") as baseline,
        start_tritonserver(make_repository(cand_dir, control), cand_dir / "triton.log") as candidate,
    ):
        yield baseline, candidate, control
