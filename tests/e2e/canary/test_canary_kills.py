"""The README's promise, checked on what the route carries: many short rollouts, the operator SIGKILLed at
random moments and restarted, every version of every HTTPRoute recorded by an independent watch. Each step's
weight must reach the route, in order, once, and stay there for at least the step's pause.

Before the step clock waited for the route (shared case 13), 2-10 of 40-70 rollouts per 50 kills had a
step's weight never written: the status advanced past a pause that ran out while the operator was dead,
before the route had carried it.
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from .conftest import BASELINE, CANDIDATE, Bare

pytestmark = pytest.mark.e2e

ROLLOUTS = 16
WAVES = 4  # rollouts are created in waves between kills, so kills land in every phase of some rollout
STEPS = [{"weight": 10, "pause": "2s"}, {"weight": 30, "pause": "2s"}, {"weight": 60, "pause": "2s"}]
PAUSE = 2.0
# The watch sees a route version a few ms after it is written; the step's clock starts after the operator
# has read it back: a step can only look shorter than its pause by this much.
WATCH_SLACK = 0.25


@dataclass
class RouteLog:
    """(monotonic time, candidate weight, baseline weight) per route, for every version the watch saw."""

    versions: dict[str, list[tuple[float, int | None, int | None]]] = field(default_factory=dict)
    error: list[BaseException] = field(default_factory=list)

    def record(self, route: dict[str, Any]) -> None:
        refs = route["spec"]["rules"][0].get("backendRefs") or []
        cand = next((r.get("weight", 1) for r in refs if r["name"] == CANDIDATE.name), None)
        base = next((r.get("weight", 1) for r in refs if r["name"] == BASELINE.name), None)
        self.versions.setdefault(route["metadata"]["name"], []).append((time.monotonic(), cand, base))


def watch_routes(bare: Bare, log: RouteLog, stop: threading.Event) -> threading.Thread:
    """A plain watch on the API server, independent of the operator."""
    path = (f"/apis/gateway.networking.k8s.io/v1/namespaces/{bare.namespace}/httproutes"
            "?watch=true&timeoutSeconds=600&allowWatchBookmarks=false")
    req = urllib.request.Request(bare.cluster.server + path,
                                 headers={"Authorization": f"Bearer {bare.cluster.token}"})

    def run() -> None:
        try:
            with urllib.request.urlopen(req, context=bare.api.ctx, timeout=600) as resp:
                for line in resp:
                    if stop.is_set():
                        return
                    event = json.loads(line)
                    if event["type"] in ("ADDED", "MODIFIED"):
                        log.record(event["object"])
        except BaseException as err:  # surfaced by the test
            if not stop.is_set():
                log.error.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def carried(versions: list[tuple[float, int | None, int | None]]) -> list[tuple[int | None, float]]:
    """The candidate weights the route carried, in order, each with how long it stayed (the last: inf)."""
    runs: list[tuple[int | None, float]] = []
    for t, cand, _ in versions:
        if not runs or runs[-1][0] != cand:
            runs.append((cand, t))
    return [(w, (runs[i + 1][1] if i + 1 < len(runs) else float("inf")) - t) for i, (w, t) in enumerate(runs)]


def test_random_operator_kills_never_skip_or_shorten_a_step(bare: Bare) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    log = RouteLog()
    stop = threading.Event()
    watcher = watch_routes(bare, log, stop)
    time.sleep(0.5)
    names = [f"k{i}" for i in range(ROLLOUTS)]
    kills = 0

    def create(name: str) -> None:
        route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                 "metadata": {"name": name, "namespace": bare.namespace},
                 "spec": {"rules": [{"backendRefs": [{"name": BASELINE.name, "port": BASELINE.port,
                                                      "weight": 100}]}]}}
        bare.cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(route))
        spec = {"route": {"name": name}, "baseline": {"name": BASELINE.name, "port": BASELINE.port},
                "candidate": {"service": {"name": CANDIDATE.name, "port": CANDIDATE.port}},
                "steps": STEPS, "promotion": {"keepBaselineFor": "1s"}}
        bare.rollout(name, spec)

    def finished() -> bool:
        return all((bare.api.rollout(bare.namespace, n).get("status") or {}).get("routeSettledAt")
                   for n in names)

    waves = [names[i::WAVES] for i in range(WAVES)]
    try:
        deadline = time.monotonic() + 300
        while (waves or not finished()) and time.monotonic() < deadline:
            for name in waves.pop(0) if waves else []:
                create(name)
            time.sleep(rng.uniform(0.2, 2.0))
            bare.operator.kill()
            kills += 1
            time.sleep(rng.uniform(0.3, 2.5))  # pauses run out while nobody is watching
            bare.operator.start()
        assert finished(), f"not all rollouts finished (seed {seed}, {kills} kills)"
    finally:
        stop.set()
        if bare.operator.proc is None or bare.operator.proc.poll() is not None:
            bare.operator.start()
    time.sleep(0.5)
    assert not log.error, log.error
    assert kills >= WAVES + 2, f"only {kills} kills: the test did not test much (seed {seed})"
    for name in names:
        runs = carried(log.versions[name])
        weights = [w for w, _ in runs]
        context = f"{name}: {runs} (seed {seed}, {kills} kills)"
        assert weights == [None, 10, 30, 60, 100], context
        for w, duration in runs[1:4]:
            assert duration >= PAUSE - WATCH_SLACK, f"{w}% carried only {duration:.2f}s: {context}"
        # The baseline always had the rest, until it was released after promotion.
        for _, cand, base in log.versions[name]:
            assert base is None or cand is None or base + cand == 100, context
        assert log.versions[name][-1][2] is None, context  # released
        history = bare.api.rollout(bare.namespace, name)["status"]["history"]
        assert [(h["action"], h["weight"]) for h in history] == [
            ("Start", 10), ("Advance", 30), ("Advance", 60), ("Promote", 100), ("ReleaseBaseline", 100)
        ], context
    watcher.join(timeout=1)
