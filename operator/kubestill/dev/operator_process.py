"""`kubestill operator` as a host process against a cluster, for the e2e tests, the real-node tests and the
benchmarks: started from the checkout being tested (its PYTHONPATH), healthy when its liveness endpoint answers,
its log kept in a file (each start marked) to show when something fails. stop() is a graceful SIGTERM, kill()
a SIGKILL as when a Pod is OOM-killed or its node dies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from .controlplane import Cluster, free_port

# The checkout whose kubestill this process imports: the operator it starts must run the same code.
_PACKAGE = Path(__file__).resolve().parents[1]
CHART_VALUES = _PACKAGE.parents[1] / "charts" / "kubestill" / "values.yaml"
SOURCE_PATH = os.pathsep.join([str(_PACKAGE.parent), str(_PACKAGE.parents[1] / "trainer-image")])


def source_env(cluster: Cluster, **extra: str) -> dict[str, str]:
    """The cluster's environment (KUBECONFIG, PATH to its binaries) with this checkout first on PYTHONPATH."""
    env = cluster.env()
    env["PYTHONPATH"] = SOURCE_PATH + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra)
    return env


def chart_trainer_security(values: Path = CHART_VALUES) -> dict[str, str]:
    """The operator's trainer security-context environment as the chart renders it from its default values (a
    checkout's charts/kubestill/values.yaml): non-root, read-only root filesystem, no privilege escalation."""
    import yaml

    trainer = yaml.safe_load(values.read_text())["trainer"]
    return {"KUBESTILL_TRAINER_POD_SECURITY_CONTEXT": json.dumps(trainer["podSecurityContext"]),
            "KUBESTILL_TRAINER_SECURITY_CONTEXT": json.dumps(trainer["securityContext"])}


class OperatorProcess:
    """One operator process; `env` is added to the cluster's environment, `unset` names variables removed
    (e.g. image overrides, so the operator uses its defaults: the images kubestill.dev.images builds), `args` are
    added to `kubestill operator`'s command line (e.g. --peering, --priority)."""

    def __init__(self, cluster: Cluster, log_file: Path, env: Mapping[str, str] | None = None,
                 unset: Sequence[str] = (), args: Sequence[str] = ()) -> None:
        self.cluster = cluster
        self.log_file = log_file
        self.env = dict(env or {})
        self.unset = tuple(unset)
        self.args = tuple(args)
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60, wait: bool = True) -> OperatorProcess:
        """Start it and (`wait`) wait_healthy."""
        env = source_env(self.cluster, KUBESTILL_METRICS_PORT=str(self.metrics_port), **self.env)
        for name in self.unset:
            env.pop(name, None)
        code = "import sys; from kubestill.cli import main; sys.exit(main(sys.argv[1:]))"
        argv = [sys.executable, "-c", code, "operator", "--liveness", f"http://127.0.0.1:{self.health_port}/healthz",
                *self.args]
        with open(self.log_file, "ab") as log:
            log.write(f"\n===== operator start {time.strftime('%H:%M:%S')} =====\n".encode())
            self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        return self.wait_healthy(timeout) if wait else self

    def wait_healthy(self, timeout: float = 60) -> OperatorProcess:
        """Until its liveness endpoint answers; RuntimeError if it exits, TimeoutError if never healthy."""
        if self.proc is None:
            raise RuntimeError("wait_healthy before start")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"operator exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=1):
                    return self
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"operator not healthy after {timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM (kopf shuts down gracefully), SIGKILL after 20 s."""
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
        """The operator's own /metrics, as text."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            text: str = resp.read().decode()
            return text

    def log_tail(self, lines: int = 80) -> str:
        if not self.log_file.exists():
            return ""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
