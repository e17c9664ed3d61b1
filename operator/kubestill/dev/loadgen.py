"""A load generator standing in for the gateway's data plane: it reads the HTTPRoute's current weights (and
RequestMirror filter) from the API server and splits inference requests between the baseline and the
candidate tritonserver accordingly. Local only: every target is a loopback URL the caller started.

The split is a smooth weighted round robin (as nginx does), so over any 100 requests the shares match the
weights exactly; requests are paced to `rate` per second and the loop stops on stop() or after `max_seconds`.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from kubestill.api.v1alpha1.canaryrollout import BackendRef
from kubestill.builders.httproute import observe_route

# (baseline weight, candidate weight, mirror percent or None)
Weights = tuple[int, int, int | None]


def route_reader(
    server: str, token: str, ca_file: Path, namespace: str, route: str, rule_index: int,
    baseline: BackendRef, candidate: BackendRef, judge: BackendRef | None = None,
) -> Callable[[], Weights]:
    """A function reading the route's weights through the API server (as a gateway controller would); the mirror
    percent is that of the mirror to the candidate or, given it, to the rollout's agreement `judge`."""
    ctx = ssl.create_default_context(cafile=str(ca_file))
    url = f"{server}/apis/gateway.networking.k8s.io/v1/namespaces/{namespace}/httproutes/{route}"

    def read() -> Weights:
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
            body = json.loads(resp.read())
        seen = observe_route(body, rule_index, baseline, candidate, judge=judge)
        return seen.baseline_weight or 0, seen.candidate_weight or 0, seen.mirror_percent

    return read


@dataclass
class Tally:
    """Requests sent to one backend and how they ended."""

    ok: int = 0
    failed: int = 0
    mirrored: int = 0


@dataclass
class LoadGenerator:
    """Send TEXT inference requests for `model` to `baseline_url` / `candidate_url` by the route's weights.

    Request n carries `texts[n % len(texts)]` (real inputs, e.g. a dataset's held-out rows), or "request <n>"
    when `texts` is empty; a mirrored copy carries the same text as the request it copies."""

    read_weights: Callable[[], Weights]
    baseline_url: str
    candidate_url: str
    model: str = "echo"
    texts: Sequence[str] = ()
    rate: float = 40.0
    refresh: float = 0.1
    max_seconds: float = 600.0
    # Where mirrored copies go when the route mirrors to an agreement judge (every request is mirrored, whichever
    # backend answers it, as a rule-level RequestMirror filter does); None: to the candidate, baseline's only.
    mirror_url: str | None = None
    judge_mirrored: int = 0
    tallies: dict[str, Tally] = field(default_factory=lambda: {"baseline": Tally(), "candidate": Tally()})
    weights: Weights = (100, 0, None)
    # (monotonic time, weights) each time the observed weights changed.
    changes: list[tuple[float, Weights]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _credit: dict[str, float] = field(default_factory=lambda: {"baseline": 0.0, "candidate": 0.0})
    _mirror_credit: float = 0.0

    def start(self) -> LoadGenerator:
        self._thread = threading.Thread(target=self._run, name="kubestill-loadgen", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def snapshot(self) -> dict[str, Tally]:
        return {k: Tally(v.ok, v.failed, v.mirrored) for k, v in self.tallies.items()}

    def pick(self) -> str:
        """Smooth weighted round robin over the current weights."""
        base, cand, _ = self.weights
        total = base + cand
        if total <= 0:
            return "baseline"
        self._credit["baseline"] += base
        self._credit["candidate"] += cand
        chosen = max(self._credit, key=lambda k: self._credit[k])
        self._credit[chosen] -= total
        return chosen

    def mirror_now(self) -> bool:
        percent = self.weights[2]
        if not percent:
            return False
        self._mirror_credit += percent
        if self._mirror_credit >= 100:
            self._mirror_credit -= 100
            return True
        return False

    def _run(self) -> None:
        conns: dict[str, http.client.HTTPConnection] = {}
        urls: Mapping[str, str] = {"baseline": self.baseline_url, "candidate": self.candidate_url,
                                   "mirror": self.mirror_url or self.candidate_url}
        started = time.monotonic()
        next_refresh = 0.0
        period = 1.0 / self.rate
        n = 0
        while not self._stop.is_set() and time.monotonic() - started < self.max_seconds:
            now = time.monotonic()
            if now >= next_refresh:
                next_refresh = now + self.refresh
                try:
                    seen = self.read_weights()
                except OSError:
                    seen = self.weights  # API hiccup: keep routing as before, like a gateway would
                if seen != self.weights:
                    self.weights = seen
                    self.changes.append((now, seen))
            target = self.pick()
            ok = self._send(conns, urls, target, n)
            tally = self.tallies[target]
            if ok:
                tally.ok += 1
            else:
                tally.failed += 1
            if self.mirror_url is not None and self.mirror_now():
                self._send(conns, urls, "mirror", n)  # the judge answers 202; the gateway drops it anyway
                self.judge_mirrored += 1
            elif self.mirror_url is None and target == "baseline" and self.mirror_now():
                self._send(conns, urls, "candidate", n)  # the gateway drops mirrored responses
                self.tallies["candidate"].mirrored += 1
            n += 1
            delay = started + n * period - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
        for conn in conns.values():
            conn.close()

    def _send(self, conns: dict[str, http.client.HTTPConnection], urls: Mapping[str, str], target: str,
              n: int) -> bool:
        text = self.texts[n % len(self.texts)] if self.texts else f"request {n}"
        body = json.dumps({"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": [text]}]})
        for _attempt in range(2):  # one reconnect: keep-alive connections may be closed by the server
            conn = conns.get(target)
            if conn is None:
                parsed = urlparse(urls[target])
                conn = http.client.HTTPConnection(parsed.hostname or "127.0.0.1", parsed.port or 80, timeout=10)
                conns[target] = conn
            try:
                conn.request("POST", f"/v2/models/{self.model}/infer", body=body,
                             headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                return resp.status == 200
            except (OSError, http.client.HTTPException):
                conn.close()
                conns.pop(target, None)
        return False
