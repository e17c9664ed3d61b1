"""Many CanaryRollouts at once: how long one evaluation round of all of them takes, and the operator's RSS.

Real and local: a kube-apiserver, the operator (kopf subprocess, one process), Debian's Prometheus. For each
N: N HTTPRoutes and N CanaryRollouts (each on its own route; analysis every --interval with one Prometheus
query and a rollback-alert check) are created at once. Reported side by side per N:

- start-up round: from the first create until every rollout is Progressing with its route weight applied;
- steady rounds: over --window seconds, how often each rollout was actually analysed (period p50/p99 against
  the configured interval: a period near the interval means the operator keeps up), the operator's mean
  evaluation time (its own kubestill_canary_reconcile_duration_seconds) and its CPU use;
- operator RSS before, after start-up and at the end.

    python bench/canary_scale.py --counts 100,1000 --interval 10s --window 60
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))

from kubestill.dev import controlplane  # noqa: E402
from kubestill.dev.controlplane import free_port  # noqa: E402
from kubestill.dev.prometheus import start_prometheus  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def measurement_counts(port: int, namespace: str) -> dict[str, float]:
    """kubestill_canary_measurements_total per rollout (all results; one metric per round here)."""
    counts: dict[str, float] = {}
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("kubestill_canary_measurements_total{") and f'namespace="{namespace}"' in line:
                name = line.split('name="', 1)[1].split('"', 1)[0]
                counts[name] = counts.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))] if ordered else float("nan")


def manifests(ns: str, n: int, prom: str, interval: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(n):
        out.append({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                    "metadata": {"name": f"route-{i}", "namespace": ns},
                    "spec": {"rules": [{"backendRefs": [{"name": f"teacher-{i}", "port": 8000, "weight": 100}]}]}})
    for i in range(n):
        out.append({"apiVersion": "kubestill.io/v1alpha1", "kind": "CanaryRollout",
                    "metadata": {"name": f"rollout-{i}", "namespace": ns},
                    "spec": {"route": {"name": f"route-{i}"}, "baseline": {"name": f"teacher-{i}", "port": 8000},
                             "candidate": {"service": {"name": f"student-{i}", "port": 8000}},
                             "steps": [{"weight": 10, "pause": "1h"}, {"weight": 50, "pause": "1h"}],
                             "analysis": {"prometheusUrl": prom, "interval": interval,
                                          "metrics": [{"name": "errors", "query": "vector(0.001)", "max": 0.01}]},
                             "rollbackAlerts": [{"labels": {"service": "{{candidate}}"}}]}})
    return out


def run_one(cluster: controlplane.Cluster, n: int, prom: str, interval: str, window: float,
            work: Path) -> dict[str, float]:
    ns = f"scale-{n}"
    cluster.kubectl("create", "namespace", ns)
    port = free_port()
    env = {**cluster.env(), "PYTHONPATH": str(REPO / "operator"), "KUBESTILL_METRICS_PORT": str(port)}
    ctx = ssl.create_default_context(cafile=str(cluster.ca_file))
    list_url = f"{cluster.server}/apis/kubestill.io/v1alpha1/namespaces/{ns}/canaryrollouts"

    def rollouts() -> list[dict[str, Any]]:
        req = urllib.request.Request(list_url, headers={"Authorization": f"Bearer {cluster.token}"})
        with urllib.request.urlopen(req, context=ctx, timeout=60) as resp:
            items: list[dict[str, Any]] = json.loads(resp.read())["items"]
            return items

    with open(work / f"operator-{n}.log", "wb") as out:
        op = subprocess.Popen([sys.executable, "-m", "kopf", "run", "--standalone", "-n", ns, "-m", "kubestill.main"],
                              env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        time.sleep(3)
        row: dict[str, float] = {"rss_idle_mb": rss_mb(op.pid)}
        docs = manifests(ns, n, prom, interval)
        started = time.monotonic()
        for chunk in range(0, len(docs), 250):
            cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(docs[chunk:chunk + 250]),
                            timeout=600)
        row["create_s"] = time.monotonic() - started
        while True:
            items = rollouts()
            ready = sum(1 for r in items if (r.get("status") or {}).get("phase") == "Progressing")
            if ready == n:
                break
            if time.monotonic() - started > 900:
                raise RuntimeError(f"only {ready}/{n} Progressing after 900 s; see {work}")
            time.sleep(1)
        row["startup_round_s"] = time.monotonic() - started
        row["rss_started_mb"] = rss_mb(op.pid)

        # Rounds actually taken per rollout, from the operator's own counter (status holds a healthy step's
        # routine rounds back for up to 30 s, so lastAnalysisAt would under-count them).
        before = measurement_counts(port, ns)
        cpu0, t0 = cpu_seconds(op.pid), time.monotonic()
        sum0 = scrape(port, "kubestill_canary_reconcile_duration_seconds_sum")
        count0 = scrape(port, "kubestill_canary_reconcile_duration_seconds_count")
        time.sleep(window)
        elapsed = time.monotonic() - t0
        after = measurement_counts(port, ns)
        row["cpu_percent"] = 100 * (cpu_seconds(op.pid) - cpu0) / elapsed
        evals = scrape(port, "kubestill_canary_reconcile_duration_seconds_count") - count0
        busy = scrape(port, "kubestill_canary_reconcile_duration_seconds_sum") - sum0
        row["evals_per_s"] = evals / elapsed
        row["eval_ms_mean"] = 1000 * busy / evals if evals else float("nan")
        rounds = [after.get(name, 0.0) - before.get(name, 0.0) for name in after]
        periods = [elapsed / r if r > 0 else float("inf") for r in rounds]
        row["period_p50_s"] = statistics.median(periods) if periods else float("nan")
        row["period_p99_s"] = percentile(periods, 99)
        row["analysed_rollouts"] = float(sum(1 for r in rounds if r > 0))
        row["rss_end_mb"] = rss_mb(op.pid)
        return row
    finally:
        os.killpg(op.pid, signal.SIGTERM)
        try:
            op.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(op.pid, signal.SIGKILL)
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", default="100,1000")
    parser.add_argument("--interval", default="10s")
    parser.add_argument("--window", type=float, default=60.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kubestill-bench-scale-"))
    cluster = controlplane.start(work / "cp", with_controller_manager=False)
    rows: dict[int, dict[str, float]] = {}
    try:
        with start_prometheus({}, None, workdir=work / "prom") as prom:
            for n in (int(c) for c in args.counts.split(",")):
                rows[n] = run_one(cluster, n, prom.url, args.interval, args.window, work)
                print(f"N={n}: {rows[n]}", file=sys.stderr)
    finally:
        controlplane.stop(cluster)
    labels = {
        "create_s": "create N routes + N rollouts (s)",
        "startup_round_s": "start-up round: all Progressing (s)",
        "period_p50_s": f"analysis period p50 (s; interval {args.interval})",
        "period_p99_s": "analysis period p99 (s)",
        "analysed_rollouts": "rollouts analysed in the window",
        "evals_per_s": "evaluations per second",
        "eval_ms_mean": "mean evaluation time (ms, incl. awaits)",
        "cpu_percent": "operator CPU (% of one core)",
        "rss_idle_mb": "operator RSS idle (MB)",
        "rss_started_mb": "operator RSS after start-up (MB)",
        "rss_end_mb": "operator RSS at the end (MB)",
    }
    counts = list(rows)
    print(f"\nCanaryRollouts at scale ({os.cpu_count()} cores, one operator process, window {args.window:.0f} s)\n")
    print(f"| {'measure':<44} | " + " | ".join(f"N={n:>6}" for n in counts) + " |")
    print(f"|{'-' * 46}|" + "|".join("-" * 10 for _ in counts) + "|")
    for key, label in labels.items():
        print(f"| {label:<44} | " + " | ".join(f"{rows[n][key]:>8.1f}" for n in counts) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
