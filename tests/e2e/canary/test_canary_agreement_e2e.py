"""Live agreement end to end: the real operator, real tritonserver baseline and candidate, a real judge process
(`kubestill judge`, the command of the Deployment the operator creates; no node runs Pods in this suite, so the
test starts it with the settings that Deployment carries), real Prometheus scraping it with the `namespace` and
`service` labels a kubernetes-pods scrape job gives the judge's Pod, and the load generator standing in for the
gateway (it mirrors `samplePercent` % of requests to the judge when the route says so).

- a candidate that serves fine but answers differently is rolled back by the SPRT during the shadow step, having
  served no live request;
- a candidate that agrees ends its shadow step and its 1h weighted step after minPause, and is promoted.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubestill.api.judge import JudgeSettings
from kubestill.api.v1alpha1.common import Task
from kubestill.builders.judge import judge_backend
from kubestill.dev.controlplane import Cluster
from kubestill.dev.judge_process import start_judge
from kubestill.dev.loadgen import LoadGenerator, route_reader
from kubestill.dev.prometheus import PrometheusProcess, start_prometheus
from kubestill.dev.triton import TritonProcess

from ..conftest import OperatorProcess
from .conftest import BASELINE, CANDIDATE, ROUTE, Api, rollout_spec, route_manifest
from .tritons import echo_pair

pytestmark = pytest.mark.e2e

ROLLOUT = "agreement"
JUDGE = judge_backend(ROLLOUT)
BOUND_S = 120.0  # decisions need ~140 judged requests at 40/s plus minPause: far above is a failure


@dataclass
class Judged:
    cluster: Cluster
    namespace: str
    api: Api
    baseline: TritonProcess
    candidate: TritonProcess
    control: Path
    judge_url: str
    judge_log: Path
    prometheus: PrometheusProcess
    operator: OperatorProcess

    def rollout(self, spec: dict[str, Any]) -> None:
        manifest = {"apiVersion": "kubestill.io/v1alpha1", "kind": "CanaryRollout",
                    "metadata": {"name": ROLLOUT, "namespace": self.namespace}, "spec": spec}
        self.cluster.kubectl("apply", "--server-side", "-n", self.namespace, "-f", "-", input=yaml.safe_dump(manifest))

    def status(self) -> dict[str, Any]:
        return self.api.rollout(self.namespace, ROLLOUT).get("status") or {}

    def loadgen(self) -> LoadGenerator:
        read = route_reader(self.cluster.server, self.cluster.token, self.cluster.ca_file, self.namespace, ROUTE, 0,
                            BASELINE, CANDIDATE, JUDGE)
        return LoadGenerator(read, self.baseline.http_url, self.candidate.http_url, rate=40.0, max_seconds=240,
                             mirror_url=self.judge_url).start()

    def wait(self, what: str, done: Any) -> Any:
        return self.api.wait_for(what, done, BOUND_S, interval=0.3, context=lambda: (
            self.status(), self.operator.log_tail(30), self.judge_log.read_text()[-2000:]))


@pytest.fixture
def judged(cluster: Cluster, namespace: str, operator: OperatorProcess, tmp_path: Path) -> Iterator[Judged]:
    with echo_pair(tmp_path) as (baseline, candidate, control):
        # What the operator's Deployment sets (handlers/canary_judge.judge_settings), with local URLs.
        settings = JudgeSettings(Task.CLASSIFICATION, baseline.http_url, candidate.http_url, sample=100.0,
                                 max_rps=100.0)
        with start_judge(settings, tmp_path / "judge.log") as judge:
            judge_scrape = {"job_name": "judge", "static_configs": [{
                "targets": [f"127.0.0.1:{judge.metrics_port}"],
                "labels": {"namespace": namespace, "service": JUDGE.name}}]}
            jobs = {"kubestill-operator": [f"127.0.0.1:{operator.metrics_port}"]}
            with start_prometheus(jobs, workdir=tmp_path / "prometheus", scrape_configs=[judge_scrape]) as prom:
                cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(route_manifest(namespace)))
                api = Api(cluster)
                up = f"{prom.url}/api/v1/query?query=" + urllib.request.quote('up{job="judge"} == 1')
                api.wait_for("Prometheus scraping the judge", lambda: b'"value"' in urllib.request.urlopen(
                    up, timeout=5).read(), timeout=60, interval=0.3)
                yield Judged(cluster, namespace, api, baseline, candidate, control, judge.url, judge.log_file,
                             prom, operator)


def spec(prometheus_url: str, **extra: Any) -> dict[str, Any]:
    return rollout_spec(
        [{"weight": 50, "pause": "1h"}],
        shadow={"percent": 100, "pause": "1h"},
        analysis={"prometheusUrl": prometheus_url, "interval": "1s", "inconclusiveLimit": 60,
                  "agreement": {"minRate": 0.95, "task": "classification", "samplePercent": 100,
                                "maxBaselineRps": 100, "window": "1m"},
                  "sequential": {"minPause": "3s"}},
        promotion={"keepBaselineFor": "0s"}, **extra)


def test_a_disagreeing_candidate_is_rolled_back_from_the_shadow_step(judged: Judged) -> None:
    judged.control.write_text("wrong")
    load = judged.loadgen()
    try:
        judged.rollout(spec(judged.prometheus.url))
        judged.wait("rolled back", lambda: judged.status().get("phase") == "RolledBack")
    finally:
        load.stop()
    status = judged.status()
    assert "rolled back: agreement 0.000 < 0.95 - 0.02 (SPRT alpha=0.05 beta=0.05" in status["message"], status
    assert [h["action"] for h in status["history"]] == ["Start", "Rollback"]
    assert status["sequential"]["step"] == -1 and status["sequential"]["outcome"] == "Reject"
    # Not one live request reached the candidate; the judge got the mirrored copies and asked it itself.
    tally = load.snapshot()["candidate"]
    assert (tally.ok, tally.failed, tally.mirrored) == (0, 0, 0)
    assert load.judge_mirrored > 0
    print(yaml.safe_dump({"decision": status["message"], "mirrored to the judge": load.judge_mirrored,
                          "samples": status["sequential"]["samples"]}))


def test_an_agreeing_candidate_ends_its_steps_early(judged: Judged) -> None:
    load = judged.loadgen()
    started = time.monotonic()
    try:
        judged.rollout(spec(judged.prometheus.url))
        judged.wait("promoted", lambda: judged.status().get("phase") == "Promoted")
    finally:
        load.stop()
    elapsed = time.monotonic() - started
    history = judged.status()["history"]
    assert [h["action"] for h in history[:3]] == ["Start", "Advance", "Promote"], history
    assert "shadow step passed early: agreement 1.000 >= 0.95 accepted" in history[1]["reason"]
    assert "all steps passed early" in history[2]["reason"]
    assert elapsed < BOUND_S  # two 1h pauses, ended by the test
    assert load.snapshot()["candidate"].ok > 0  # the weighted step sent it live traffic
    print(yaml.safe_dump({"seconds to promotion": round(elapsed, 1), "history": history}))
