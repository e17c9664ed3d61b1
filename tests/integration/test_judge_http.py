"""The agreement judge over real HTTP (kubestill.judge.server): two v2 backends started here, one the baseline and
one a candidate that agrees or not on known inputs, or is dead, slow or broken; requests mirrored to the judge as
the gateway would; the judge's /metrics read as Prometheus would. Loopback only: no control plane needed.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from kubestill.api.judge import JudgeSettings
from kubestill.api.v1alpha1.common import Task
from kubestill.judge.server import Judge, serve

PATH = "/v2/models/news/infer"
Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def teacher_label(text: str) -> str:
    return "sport" if "match" in text else "tech"


def flipped(text: str) -> str:
    """The disagreeing student: the other class whenever the text says 'flip'."""
    label = teacher_label(text)
    return ({"sport": "tech", "tech": "sport"}[label]) if "flip" in text else label


@dataclass
class Backend:
    """A v2 classification server: LABEL = label_of(TEXT) per row. `mode` breaks it: slow, status, not_json."""

    label_of: Callable[[str], str]
    mode: str = "ok"
    hits: int = 0
    bodies: list[Any] = field(default_factory=list)

    async def infer(self, request: web.Request) -> web.Response:
        self.hits += 1
        body = await request.json()
        self.bodies.append(body)
        if self.mode == "slow":
            await asyncio.sleep(5.0)  # well past the judge's timeout below
        if self.mode == "status":
            return web.json_response({"error": "model unavailable"}, status=503)
        if self.mode == "not_json":
            return web.Response(text="<html>bad gateway</html>")
        if self.mode == "broken_stream":
            return web.Response(text="data: {not json\n\n", content_type="text/event-stream")
        if self.mode == "no_label":  # a model with another contract: answers, but nothing to compare
            return web.json_response({"outputs": [{"name": "SCORE", "shape": [1, 1], "data": [0.5]}]})
        texts = body["inputs"][0]["data"]
        labels = [self.label_of(t) for t in texts]
        return web.json_response({"model_name": "news", "outputs": [
            {"name": "LABEL", "datatype": "BYTES", "shape": [len(labels), 1], "data": labels}]})


async def start_backend(backend: Backend) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post(PATH, backend.infer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


def dead_url() -> str:
    with socket.socket() as s:  # a port that was free a moment ago; nothing listens on it now
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def v2_request(*texts: str, segment: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [len(texts), 1],
                                        "data": list(texts)}]}
    if segment is not None:
        body["parameters"] = {"segment": segment}
    return body


@dataclass
class Running:
    judge: Judge
    mirror: str
    metrics: str
    http: aiohttp.ClientSession

    async def mirror_request(self, body: dict[str, Any], headers: dict[str, str] | None = None) -> int:
        async with self.http.post(self.mirror + PATH, json=body, headers=headers or {}) as response:
            return response.status

    async def settled(self) -> Series:
        """The metrics once every judged request has been compared (polls the judge's in-flight set)."""
        deadline = time.monotonic() + 10.0
        while self.judge.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert not self.judge.in_flight
        async with self.http.get(self.metrics + "/metrics") as response:
            text = await response.text()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}


def value(series: Series, name: str, **labels: str) -> float:
    return series.get((name, tuple(sorted(labels.items()))), 0.0)


Scenario = Callable[[Running, Backend, Backend], Awaitable[None]]


def run(scenario: Scenario, candidate: Backend | None, **settings: Any) -> None:
    """Start the baseline, the candidate (None: a dead URL) and the judge, run `scenario`, stop everything."""

    async def main() -> None:
        baseline = Backend(teacher_label)
        runners = []
        b_runner, b_url = await start_backend(baseline)
        runners.append(b_runner)
        if candidate is not None:
            c_runner, c_url = await start_backend(candidate)
            runners.append(c_runner)
        else:
            c_url = dead_url()
        judge = Judge(JudgeSettings(task=Task.CLASSIFICATION, baseline=b_url, candidate=c_url, **settings),
                      rng=random.Random(7))
        judge_runners = await serve(judge, "127.0.0.1", 0, 0)
        mirror_port, metrics_port = (r.addresses[0][1] for r in judge_runners)
        try:
            async with aiohttp.ClientSession() as http:
                running = Running(judge, f"http://127.0.0.1:{mirror_port}", f"http://127.0.0.1:{metrics_port}",
                                  http)
                await scenario(running, baseline, candidate or Backend(teacher_label))
        finally:
            for runner in [*judge_runners, *runners]:
                await runner.cleanup()

    asyncio.run(main())


TEXTS = ["the match ended 2-1", "a new chip", "flip: the match was close", "flip: an update ships",
         "match report", "cloud prices fall", "flip: transfer news from the match"]


