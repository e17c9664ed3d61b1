"""Stopping a process started in a session of its own (`start_new_session=True`), with everything it spawned."""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Any


def stop_group(process: subprocess.Popen[Any], timeout: float) -> None:
    """SIGTERM to the process group led by `process`, SIGKILL to it after `timeout` seconds; returns once the
    leader has exited. A process already gone is not an error."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass
