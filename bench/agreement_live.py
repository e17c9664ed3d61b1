"""Live agreement decisions: Wald's SPRT (`spec.analysis.sequential`) against the fixed-window agreement analysis
(`agreement.minRate` over `window`, judged every interval), on the same CanaryRollout (issue #17, bench (b)).

Everything is real and local (tests/realnode/test_canary_agreement.py decides the same on real Pods): a kube-
apiserver, the operator (a host process), tritonservers for the baseline and the candidates, a `kubestill judge`
process started with the settings of the Deployment the operator creates for the rollout (no node runs Pods here),
Debian's Prometheus scraping it every second with the labels a kubernetes-pods job gives the judge's Pod, and the
load generator standing in for the gateway: it splits requests by the route's weights and mirrors `samplePercent` %
of them to the judge when the route says so.

--models real (the default): the baseline is a real teacher, MiniLM-L6 with a head fitted on BBC News titles,
exported by the trainer and served as a StudentModel serves it; the good candidate is a student distilled from it
by the trainer as the demo's is (2 layers cut from the teacher, logit-kl); the bad one is the same recipe trained
on the train rows' labels shuffled with a fixed seed (bench/_agreement_models.py; cached under
~/.cache/kubestill/bench/, the first run trains for minutes). Requests carry the dataset's held-out titles, as
Triton v2 bodies. Before the rollouts, each candidate's offline agreement with the teacher on those same titles
(both models in-process) is printed, to check the live figure against.

--models echo (quick): the e2e `echo` model; the good candidate is the baseline's own model (agrees on every
request unless --good-disagree), the bad one answers differently on --bad-disagree of the texts.

Each candidate is rolled out twice, in a namespace of its own: with `sequential` (SPRT) and with the fixed window
only. The rollout: a shadow step, then one weighted step, both with a pause; the fixed-window analysis can only
promote when the pauses end, the SPRT ends a step early once it accepts (after minPause).

Per run, at the first status poll (every 0.2 s) that shows Promoted or RolledBack: the decision, seconds from
applying the rollout, requests mirrored to the judge, samples the judge compared and the share that agreed (its
own /metrics), and live requests the candidate served.

    python bench/agreement_live.py
    python bench/agreement_live.py --models echo --rate 40 --shadow-pause 60s --step-pause 60s
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

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
CANDIDATES = ("good", "bad")
# Per --models: target (minRate) and delta when not given. Real: the good student agrees with its teacher on 0.888
# of the held-out titles offline, the shuffled one on 0.202 (printed by every run). Target 0.80 is that 0.888 less
# two standard errors of a 50-sample window (2 * sqrt(0.888 * 0.112 / 50) = 0.09), so even a short fixed window of
# the good student rarely reads below it; delta 0.05 puts H1 (<= 0.75) far above the shuffled student.
DEFAULTS = {"real": (0.80, 0.05), "echo": (0.95, 0.02)}


@dataclass(frozen=True)
class Run:
    """One rollout's outcome, measured at the first poll that saw it decided."""

    candidate: str
    analysis: str
    decision: str
    seconds: float
    mirrored: int
    compared: int
    agreed: int
    live: int
    decided_by: str
    message: str


@dataclass(frozen=True)
class Served:
    """What the rollouts serve: the Triton model name both sides serve, the texts clients send (empty: the load
    generator's "request <n>"), each candidate's description and offline agreement with the baseline (None: not
    measured)."""

    model: str
    texts: Sequence[str]
    described: dict[str, str]
    offline: dict[str, float | None]


@dataclass(frozen=True)
class Stack:
    cluster: controlplane.Cluster
    kube: KubeAPI
    baseline: TritonProcess
    candidates: dict[str, TritonProcess]
    served: Served
    work: Path
    control: Path | None = None  # echo: the candidate's control file, written per candidate

    def prepare(self, candidate: str, args: argparse.Namespace) -> TritonProcess:
        """The candidate's tritonserver, told how to behave when it is the echo model."""
        if self.control is not None:
            share = args.good_disagree if candidate == "good" else args.bad_disagree
            self.control.write_text(f"wrong:{share}" if share else "ok")
        return self.candidates[candidate]


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


def route_manifest(namespace: str, model: str) -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": ROUTE, "namespace": namespace},
            "spec": {"parentRefs": [{"name": "gateway"}], "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": f"/v2/models/{model}"}}],
                "backendRefs": [{"name": BASE.name, "port": BASE.port, "weight": 100}]}]}}


