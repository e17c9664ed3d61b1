"""E2E fixtures: the real operator as a subprocess and the local node, both against the `cluster` fixture.

Nothing here fakes the API server, the trainer or Triton: the operator is `kubestill operator`, the node
runs the stage Jobs' commands (the installed trainer) and the Triton Deployments (bundled tritonserver).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import kubestill
from kubestill.dev.controlplane import Cluster, free_port
from kubestill.dev.node import LocalNode

# The checkout whose kubestill the tests import; child processes must run the same code.
SOURCE_PATH = os.pathsep.join(
    [str(Path(kubestill.__file__).resolve().parents[1]), str(Path(kubestill.__file__).resolve().parents[2]
                                                            / "trainer-image")]
)


def source_env(cluster: Cluster, **extra: str) -> dict[str, str]:
    env = cluster.env()
    env["PYTHONPATH"] = SOURCE_PATH + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra)
    return env


class OperatorProcess:
    """`kubestill operator` in a subprocess; its log is kept in a file and shown when a test fails."""

    def __init__(self, cluster: Cluster, log_file: Path) -> None:
        self.cluster = cluster
        self.log_file = log_file
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        env = source_env(self.cluster, KUBESTILL_TRAINER_IMAGE="kubestill-trainer:dev",
                         KUBESTILL_TRITON_IMAGE="kubestill-triton:dev",
                         KUBESTILL_METRICS_PORT=str(self.metrics_port),
                         # A deleted CanaryRollout whose route cannot be restored is released after this.
                         KUBESTILL_ROUTE_RESTORE_TIMEOUT="10s")
        code = "import sys; from kubestill.cli import main; sys.exit(main(sys.argv[1:]))"
        argv = [sys.executable, "-c", code, "operator", "--liveness", f"http://127.0.0.1:{self.health_port}/healthz"]
        with open(self.log_file, "ab") as log:
            log.write(f"\n===== operator start {time.strftime('%H:%M:%S')} =====\n".encode())
            self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"operator exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=1):
                    return
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"operator not healthy after {timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, as when a Pod is OOM-killed or a node dies."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> None:
        self.kill()
        self.start()

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            text: str = resp.read().decode()
            return text

    def log_tail(self, lines: int = 80) -> str:
        if not self.log_file.exists():
            return ""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call" and report.failed:
        for name, title in (("operator", "operator log"), ("local_node", "node log")):
            fixture = item.funcargs.get(name) if hasattr(item, "funcargs") else None
            if isinstance(fixture, OperatorProcess):
                report.sections.append((title, fixture.log_tail(120)))
            elif isinstance(fixture, LocalNode):
                log = fixture.state_dir / "node.log"
                if log.exists():
                    report.sections.append((title, "\n".join(log.read_text().splitlines()[-60:])))
    return report


@pytest.fixture(scope="session")
def operator(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """The real operator, running against `cluster` for the whole session."""
    proc = OperatorProcess(cluster, tmp_path_factory.mktemp("operator") / "operator.log")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def local_node(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNode]:
    """The local node in a thread: runs what the operator schedules (trainer, tritonserver) as processes."""
    import logging

    state = tmp_path_factory.mktemp("node")
    handler = logging.FileHandler(state / "node.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logger = logging.getLogger("kubestill.node")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    os.environ["PYTHONPATH"] = SOURCE_PATH + (os.pathsep + os.environ["PYTHONPATH"]
                                              if os.environ.get("PYTHONPATH") else "")
    node = LocalNode(state, cluster.kubeconfig)
    node.start()
    try:
        yield node
    finally:
        node.stop()
        logger.removeHandler(handler)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    """Poll until predicate() is truthy; its last value on success, TimeoutError naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def get_json(cluster: Cluster, *args: str) -> dict[str, Any]:
    out = cluster.kubectl("get", *args, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else {}
