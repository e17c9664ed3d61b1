"""Live agreement decisions: Wald's SPRT (`spec.analysis.sequential`) against the fixed-window agreement analysis
(`agreement.minRate` over `window`, judged every interval), on the same CanaryRollout (issue #17, bench (b)).

Everything is real and local, as in tests/e2e/canary/test_canary_agreement_e2e.py: a kube-apiserver, the
operator (a host process), baseline and candidate tritonservers with the e2e `echo` model, a `kubestill judge`
process started with the settings of the Deployment the operator creates for the rollout (no node runs Pods
here), Debian's Prometheus scraping it every second with the labels a kubernetes-pods job gives the judge's Pod,
and the load generator standing in for the gateway: it splits requests by the route's weights and mirrors
`samplePercent` % of them to the judge when the route says so.

Two candidates: a good one (the baseline's model: agrees on every request unless --good-disagree) and a bad one
that serves fine but answers differently on --bad-disagree of the texts (the echo model's `wrong:<fraction>`).
Each is rolled out twice, in a namespace of its own: with `sequential` (SPRT) and with the fixed window only.
The rollout: a shadow step, then one weighted step, both with a pause; the fixed-window analysis can only promote
when the pauses end, the SPRT ends a step early once it accepts (after minPause).

Per run, at the first status poll (every 0.2 s) that shows Promoted or RolledBack: the decision, seconds from
applying the rollout, requests mirrored to the judge, samples the judge compared (agree + disagree, its own
/metrics), and live requests the candidate served.

    python bench/agreement_live.py --rate 40 --shadow-pause 60s --step-pause 60s
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))

from _canary import echo_repository  # noqa: E402
from kubestill.api.v1alpha1.canaryrollout import BackendRef, CanaryRolloutSpec  # noqa: E402
from kubestill.api.v1alpha1.common import Task  # noqa: E402
from kubestill.builders.judge import judge_backend  # noqa: E402
from kubestill.dev import controlplane  # noqa: E402
from kubestill.dev.judge_process import start_judge  # noqa: E402
from kubestill.dev.kubeapi import KubeAPI  # noqa: E402
from kubestill.dev.loadgen import LoadGenerator, route_reader  # noqa: E402
from kubestill.dev.operator_process import OperatorProcess  # noqa: E402
from kubestill.dev.polling import wait_for  # noqa: E402
from kubestill.dev.prometheus import start_prometheus  # noqa: E402
from kubestill.dev.triton import TritonProcess, start_tritonserver  # noqa: E402
from kubestill.handlers.canary_judge import judge_settings  # noqa: E402

BASE, CAND = BackendRef(name="teacher", port=8000), BackendRef(name="student", port=8000)
ROUTE, ROLLOUT = "inference", "agreement"
DECIDED = ("Promoted", "RolledBack")


@dataclass(frozen=True)
class Run:
    """One rollout's outcome, measured at the first poll that saw it decided."""

    candidate: str
    analysis: str
    decision: str
    seconds: float
    mirrored: int
    compared: int
    live: int
    decided_by: str
    message: str


@dataclass(frozen=True)
class Stack:
    cluster: controlplane.Cluster
    kube: KubeAPI
    baseline: TritonProcess
    candidate: TritonProcess
    control: Path
    work: Path


def rollout_spec(args: argparse.Namespace, prometheus_url: str, sequential: bool) -> dict[str, Any]:
    """The CanaryRollout both analyses run: shadow, then one weighted step, agreement judged every interval."""
    analysis: dict[str, Any] = {
        "prometheusUrl": prometheus_url, "interval": args.interval, "inconclusiveLimit": 60,
        "failureLimit": args.failure_limit,
        "agreement": {"minRate": args.target, "task": "classification", "samplePercent": args.sample_percent,
                      "maxBaselineRps": args.max_baseline_rps, "window": args.window},
    }
    if sequential:
        analysis["sequential"] = {"delta": args.delta, "alpha": args.alpha, "beta": args.beta,
                                  "minPause": args.min_pause}
    return {"route": {"name": ROUTE}, "baseline": {"name": BASE.name, "port": BASE.port},
            "candidate": {"service": {"name": CAND.name, "port": CAND.port}},
            "shadow": {"percent": 100, "pause": args.shadow_pause},
            "steps": [{"weight": args.step_weight, "pause": args.step_pause}],
            "analysis": analysis, "promotion": {"keepBaselineFor": "0s"}}


