"""Resumable training state: written atomically (a new directory renamed over the old), so a kill at any
moment leaves either the previous checkpoint or the new one, never a torn one."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

STATE = "state.pt"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(state, tmp / STATE)
    old = path.with_name(path.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The last complete checkpoint (also one left as `.old` by a kill between the two renames)."""
    for candidate in (path, path.with_name(path.name + ".old")):
        if (candidate / STATE).exists():
            state: dict[str, Any] = torch.load(candidate / STATE, map_location="cpu", weights_only=False)
            return state
    return None
