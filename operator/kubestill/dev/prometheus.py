"""Prometheus as a plain local process with our own config, rules and temporary storage.

For tests, benchmarks and `kubestill dev`: scrape and rule evaluation every second, so an alert on the
candidate's failures fires about a second after they start. Two binaries, one per need:
- Debian's `prometheus` (`apt-get install -y prometheus`; the system service is not used) for static targets;
- upstream Prometheus built from its Go module (tests/cluster/prometheus/build.sh) where targets are discovered
  with `kubernetes_sd_configs`, as users run it: Debian removed Kubernetes service discovery from its build
  (NEWS.Debian, 1.5.0+ds-1: the client library is not packaged), so its promtool rejects such a config.
"""

from __future__ import annotations

import os
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

from .controlplane import REPO_ROOT, default_bin_dir

DEFAULT_BINARY = "prometheus"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


BUILD_SCRIPT = REPO_ROOT / "tests" / "cluster" / "prometheus" / "build.sh"


def find_prometheus(kubernetes_sd: bool = False) -> str:
    """The prometheus binary: Debian's, or with `kubernetes_sd` the upstream build (built now when the build
    script of a checkout is there and its stamp is stale). RuntimeError saying how to get it otherwise."""
    if kubernetes_sd:
        return _upstream_prometheus()
    found = shutil.which(DEFAULT_BINARY)
    if found is None:
        raise RuntimeError("prometheus not found on PATH: apt-get install -y prometheus")
    return found


def _upstream_prometheus() -> str:
    target = default_bin_dir()
    if BUILD_SCRIPT.exists():
        env = {**os.environ, "KUBESTILL_BIN_DIR": str(target)}
        out = subprocess.run(["bash", str(BUILD_SCRIPT)], env=env, check=True, text=True, stdout=subprocess.PIPE)
        return out.stdout.strip().splitlines()[-1]
    if not (target / "prometheus").exists():
        raise RuntimeError(f"prometheus (upstream, with Kubernetes discovery) not found in {target}: build it with "
                           "tests/cluster/prometheus/build.sh")
    return str(target / "prometheus")


def kubernetes_pods_job(job: str, kubeconfig: Path, namespaces: Sequence[str] = ()) -> dict[str, object]:
    """A scrape config discovering Pods through the API server (`kubernetes_sd_configs`, role pod) and keeping
    those annotated `prometheus.io/scrape: "true"`, scraped at the Pod's IP on its `prometheus.io/port`
    annotation (the convention of Prometheus' example config, which the Triton Pods and the operator's chart
    follow), with `namespace`, `pod` and `service` (the app.kubernetes.io/instance label) as target labels.
    `namespaces` empty: all of them."""
    sd: dict[str, object] = {"role": "pod", "kubeconfig_file": str(kubeconfig)}
    if namespaces:
        sd["namespaces"] = {"names": list(namespaces)}
    meta = "__meta_kubernetes_pod_"
    return {
        "job_name": job,
        "kubernetes_sd_configs": [sd],
        "relabel_configs": [
            {"source_labels": [f"{meta}annotation_prometheus_io_scrape"], "action": "keep", "regex": "true"},
            {"source_labels": [f"{meta}phase"], "action": "keep", "regex": "Running"},
            {"source_labels": [f"{meta}ip", f"{meta}annotation_prometheus_io_port"], "action": "replace",
             "regex": "(.+);(\\d+)", "replacement": "$1:$2", "target_label": "__address__"},
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": [f"{meta}name"], "target_label": "pod"},
            {"source_labels": [f"{meta}label_app_kubernetes_io_instance"], "target_label": "service"},
        ],
    }


def render_config(
    jobs: Mapping[str, Sequence[str]], rule_files: Sequence[str], interval: str = "1s",
    scrape_configs: Sequence[Mapping[str, object]] = (),
) -> dict[str, object]:
    """A prometheus.yml: one scrape job per entry of `jobs` (name -> host:port targets), then `scrape_configs`
    as given (e.g. kubernetes_pods_job)."""
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
        "rule_files": list(rule_files),
        "scrape_configs": [
            {"job_name": name, "static_configs": [{"targets": list(targets)}]} for name, targets in jobs.items()
        ] + [dict(c) for c in scrape_configs],
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
    scrape_configs: Sequence[Mapping[str, object]] = (),
) -> PrometheusProcess:
    """Start Prometheus scraping `jobs` and `scrape_configs` with `rules` (a rules-file document:
    {"groups": [...]}) and wait until it answers /-/ready. A scrape config with `kubernetes_sd_configs` needs
    (and gets) the upstream build."""
    binary = find_prometheus(kubernetes_sd=any("kubernetes_sd_configs" in c for c in scrape_configs))
    owns = workdir is None
    work = Path(tempfile.mkdtemp(prefix="kubestill-prom-")) if workdir is None else workdir
    work.mkdir(parents=True, exist_ok=True)
    rule_files = []
    if rules is not None:
        (work / "rules.yml").write_text(yaml.safe_dump(dict(rules), sort_keys=False))
        rule_files.append(str(work / "rules.yml"))
    config = render_config(jobs, rule_files, interval, scrape_configs)
    (work / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
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
