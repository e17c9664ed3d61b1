"""The failure message a Kubernetes container leaves behind (`terminationMessagePath`), which the operator
copies into the DistillationJob's condition. One paragraph, capped at Kubernetes' 4 KiB."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

DEFAULT_PATH = "/dev/termination-log"
LIMIT = 4096


def termination_path(env: Mapping[str, str] | None = None) -> Path | None:
    env = os.environ if env is None else env
    given = env.get("KUBESTILL_TERMINATION_LOG")
    if given:
        return Path(given)
    default = Path(DEFAULT_PATH)
    return default if default.exists() and os.access(default, os.W_OK) else None


def one_paragraph(message: str) -> str:
    text = " ".join(message.split())
    return text if len(text) <= LIMIT else text[: LIMIT - 3] + "..."


def report_failure(message: str, env: Mapping[str, str] | None = None) -> None:
    """Print the reason on stderr and write it to the termination log when there is one."""
    text = one_paragraph(message)
    print(f"kubestill-trainer: {text}", file=sys.stderr)
    path = termination_path(env)
    if path is not None:
        try:
            path.write_text(text)
        except OSError as e:
            print(f"kubestill-trainer: could not write {path}: {e}", file=sys.stderr)