def test_counts_agreement_per_class_and_segment_exactly() -> None:
    async def scenario(r: Running, baseline: Backend, candidate: Backend) -> None:
        for i, text in enumerate(TEXTS):
            assert await r.mirror_request(v2_request(text), {"X-Kubestill-Segment": "eu" if i % 2 else "us"}) == 202
        # One batch of two rows, the segment in the v2 parameters: 1 agreement (sport), 1 disagreement (tech).
        assert await r.mirror_request(v2_request("match", "flip: chips")) == 202
        assert await r.mirror_request(v2_request("match", "flip: chips", segment="mobile")) == 202
        m = await r.settled()
        # TEXTS by index: us = 0, 2, 4, 6 (agree 0, 4; disagree 2, 6); eu = 1, 3, 5 (agree 1, 5; disagree 3).
        expected = {("us", "agree"): 2, ("us", "disagree"): 2, ("eu", "agree"): 2, ("eu", "disagree"): 1,
                    ("", "agree"): 1, ("", "disagree"): 1, ("mobile", "agree"): 1, ("mobile", "disagree"): 1}
        for (segment, result), count in expected.items():
            assert value(m, "kubestill_judge_samples_total", task="classification", segment=segment,
                         result=result) == count, (segment, result)
        # The baseline's class: sport rows are 0, 2, 4, 6 and both batches' first rows; only 2 and 6 disagree.
        assert value(m, "kubestill_judge_class_samples_total", segment="us", label="sport", result="agree") == 2
        assert value(m, "kubestill_judge_class_samples_total", segment="us", label="sport", result="disagree") == 2
        assert value(m, "kubestill_judge_class_samples_total", segment="eu", label="tech", result="disagree") == 1
        assert value(m, "kubestill_judge_requests_total", outcome="judged") == 9
        assert value(m, "kubestill_judge_pairs_total", baseline="ok", candidate="ok") == 9
        assert sum(v for (name, _), v in m.items() if name == "kubestill_judge_failures_total") == 0
        # Both sides were asked the very request the client sent.
        assert baseline.bodies == candidate.bodies and len(baseline.bodies) == 9
        assert baseline.bodies[-1] == v2_request("match", "flip: chips", segment="mobile")

    run(scenario, Backend(flipped), max_rps=1000.0)


@pytest.mark.parametrize(
    ("mode", "reason"),
    [(None, "connection"), ("slow", "timeout"), ("status", "status"), ("not_json", "unreadable"),
     ("broken_stream", "unreadable")],
)
def test_a_failing_candidate_counts_as_errors_never_as_agreement(mode: str | None, reason: str) -> None:
    async def scenario(r: Running, baseline: Backend, candidate: Backend) -> None:
        for text in TEXTS[:4]:
            await r.mirror_request(v2_request(text))
        m = await r.settled()
        assert value(m, "kubestill_judge_failures_total", side="candidate", reason=reason) == 4
        assert value(m, "kubestill_judge_failures_total", side="baseline", reason=reason) == 0
        assert value(m, "kubestill_judge_pairs_total", baseline="ok", candidate="failed") == 4
        # Nothing compared: the samples series of requests without a segment stay at the 0 they start at.
        assert {v for k, v in m.items() if k[0] == "kubestill_judge_samples_total"} == {0}
        assert baseline.hits == 4

    # A 2 s timeout: a loaded machine (CI) must not turn a quick broken answer into a timeout.
    run(scenario, None if mode is None else Backend(teacher_label, mode=mode), max_rps=1000.0, timeout=2.0)


def test_the_load_bound_on_the_baseline_holds_and_the_rest_is_counted_not_queued() -> None:
    sent = 40

    async def scenario(r: Running, baseline: Backend, candidate: Backend) -> None:
        started = time.monotonic()
        statuses = [await r.mirror_request(v2_request(f"match {i}")) for i in range(sent)]
        elapsed = time.monotonic() - started
        m = await r.settled()
        judged = value(m, "kubestill_judge_requests_total", outcome="judged")
        limited = value(m, "kubestill_judge_requests_total", outcome="rate_limited")
        assert statuses == [202] * sent  # every mirrored request answered at once, judged or not
        assert judged + limited == sent
        # A burst of one second's worth (5), then 5 per second: never more reached the baseline.
        assert 5 <= judged <= 5 + 5 * elapsed + 1e-9
        assert baseline.hits == candidate.hits == judged
        # Nothing was queued: after a second of quiet the baseline has seen no more requests.
        await asyncio.sleep(1.0)
        assert baseline.hits == judged

    run(scenario, Backend(teacher_label), max_rps=5.0)


def test_unsampled_and_non_post_requests_never_reach_the_backends() -> None:
    async def scenario(r: Running, baseline: Backend, candidate: Backend) -> None:
        for i in range(200):
            await r.mirror_request(v2_request(f"match {i}"))
        async with r.http.get(r.mirror + "/v2/health/ready") as response:
            assert response.status == 202
        m = await r.settled()
        judged = value(m, "kubestill_judge_requests_total", outcome="judged")
        assert judged + value(m, "kubestill_judge_requests_total", outcome="unsampled") == 200
        assert 79 <= judged <= 121  # half of 200, within 3 standard deviations (sqrt(200 / 4) = 7.1)
        assert value(m, "kubestill_judge_requests_total", outcome="ignored") == 1
        assert baseline.hits == judged

    run(scenario, Backend(teacher_label), max_rps=1000.0, sample=50.0)


