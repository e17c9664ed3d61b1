"""The failure message a Kubernetes container leaves behind (`terminationMessagePath`), which the operator
copies into the DistillationJob's condition. One paragraph, capped at Kubernetes' 4 KiB."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from kubestill.api.names import TEACHER_API_KEY_ENV, TERMINATION_LOG, TERMINATION_LOG_ENV

DEFAULT_PATH = TERMINATION_LOG
LIMIT = 4096


def termination_path(env: Mapping[str, str] | None = None) -> Path | None:
    env = os.environ if env is None else env
    given = env.get(TERMINATION_LOG_ENV)
    if given:
        return Path(given)
    default = Path(DEFAULT_PATH)
    return default if default.exists() and os.access(default, os.W_OK) else None


def one_paragraph(message: str) -> str:
    text = " ".join(message.split())
    return text if len(text) <= LIMIT else text[: LIMIT - 3] + "..."


# Environment variables whose values are credentials (the S3 Secret's keys, the teacher's API key).
SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", TEACHER_API_KEY_ENV)


def secret_values(env: Mapping[str, str] | None = None) -> list[str]:
    env = os.environ if env is None else env
    return sorted({env[k] for k in SECRET_ENV if len(env.get(k) or "") >= 4}, key=len, reverse=True)


def redact(text: str, env: Mapping[str, str] | None = None) -> str:
    """`text` with every credential value of the environment replaced by ***."""
    for value in secret_values(env):
        text = text.replace(value, "***")
    return text


class _Redact(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def install_redaction() -> None:
    """Redact credentials from every log record of this process (on each root handler, so records of
    libraries such as botocore are covered too)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _Redact) for f in handler.filters):
            handler.addFilter(_Redact())


def report_failure(message: str, env: Mapping[str, str] | None = None) -> None:
    """Print the reason on stderr and write it to the termination log when there is one (credentials redacted)."""
    text = redact(one_paragraph(message), env)
    print(f"kubestill-trainer: {text}", file=sys.stderr)
    path = termination_path(env)
    if path is not None:
        try:
            path.write_text(text)
        except OSError as e:
            print(f"kubestill-trainer: could not write {path}: {e}", file=sys.stderr)