def route_manifest(namespace: str) -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": ROUTE, "namespace": namespace},
            "spec": {"parentRefs": [{"name": "gateway"}], "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": "/v2/models/echo"}}],
                "backendRefs": [{"name": BASE.name, "port": BASE.port, "weight": 100}]}]}}


def compared(metrics_port: int) -> int:
    """agree + disagree samples the judge counted so far (its kubestill_judge_samples_total)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:
        lines = resp.read().decode().splitlines()
    return round(sum(float(line.rsplit(" ", 1)[1]) for line in lines
                     if line.startswith("kubestill_judge_samples_total{")))


@contextmanager
def judge_and_prometheus(stack: Stack, namespace: str, spec: dict[str, Any]) -> Iterator[tuple[Any, Any]]:
    """The rollout's judge, with the settings its Deployment would carry (local URLs), and a Prometheus scraping
    it as `service=<rollout>-judge` in `namespace` (and nothing else: only agreement is analysed)."""
    parsed = CanaryRolloutSpec.model_validate(spec)
    settings = dataclasses.replace(judge_settings(parsed, namespace, CAND, Task.CLASSIFICATION),
                                   baseline=stack.baseline.http_url, candidate=stack.candidate.http_url)
    work = stack.work / namespace
    work.mkdir()
    with start_judge(settings, work / "judge.log") as judge:
        scrape = {"job_name": "judge", "static_configs": [{"targets": [f"127.0.0.1:{judge.metrics_port}"], "labels": {
            "namespace": namespace, "service": judge_backend(ROLLOUT).name}}]}
        with start_prometheus({}, workdir=work / "prometheus", scrape_configs=[scrape]) as prom:
            up = f"{prom.url}/api/v1/query?query=" + urllib.parse.quote('up{job="judge"} == 1')
            wait_for(lambda: b'"value"' in urllib.request.urlopen(up, timeout=5).read(), 60,
                     "Prometheus scraping the judge", interval=0.3)
            yield judge, prom


def run_one(args: argparse.Namespace, stack: Stack, index: int, candidate: str, sequential: bool) -> Run:
    """Roll `candidate` (good | bad) out in a fresh namespace with one analysis; measure to the decision."""
    namespace = f"agree-{index}"
    stack.control.write_text("ok" if candidate == "good" and not args.good_disagree
                             else f"wrong:{args.good_disagree if candidate == 'good' else args.bad_disagree}")
    stack.cluster.kubectl("create", "namespace", namespace)
    stack.cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(route_manifest(namespace)))
    placeholder = rollout_spec(args, "http://127.0.0.1:1", sequential)
    with judge_and_prometheus(stack, namespace, placeholder) as (judge, prom):
        read = route_reader(stack.cluster.server, stack.cluster.token, stack.cluster.ca_file, namespace, ROUTE, 0,
                            BASE, CAND, judge_backend(ROLLOUT))
        load = LoadGenerator(read, stack.baseline.http_url, stack.candidate.http_url, rate=args.rate,
                             max_seconds=args.timeout + 30, mirror_url=judge.url).start()
        try:
            manifest = {"apiVersion": "kubestill.io/v1alpha1", "kind": "CanaryRollout",
                        "metadata": {"name": ROLLOUT, "namespace": namespace},
                        "spec": rollout_spec(args, prom.url, sequential)}
            started = time.monotonic()
            stack.cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(manifest))
            path = f"/apis/kubestill.io/v1alpha1/namespaces/{namespace}/canaryrollouts/{ROLLOUT}"
            status = wait_for(lambda: _decided(stack.kube.get(path) or {}), args.timeout, f"{namespace} decided", 0.2)
            seconds, mirrored, tally = time.monotonic() - started, load.judge_mirrored, load.snapshot()["candidate"]
            samples = compared(judge.metrics_port)
        finally:
            load.stop()
    return Run(candidate, "SPRT" if sequential else "fixed window", status["phase"], seconds, mirrored, samples,
               tally.ok + tally.failed, decided_by(status), status.get("message", ""))


def _decided(rollout: dict[str, Any]) -> dict[str, Any]:
    """The rollout's status once Promoted or RolledBack; {} (keep polling) before."""
    status: dict[str, Any] = rollout.get("status") or {}
    return status if status.get("phase") in DECIDED else {}


