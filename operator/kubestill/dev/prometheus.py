"""Debian's `prometheus` as a plain local process with our own config, rules and temporary storage.

For tests, benchmarks and `kubestill dev`: scrape and rule evaluation every second, so an alert on the
candidate's failures fires about a second after they start. `apt-get install -y prometheus` provides the
binary (the system service is not used).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import yaml

DEFAULT_BINARY = "prometheus"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def find_prometheus() -> str:
    """The prometheus binary, or a RuntimeError saying how to install it."""
    found = shutil.which(DEFAULT_BINARY)
    if found is None:
        raise RuntimeError("prometheus not found on PATH: apt-get install -y prometheus")
    return found


def render_config(
    jobs: Mapping[str, Sequence[str]], rule_files: Sequence[str], interval: str = "1s"
) -> dict[str, object]:
    """A prometheus.yml: one scrape job per entry of `jobs` (name -> host:port targets)."""
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
        "rule_files": list(rule_files),
        "scrape_configs": [
            {"job_name": name, "static_configs": [{"targets": list(targets)}]} for name, targets in jobs.items()
        ],
    }


@dataclass
class PrometheusProcess:
    """A running Prometheus; `url` is its HTTP API. Stop it with stop() or use it as a context manager."""

    url: str
    port: int
    workdir: Path
    process: subprocess.Popen[bytes]
    owns_workdir: bool = True
    log_path: Path = field(default_factory=Path)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def reload(self) -> None:
        """Re-read the config and rules (POST /-/reload; started with --web.enable-lifecycle)."""
        req = urllib.request.Request(self.url + "/-/reload", method="POST")
        with urllib.request.urlopen(req, timeout=5):
            pass

    def __enter__(self) -> PrometheusProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_prometheus(
    jobs: Mapping[str, Sequence[str]],
    rules: Mapping[str, object] | None = None,
    *,
    interval: str = "1s",
    workdir: Path | None = None,
    port: int | None = None,
    timeout: float = 30.0,
) -> PrometheusProcess:
    """Start Prometheus scraping `jobs` with `rules` (a rules-file document: {"groups": [...]}) and wait
    until it answers /-/ready."""
    binary = find_prometheus()
    owns = workdir is None
    work = Path(tempfile.mkdtemp(prefix="kubestill-prom-")) if workdir is None else workdir
    work.mkdir(parents=True, exist_ok=True)
    rule_files = []
    if rules is not None:
        (work / "rules.yml").write_text(yaml.safe_dump(dict(rules), sort_keys=False))
        rule_files.append(str(work / "rules.yml"))
    (work / "prometheus.yml").write_text(yaml.safe_dump(render_config(jobs, rule_files, interval), sort_keys=False))
    port = port or _free_port()
    log_path = work / "prometheus.log"
    argv = [
        binary,
        f"--config.file={work / 'prometheus.yml'}",
        f"--storage.tsdb.path={work / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
        "--storage.tsdb.retention.time=1h",
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=work, start_new_session=True)
    running = PrometheusProcess(f"http://127.0.0.1:{port}", port, work, proc, owns, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            running.stop()
            raise RuntimeError(f"prometheus exited with {proc.returncode}: {tail}")
        try:
            with urllib.request.urlopen(running.url + "/-/ready", timeout=1) as resp:
                if resp.status == 200:
                    return running
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    running.stop()
    raise RuntimeError(f"prometheus not ready after {timeout}s; log: {log_path}")