def judged(metrics_port: int) -> tuple[int, int]:
    """(agree, agree + disagree): the samples the judge counted so far (its kubestill_judge_samples_total)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    counts = {"agree": 0.0, "disagree": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "kubestill_judge_samples_total":
                counts[sample.labels["result"]] += sample.value
    return round(counts["agree"]), round(counts["agree"] + counts["disagree"])


@contextmanager
def judge_and_prometheus(stack: Stack, candidate: TritonProcess, namespace: str,
                         spec: dict[str, Any]) -> Iterator[tuple[Any, Any]]:
    """The rollout's judge, with the settings its Deployment would carry (local URLs), and a Prometheus scraping
    it as `service=<rollout>-judge` in `namespace` (and nothing else: only agreement is analysed)."""
    parsed = CanaryRolloutSpec.model_validate(spec)
    settings = dataclasses.replace(judge_settings(parsed, namespace, CAND, Task.CLASSIFICATION),
                                   baseline=stack.baseline.http_url, candidate=candidate.http_url)
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
    server = stack.prepare(candidate, args)
    stack.cluster.kubectl("create", "namespace", namespace)
    stack.cluster.kubectl("apply", "--server-side", "-f", "-",
                          input=yaml.safe_dump(route_manifest(namespace, stack.served.model)))
    placeholder = rollout_spec(args, "http://127.0.0.1:1", sequential)
    with judge_and_prometheus(stack, server, namespace, placeholder) as (judge, prom):
        read = route_reader(stack.cluster.server, stack.cluster.token, stack.cluster.ca_file, namespace, ROUTE, 0,
                            BASE, CAND, judge_backend(ROLLOUT))
        load = LoadGenerator(read, stack.baseline.http_url, server.http_url, model=stack.served.model,
                             texts=stack.served.texts, rate=args.rate, max_seconds=args.timeout + 30,
                             mirror_url=judge.url).start()
        try:
            manifest = {"apiVersion": "kubestill.io/v1alpha1", "kind": "CanaryRollout",
                        "metadata": {"name": ROLLOUT, "namespace": namespace},
                        "spec": rollout_spec(args, prom.url, sequential)}
            started = time.monotonic()
            stack.cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(manifest))
            path = f"/apis/kubestill.io/v1alpha1/namespaces/{namespace}/canaryrollouts/{ROLLOUT}"
            status = wait_for(lambda: _decided(stack.kube.get(path) or {}), args.timeout, f"{namespace} decided", 0.2)
            seconds, mirrored, tally = time.monotonic() - started, load.judge_mirrored, load.snapshot()["candidate"]
            agreed, samples = judged(judge.metrics_port)
        finally:
            load.stop()
    return Run(candidate, "SPRT" if sequential else "fixed window", status["phase"], seconds, mirrored, samples,
               agreed, tally.ok + tally.failed, decided_by(status), status.get("message", ""))


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
    note = (f"target (minRate) {args.target}, delta {args.delta}, alpha {args.alpha}, beta {args.beta} (SPRT "
            f"only), minPause {args.min_pause}; samplePercent {args.sample_percent}, maxBaselineRps "
            f"{args.max_baseline_rps}, {args.rate:g} requests/s, window {args.window}, interval {args.interval}, "
            f"failureLimit {args.failure_limit}; shadow pause {args.shadow_pause}, then {args.step_weight}% for "
            f"{args.step_pause}")
    if args.models == "echo":
        note += (f"; echo model: good candidate disagrees on {args.good_disagree:.0%} of texts, bad on "
                 f"{args.bad_disagree:.0%}")
    return note


def _rate(part: int, whole: int) -> str:
    return f"{part / whole:.3f}" if whole else "-"


def print_table(runs: list[Run], args: argparse.Namespace, served: Served) -> None:
    print("\n| candidate | analysis | decision | decided by | time to decision (s) | mirrored to the judge "
          "| compared samples | live requests to the candidate | live agreement | offline agreement |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        offline = served.offline.get(r.candidate)
        print(f"| {r.candidate} | {r.analysis} | {r.decision} | {r.decided_by} | {r.seconds:.1f} | {r.mirrored} "
              f"| {r.compared} | {r.live} | {_rate(r.agreed, r.compared)} "
              f"| {'-' if offline is None else f'{offline:.3f}'} |")
    print(f"\nSettings: {settings_note(args)}.\n")
    for name in CANDIDATES:
        print(f"- {name}: {served.described[name]}")
    for r in runs:
        print(f"- {r.candidate}, {r.analysis}: {r.message}")


@contextmanager
def echo_tritons(work: Path) -> Iterator[tuple[TritonProcess, dict[str, TritonProcess], Served, Path]]:
    """The echo model as the baseline and as one candidate server that both candidates share (the control file
    switches it between good and bad)."""
    (work / "b").mkdir()
    (work / "c").mkdir()
    control = work / "c" / "control"
    with (
        start_tritonserver(echo_repository(work / "b", work / "b" / "ctl"), work / "b" / "triton.log") as base,
        start_tritonserver(echo_repository(work / "c", control), work / "c" / "triton.log") as cand,
    ):
        served = Served("echo", (), {"good": "echo model, told to disagree on --good-disagree of the texts",
                                     "bad": "echo model, told to disagree on --bad-disagree of the texts"},
                        {"good": None, "bad": None})
        yield base, {"good": cand, "bad": cand}, served, control


@contextmanager
def real_tritons(work: Path, args: argparse.Namespace) -> Iterator[tuple[TritonProcess, dict[str, TritonProcess],
                                                                         Served, None]]:
    """The real teacher and its two students (built or taken from the cache), each served by a tritonserver from
    the repository a StudentModel's Deployment assembles; offline agreement measured first."""
    from _agreement_models import SERVED_NAME, AgreementRecipe, agreement_models, offline_agreement, triton_repository

    recipe = AgreementRecipe(rows=args.rows, epochs=args.epochs, student=args.student, shuffle_seed=args.shuffle_seed)
    models = agreement_models(recipe)
    items = {"good": models.good, "bad": models.bad}
    offline: dict[str, float | None] = {k: offline_agreement(models.teacher, v, models.texts) for k, v in items.items()}
    for name, rate in offline.items():
        side = ("at or above minRate: should be promoted" if rate >= args.target else
                "at or below minRate - delta: should be rolled back" if rate <= args.target - args.delta else
                "between minRate - delta and minRate: either decision is allowed")
        print(f"offline agreement with the teacher on the {len(models.texts)} held-out titles: {name} "
              f"({items[name].description}) {rate:.3f}, {side}", flush=True)
    served = Served(SERVED_NAME, models.texts,
                    {k: f"{v.description}, exported at {v.export}" for k, v in items.items()}, offline)
    with ExitStack() as stack:
        tritons = {}
        for role, item in (("teacher", models.teacher), *items.items()):
            repo = triton_repository(item, work / role / "repo", served.model)
            tritons[role] = stack.enter_context(start_tritonserver(repo, work / role / "triton.log",
                                                                   ready_timeout_s=300))
        yield tritons.pop("teacher"), tritons, served, None