def decided_by(status: dict[str, Any]) -> str:
    """Which rule ended the rollout, from its message and history: the SPRT (a rejection, or acceptances that
    ended steps early), a failed minRate round, or the pauses running out."""
    if status["phase"] == "RolledBack":
        return "SPRT reject" if "SPRT" in status.get("message", "") else "minRate round failed"
    early = sum("passed early" in h.get("reason", "") for h in status.get("history", []))
    return f"SPRT accept, {early} step(s) early" if early else "pauses ran out"


def settings_note(args: argparse.Namespace) -> str:
    return (f"target (minRate) {args.target}, delta {args.delta}, alpha {args.alpha}, beta {args.beta} (SPRT "
            f"only), minPause {args.min_pause}; samplePercent {args.sample_percent}, maxBaselineRps "
            f"{args.max_baseline_rps}, {args.rate:g} requests/s, window {args.window}, interval {args.interval}, "
            f"failureLimit {args.failure_limit}; shadow pause {args.shadow_pause}, then {args.step_weight}% for "
            f"{args.step_pause}; "
            f"good candidate disagrees on {args.good_disagree:.0%} of texts, bad on {args.bad_disagree:.0%}")


def print_table(runs: list[Run], args: argparse.Namespace) -> None:
    print("\n| candidate | analysis | decision | decided by | time to decision (s) | mirrored to the judge "
          "| compared samples | live requests to the candidate |")
    print("|---|---|---|---|---:|---:|---:|---:|")
    for r in runs:
        print(f"| {r.candidate} | {r.analysis} | {r.decision} | {r.decided_by} | {r.seconds:.1f} | {r.mirrored} "
              f"| {r.compared} | {r.live} |")
    print(f"\nSettings: {settings_note(args)}.\n")
    for r in runs:
        print(f"- {r.candidate}, {r.analysis}: {r.message}")


@contextmanager
def local_stack(work: Path) -> Iterator[Stack]:
    """A control plane, the operator and the two tritonservers, stopped on exit."""
    cluster = controlplane.start(work / "cp", with_controller_manager=False)
    operator = OperatorProcess(cluster, work / "operator.log").start()
    try:
        (work / "b").mkdir()
        (work / "c").mkdir()
        control = work / "c" / "control"
        with (
            start_tritonserver(echo_repository(work / "b", work / "b" / "ctl"), work / "b" / "triton.log") as base,
            start_tritonserver(echo_repository(work / "c", control), work / "c" / "triton.log") as cand,
        ):
            yield Stack(cluster, KubeAPI(cluster.kubeconfig), base, cand, control, work)
    finally:
        operator.stop()
        controlplane.stop(cluster)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", type=float, default=0.95, help="agreement.minRate")
    parser.add_argument("--delta", type=float, default=0.02)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--beta", type=float, default=0.05)
    parser.add_argument("--min-pause", default="3s", help="sequential.minPause")
    parser.add_argument("--sample-percent", type=int, default=100)
    parser.add_argument("--max-baseline-rps", type=float, default=100.0)
    parser.add_argument("--rate", type=float, default=40.0, help="requests per second through the 'gateway'")
    parser.add_argument("--window", default="1m", help="agreement.window (1m at least)")
    parser.add_argument("--interval", default="1s", help="analysis.interval")
    parser.add_argument("--failure-limit", type=int, default=0, help="analysis.failureLimit (failed rounds "
                        "tolerated per step)")
    parser.add_argument("--shadow-pause", default="60s")
    parser.add_argument("--step-weight", type=int, default=50)
    parser.add_argument("--step-pause", default="60s")
    parser.add_argument("--good-disagree", type=float, default=0.0, help="share of texts the good one gets wrong")
    parser.add_argument("--bad-disagree", type=float, default=0.10, help="share of texts the bad one gets wrong")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds a rollout may take to decide")
    args = parser.parse_args()

    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="kubestill-bench-agreement-") as tmp, local_stack(Path(tmp)) as stack:
        for candidate in ("good", "bad"):
            for sequential in (True, False):
                runs.append(run_one(args, stack, len(runs), candidate, sequential))
                print(f"{runs[-1]}", file=sys.stderr)
    print_table(runs, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
