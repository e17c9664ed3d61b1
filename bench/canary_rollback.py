"""Rollback reaction time: from the moment Prometheus fires the candidate's alert to the moment the HTTPRoute
gives the candidate weight 0, over N runs per analysis interval (p50, p99, max), side by side with the bound
the design promises (one analysis interval + 2 s).

Everything is real and local: a kube-apiserver, the operator (kopf subprocess), Debian's Prometheus with a
1 s scrape/evaluation, baseline and candidate tritonservers with the e2e `echo` model, and the load generator
sending traffic by the route's weights. Each run: a CanaryRollout at 50% -> the candidate starts failing ->
Prometheus fires `CandidateErrors` (its activeAt is the firing time) -> we poll the route every 10 ms.

    python bench/canary_rollback.py --runs 20 --intervals 1s,2s
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))

from _canary import echo_repository  # noqa: E402
from kubestill.api.v1alpha1 import parse_duration  # noqa: E402
from kubestill.api.v1alpha1.canaryrollout import BackendRef  # noqa: E402
from kubestill.dev import controlplane  # noqa: E402
from kubestill.dev.loadgen import LoadGenerator, route_reader  # noqa: E402
from kubestill.dev.prometheus import start_prometheus  # noqa: E402
from kubestill.dev.triton import start_tritonserver  # noqa: E402

NS = "bench"
BASE, CAND = BackendRef(name="teacher", port=8000), BackendRef(name="student", port=8000)
RULES = {"groups": [{"name": "bench", "interval": "1s", "rules": [{
    "alert": "CandidateErrors",
    "expr": 'sum(rate(nv_inference_request_failure{job="candidate"}[3s])) > 0',
    "labels": {"service": CAND.name, "severity": "page"},
}]}]}


def get_json(url: str, token: str | None = None, ctx: Any = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), context=ctx, timeout=5) as resp:
        return json.loads(resp.read())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--intervals", default="1s,2s", help="analysis intervals to compare")
    args = parser.parse_args()

    import ssl

    work = Path(tempfile.mkdtemp(prefix="kubestill-bench-rollback-"))
    cluster = controlplane.start(work / "cp", with_controller_manager=False)
    ctx = ssl.create_default_context(cafile=str(cluster.ca_file))
    env = {**cluster.env(), "PYTHONPATH": str(REPO / "operator")}
    results: dict[str, dict[str, list[float]]] = {}
    op: subprocess.Popen[bytes] | None = None
    try:
        cluster.kubectl("create", "namespace", NS)
        route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                 "metadata": {"name": "inference", "namespace": NS},
                 "spec": {"rules": [{"backendRefs": [{"name": BASE.name, "port": 8000, "weight": 100}]}]}}
        cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(route))
        (work / "b").mkdir()
        (work / "c").mkdir()
        control = work / "c" / "control"
        with (
            start_tritonserver(echo_repository(work / "b", work / "b" / "control"), work / "b" / "triton.log") as base,
            start_tritonserver(echo_repository(work / "c", control), work / "c" / "triton.log") as cand,
            start_prometheus({"candidate": [cand.metrics_url.split("//")[1]]}, RULES, workdir=work / "prom") as prom,
        ):
            with open(work / "operator.log", "wb") as out:
                op = subprocess.Popen([sys.executable, "-m", "kopf", "run", "--standalone", "-n", NS, "-m",
                                       "kubestill.main"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True)
            read = route_reader(cluster.server, cluster.token, cluster.ca_file, NS, "inference", 0, BASE, CAND)
            load = LoadGenerator(read, base.http_url, cand.http_url, rate=50, max_seconds=3600).start()
            route_url = f"{cluster.server}/apis/gateway.networking.k8s.io/v1/namespaces/{NS}/httproutes/inference"

            def cand_weight() -> int | None:
                refs = get_json(route_url, cluster.token, ctx)["spec"]["rules"][0]["backendRefs"]
                return next((r.get("weight", 1) for r in refs if r["name"] == CAND.name), None)

            for interval in args.intervals.split(","):
                series: dict[str, list[float]] = {"alert->weight0": [], "failure->alert": [],
                                                  "failure->weight0": []}
                results[interval] = series
                for run in range(args.runs):
                    name = f"r-{interval}-{run}"
                    for measure, seconds in _measure_rollback(cluster, name, interval, prom.url, control,
                                                              cand_weight, work).items():
                        series[measure].append(seconds)
                    print(f"{name}: alert->weight0 {series['alert->weight0'][-1]:.3f}s", file=sys.stderr)
            load.stop()
    finally:
        if op is not None and op.poll() is None:
            os.killpg(op.pid, signal.SIGTERM)
            op.wait(timeout=15)
        controlplane.stop(cluster)

    print(f"\nRollback reaction over {args.runs} runs per interval (seconds; machine: {os.cpu_count()} cores)\n")
    header = f"| {'analysis interval':<17} | {'measure':<17} | {'p50':>6} | {'p99':>6} | {'max':>6} | {'bound':>6} |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for interval, series in results.items():
        bound = parse_duration(interval).total_seconds() + 2
        for measure, values in series.items():
            shown = f"{bound:.1f}" if measure == "alert->weight0" else ""
            print(f"| {interval:<17} | {measure:<17} | {statistics.median(values):>6.3f} | "
                  f"{percentile(values, 99):>6.3f} | {max(values):>6.3f} | {shown:>6} |")
    return 0



def _measure_rollback(cluster: controlplane.Cluster, name: str, interval: str, prom_url: str, control: Path,
                      cand_weight: Callable[[], int | None], work: Path) -> dict[str, float]:
    """One rollout to 50%, then the candidate fails: seconds from the failure to the alert, from the alert to
    weight 0 and from the failure to weight 0. Leaves no alert firing for the next run."""
    spec = {"route": {"name": "inference"}, "baseline": {"name": BASE.name, "port": 8000},
            "candidate": {"service": {"name": CAND.name, "port": 8000}},
            "steps": [{"weight": 50, "pause": "1h"}],
            "analysis": {"prometheusUrl": prom_url, "interval": interval},
            "rollbackAlerts": [{"labels": {"service": "{{candidate}}"}}]}
    manifest = {"apiVersion": "kubestill.io/v1alpha1", "kind": "CanaryRollout",
                "metadata": {"name": name, "namespace": NS}, "spec": spec}
    cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(manifest))
    deadline = time.monotonic() + 60
    while cand_weight() != 50:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name}: never reached 50%; see {work / 'operator.log'}")
        time.sleep(0.05)
    time.sleep(1.5)
    failed_at = time.time()
    control.write_text("fail")
    while cand_weight() != 0:
        if time.time() - failed_at > 30:
            raise RuntimeError(f"{name}: no rollback; see {work / 'operator.log'}")
        time.sleep(0.01)
    zero_at = time.time()
    alerts = get_json(prom_url + "/api/v1/alerts")["data"]["alerts"]
    active = [a for a in alerts if a["labels"].get("alertname") == "CandidateErrors"]
    fired_at = datetime.fromisoformat(active[0]["activeAt"][:26].rstrip("Z") + "+00:00").timestamp()
    measured = {"alert->weight0": zero_at - fired_at, "failure->alert": fired_at - failed_at,
                "failure->weight0": zero_at - failed_at}
    control.write_text("ok")
    cluster.kubectl("delete", "canaryrollout", name, "-n", NS, "--wait=false")
    while any(a["labels"].get("alertname") == "CandidateErrors"
              for a in get_json(prom_url + "/api/v1/alerts")["data"]["alerts"]):
        time.sleep(0.2)
    return measured


if __name__ == "__main__":
    sys.exit(main())