@contextmanager
def local_stack(work: Path, args: argparse.Namespace) -> Iterator[Stack]:
    """The model servers, a control plane and the operator, stopped on exit."""
    tritons = real_tritons(work, args) if args.models == "real" else echo_tritons(work)
    with tritons as (base, candidates, served, control):
        cluster = controlplane.start(work / "cp", with_controller_manager=False)
        operator = OperatorProcess(cluster, work / "operator.log").start()
        try:
            yield Stack(cluster, KubeAPI(cluster.kubeconfig), base, candidates, served, work, control)
        finally:
            operator.stop()
            controlplane.stop(cluster)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", choices=["real", "echo"], default="real",
                        help="real: a teacher and two students trained by the trainer; echo: the e2e echo model")
    parser.add_argument("--target", type=float, default=None, help="agreement.minRate (default: real 0.80, "
                        "echo 0.95)")
    parser.add_argument("--delta", type=float, default=None, help="sequential.delta (default: real 0.05, "
                        "echo 0.02)")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--beta", type=float, default=0.05)
    parser.add_argument("--min-pause", default="3s", help="sequential.minPause")
    parser.add_argument("--sample-percent", type=int, default=100)
    parser.add_argument("--max-baseline-rps", type=float, default=100.0)
    parser.add_argument("--rate", type=float, default=None, help="requests per second through the 'gateway' "
                        "(default: real 20, echo 40)")
    parser.add_argument("--window", default="1m", help="agreement.window (1m at least)")
    parser.add_argument("--interval", default="1s", help="analysis.interval")
    parser.add_argument("--failure-limit", type=int, default=0, help="analysis.failureLimit (failed rounds "
                        "tolerated per step)")
    parser.add_argument("--shadow-pause", default="60s")
    parser.add_argument("--step-weight", type=int, default=50)
    parser.add_argument("--step-pause", default="60s")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds a rollout may take to decide")
    real = parser.add_argument_group("--models real: the recipe (bench/_agreement_models.AgreementRecipe)")
    real.add_argument("--rows", type=int, default=2225, help="BBC News titles used (all: 2225)")
    real.add_argument("--epochs", type=int, default=2, help="the students' epochs")
    real.add_argument("--student", default="cut", help="a student of bench/classification.py")
    real.add_argument("--shuffle-seed", type=int, default=7, help="the seed shuffling the bad student's labels")
    echo = parser.add_argument_group("--models echo")
    echo.add_argument("--good-disagree", type=float, default=0.0, help="share of texts the good one gets wrong")
    echo.add_argument("--bad-disagree", type=float, default=0.10, help="share of texts the bad one gets wrong")
    args = parser.parse_args(argv)
    target, delta = DEFAULTS[args.models]
    args.target = target if args.target is None else args.target
    args.delta = delta if args.delta is None else args.delta
    args.rate = (20.0 if args.models == "real" else 40.0) if args.rate is None else args.rate
    return args


def main() -> int:
    args = parse_args()
    runs: list[Run] = []
    with (tempfile.TemporaryDirectory(prefix="kubestill-bench-agreement-") as tmp,
          local_stack(Path(tmp), args) as stack):
        for candidate in CANDIDATES:
            for sequential in (True, False):
                runs.append(run_one(args, stack, len(runs), candidate, sequential))
                print(f"{runs[-1]}", file=sys.stderr, flush=True)
    print_table(runs, args, stack.served)
    return 0


if __name__ == "__main__":
    sys.exit(main())
