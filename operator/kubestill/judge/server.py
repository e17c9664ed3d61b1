"""The judge as an HTTP server (aiohttp): the gateway mirrors requests to it and drops its answers.

For each mirrored POST the judge answers 202 at once, then, for a sampled share and within its load bound, asks
the baseline and the candidate the same request (same path, headers and body) concurrently, compares the two
answers (compare) and counts the result (metrics); a streamed OpenAI answer (server-sent events) is compared as
the completion it adds up to. A side that times out, cannot be reached, answers non-2xx or neither JSON nor a
stream of JSON events is counted as that side's failure; nothing is compared then, so a dead candidate can never
look like agreement. Prometheus reads /metrics on its own port (/healthz there too), apart from the mirrored paths.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from kubestill.api.judge import JudgeSettings

from .compare import CompareSettings, compare
from .limits import BoundedLabels, Sampler, TokenBucket
from .metrics import JudgeMetrics
from .request import forwarded_headers, segment_of
from .tensors import Incomparable, streamed_completion

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answer:
    """One side's answer: the parsed JSON body, or the reason it failed (a metric label)."""

    body: Any = None
    failure: str | None = None


class Judge:
    """The state of one judge: its settings, bounds, metrics and the comparisons in flight."""

    def __init__(self, settings: JudgeSettings, registry: CollectorRegistry | None = None,
                 rng: random.Random | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.metrics = JudgeMetrics(settings.task, registry or CollectorRegistry())
        self.sampler = Sampler(settings.sample, rng or random.Random())
        self.bucket = TokenBucket(settings.max_rps, max(1.0, settings.max_rps), clock)
        self.segments = BoundedLabels(settings.max_segments)
        self.compare_settings = CompareSettings(settings.cosine_threshold)
        self.in_flight: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout)
        self._session = aiohttp.ClientSession(timeout=timeout, auto_decompress=True)

    async def close(self) -> None:
        for task in list(self.in_flight):
            task.cancel()
        await asyncio.gather(*self.in_flight, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def admit(self) -> str:
        """What to do with one mirrored request: judged, unsampled, busy or rate_limited (the bucket is
        spent only for a request that will be judged)."""
        if not self.sampler.keep():
            return "unsampled"
        if len(self.in_flight) >= self.settings.max_in_flight:
            return "busy"
        return "judged" if self.bucket.take() else "rate_limited"

    async def mirrored(self, request: web.Request) -> web.Response:
        if request.method != "POST":
            self.metrics.requests.labels("ignored").inc()
            return web.Response(status=202)
        body = await request.read()
        outcome = self.admit()
        self.metrics.requests.labels(outcome).inc()
        if outcome == "judged":
            task = asyncio.create_task(self.judge(request.path_qs, forwarded_headers(request.headers), body))
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)
        return web.Response(status=202)

    async def judge(self, path: str, headers: dict[str, str], body: bytes) -> None:
        """Ask both sides, then count the pair and, when both answered, the comparison."""
        baseline, candidate = await asyncio.gather(
            self.ask("baseline", self.settings.baseline, path, headers, body),
            self.ask("candidate", self.settings.candidate, path, headers, body))
        self.metrics.pairs.labels("failed" if baseline.failure else "ok",
                                  "failed" if candidate.failure else "ok").inc()
        if baseline.failure or candidate.failure:
            return
        segment = self.segments.get(segment_of(headers, _json_or_none(body), self.settings.segment_header,
                                               self.settings.segment_field))
        try:
            samples = compare(self.settings.task, baseline.body, candidate.body, self.compare_settings)
        except Incomparable as exc:
            self.metrics.incomparable.labels(self.settings.task.value, segment, exc.reason).inc()
            log.info("incomparable answers on %s: %s", path, exc)
            return
        self.metrics.observe(segment, samples)

    async def ask(self, side: str, base: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        assert self._session is not None, "start() first"
        started = time.monotonic()
        answer = await self._post(base.rstrip("/") + path, headers, body)
        self.metrics.latency.labels(side).observe(time.monotonic() - started)
        if answer.failure:
            self.metrics.failures.labels(side, answer.failure).inc()
        return answer

    async def _post(self, url: str, headers: dict[str, str], body: bytes) -> Answer:
        assert self._session is not None
        try:
            async with self._session.post(url, data=body, headers=headers) as response:
                if not 200 <= response.status < 300:
                    return Answer(failure="status")
                raw = await response.read()
                streamed = response.content_type == "text/event-stream"
        except TimeoutError:
            return Answer(failure="timeout")
        except aiohttp.ClientError:
            return Answer(failure="connection")
        if streamed:  # an OpenAI `"stream": true` request: both sides stream, compare what they add up to
            try:
                return Answer(body=streamed_completion(raw.decode(errors="replace")))
            except (ValueError, TypeError):  # Incomparable is a ValueError
                return Answer(failure="unreadable")
        parsed = _json_or_none(raw)
        return Answer(failure="unreadable") if parsed is None else Answer(body=parsed)


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def mirror_app(judge: Judge) -> web.Application:
    """The application the gateway mirrors to: every path, every method."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", judge.mirrored)

    async def lifecycle(_: web.Application) -> Any:
        await judge.start()
        yield
        await judge.close()

    app.cleanup_ctx.append(lifecycle)
    return app


def metrics_app(judge: Judge) -> web.Application:
    """/metrics (Prometheus text format) and /healthz."""

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(judge.metrics.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app


async def serve(judge: Judge, host: str, port: int, metrics_port: int) -> list[web.AppRunner]:
    """Start both applications; returns their runners (cleanup() stops them). Port 0 picks a free port."""
    runners = []
    for app, p in ((mirror_app(judge), port), (metrics_app(judge), metrics_port)):
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, p).start()
        runners.append(runner)
    return runners


async def run_forever(judge: Judge, host: str, port: int, metrics_port: int) -> None:
    runners = await serve(judge, host, port, metrics_port)
    log.info("judge: mirrored requests on %s:%d, /metrics on %s:%d, baseline %s, candidate %s",
             host, port, host, metrics_port, judge.settings.baseline, judge.settings.candidate)
    try:
        await asyncio.Event().wait()
    finally:
        for runner in runners:
            await runner.cleanup()
