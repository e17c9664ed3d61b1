"""`kubestill judge` as a host process, for the e2e tests and the live benches: no node runs the judge's Pod
there, so they start it with the settings the operator's Deployment carries (handlers/canary_judge), pointed at
local tritonservers. Its log goes to a file, shown when something fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..api.judge import JudgeSettings
from .controlplane import free_port


@dataclass(frozen=True)
class JudgeProcess:
    """A running judge: `url` takes the mirrored requests, `metrics_port` serves /metrics on 127.0.0.1."""

    url: str
    metrics_port: int
    log_file: Path

    def log_tail(self, chars: int = 2000) -> str:
        return self.log_file.read_text(errors="replace")[-chars:] if self.log_file.exists() else ""


@contextmanager
def start_judge(settings: JudgeSettings, log_file: Path, ready_timeout_s: float = 30.0) -> Iterator[JudgeProcess]:
    """Start `kubestill judge` on free loopback ports with `settings` (as its KUBESTILL_JUDGE_* environment) and
    wait until its /metrics answers; SIGTERM on exit. RuntimeError if it exits early, TimeoutError if its
    metrics never answer within `ready_timeout_s` seconds (both with its log)."""
    port, metrics_port = free_port(), free_port()
    env = {**os.environ, **settings.to_env()}
    code = "import sys; from kubestill.cli import main; sys.exit(main(sys.argv[1:]))"
    with open(log_file, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", code, "judge", "--listen", "127.0.0.1", "--port", str(port),
                                 "--metrics-port", str(metrics_port)], env=env, stdout=out, stderr=subprocess.STDOUT)
    judge = JudgeProcess(f"http://127.0.0.1:{port}", metrics_port, log_file)
    try:
        _wait_ready(proc, judge, ready_timeout_s)
        yield judge
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_ready(proc: subprocess.Popen[bytes], judge: JudgeProcess, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"kubestill judge exited {proc.returncode}:\n{judge.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{judge.metrics_port}/metrics", timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"kubestill judge's /metrics not answering after {timeout_s}s:\n{judge.log_tail()}")