def test_metrics_exist_at_zero_before_the_first_request() -> None:
    async def scenario(r: Running, baseline: Backend, candidate: Backend) -> None:
        m = await r.settled()
        assert ("kubestill_judge_requests_total", (("outcome", "judged"),)) in m
        assert value(m, "kubestill_judge_pairs_total", baseline="ok", candidate="failed") == 0
        assert ("kubestill_judge_pairs_total", (("baseline", "ok"), ("candidate", "failed"))) in m
        # Both results of requests without a segment: a series scraped once has no increase for the SPRT.
        for result in ("agree", "disagree"):
            key = (("result", result), ("segment", ""), ("task", "classification"))
            assert m.get(("kubestill_judge_samples_total", key)) == 0, result

    run(scenario, Backend(teacher_label))


def test_answers_that_cannot_be_compared_are_counted_apart() -> None:
    async def scenario(r: Running, baseline: Backend, candidate: Backend) -> None:
        for text in TEXTS[:3]:
            await r.mirror_request(v2_request(text), {"X-Kubestill-Segment": "eu"})
        m = await r.settled()
        assert value(m, "kubestill_judge_incomparable_total", task="classification", segment="eu",
                     reason="missing_output") == 3
        assert value(m, "kubestill_judge_pairs_total", baseline="ok", candidate="ok") == 3
        assert {v for k, v in m.items() if k[0] == "kubestill_judge_samples_total"} == {0}

    run(scenario, Backend(teacher_label, mode="no_label"), max_rps=1000.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_the_cli_serves_metrics_and_health_from_env_settings() -> None:
    mirror, metrics = free_port(), free_port()
    env = {**os.environ, "KUBESTILL_JUDGE_TASK": "embedding", "KUBESTILL_JUDGE_BASELINE": "http://127.0.0.1:9",
           "KUBESTILL_JUDGE_CANDIDATE": "http://127.0.0.1:9", "KUBESTILL_JUDGE_PORT": str(mirror),
           "KUBESTILL_JUDGE_METRICS_PORT": str(metrics), "KUBESTILL_JUDGE_LISTEN": "127.0.0.1"}
    command = "import sys; from kubestill.cli import main; sys.exit(main(['judge']))"
    proc = subprocess.Popen([sys.executable, "-c", command], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20.0
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/healthz", timeout=1) as response:
                    assert response.read() == b"ok"
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                assert time.monotonic() < deadline, "the judge did not start within 20 s"
                time.sleep(0.1)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as response:
            text = response.read().decode()
        # The histogram is there from the start, empty (the canary's increase() of its count needs two scrapes).
        assert 'kubestill_judge_cosine_count{segment="",task="embedding"} 0.0' in text
        assert 'kubestill_judge_requests_total{outcome="judged"} 0.0' in text
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_streamed_openai_answers_are_compared_as_the_text_they_add_up_to() -> None:
    def stream(*pieces: str) -> str:
        events = [{"choices": [{"index": 0, "delta": {"role": "assistant"}}]}]
        events += [{"choices": [{"index": 0, "delta": {"content": p}}]} for p in pieces]
        return "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"

    answers = {"teacher": stream("The capital ", "is Paris."), "same": stream("The capital is ", "Paris."),
               "other": stream("Lyon.")}

    async def main() -> None:
        async def side(name: str) -> tuple[web.AppRunner, str]:
            async def chat(request: web.Request) -> web.Response:
                await request.read()
                return web.Response(text=answers[name], content_type="text/event-stream")

            app = web.Application()
            app.router.add_post("/v1/chat/completions", chat)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"

        body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "Capital of France?"}]}
        for candidate, agree, rouge in (("same", 1.0, 1.0), ("other", 0.0, 0.0)):
            (t_runner, t_url), (c_runner, c_url) = await side("teacher"), await side(candidate)
            judge = Judge(JudgeSettings(task=Task.GENERATION, baseline=t_url, candidate=c_url))
            runners = await serve(judge, "127.0.0.1", 0, 0)
            mirror, metrics = (f"http://127.0.0.1:{r.addresses[0][1]}" for r in runners)
            try:
                async with aiohttp.ClientSession() as http:
                    r = Running(judge, mirror, metrics, http)
                    async with http.post(mirror + "/v1/chat/completions", json=body) as response:
                        assert response.status == 202
                    m = await r.settled()
            finally:
                for runner in (*runners, t_runner, c_runner):
                    await runner.cleanup()
            labels = {"task": "generation", "segment": ""}
            assert value(m, "kubestill_judge_samples_total", **labels, result="agree") == agree, candidate
            assert value(m, "kubestill_judge_rouge_l_sum", **labels) == pytest.approx(rouge)

    asyncio.run(main())
