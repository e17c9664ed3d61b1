"""A plain client of a real gateway: it sends Triton (KServe v2) inference requests to the Gateway's address at a
steady rate and counts who answered each one, read from the response, nothing more. It knows nothing of the
route: the split it sees is the one the gateway enforces.

Who answered is the `X-Kubestill-Backend` response header, which the route sets per backendRef with the Gateway
API's standard `ResponseHeaderModifier` filter (Extended support; Traefik implements it on backendRefs). A
CanaryRollout keeps per-backend filters when it re-weights a rule, so the header names the backendRef the gateway
chose for that request. Answers without it (the gateway answering itself, e.g. 503 with no backend) count under
their HTTP status, or, for a 200, under what `untagged` reads from the body: Traefik applies no filter of a
backendRef to a TraefikService (the one a CanaryRollout's shadow step puts in the baseline's place), so there the
model's answer itself says who answered.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

BACKEND_HEADER = "X-Kubestill-Backend"


def tagged_backend_ref(name: str, port: int, weight: int, tag: str) -> dict[str, Any]:
    """An HTTPRoute backendRef whose answers carry `X-Kubestill-Backend: <tag>` (a per-backend filter)."""
    return {"name": name, "port": port, "weight": weight,
            "filters": [{"type": "ResponseHeaderModifier",
                         "responseHeaderModifier": {"set": [{"name": BACKEND_HEADER, "value": tag}]}}]}


def infer_body(text: str) -> bytes:
    """A one-row KServe v2 request for a model with one BYTES input `TEXT` of shape [batch, 1]."""
    return json.dumps({"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": [text]}]}).encode()


@dataclass
class GatewayClient:
    """Send `rate` requests per second to `url` (the Gateway's listener) for `model`, from a thread, until stop()
    or `max_seconds`. Each answer is counted under the phase set last with mark() (e.g. the canary step the
    caller saw in status), so a run reads as "step 1: baseline 95, candidate 24". Request n carries
    `texts[n % len(texts)]` (real inputs, e.g. a dataset's held-out rows), or "request <n>" when `texts` is
    empty; `answers` keeps (n, who answered) for each, in order, so a caller can ask which texts went where."""

    url: str
    model: str
    rate: float = 20.0
    max_seconds: float = 600.0
    host: str | None = None  # Host header, when the route matches on hostnames
    timeout: float = 10.0
    # Who answered a 200 without the header, from its body (None: counted as "200").
    untagged: Callable[[bytes], str] | None = None
    texts: Sequence[str] = ()
    answers: list[tuple[int, str]] = field(default_factory=list)
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    phases: list[str] = field(default_factory=list)
    _phase: str = "start"
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> GatewayClient:
        self.mark(self._phase)
        self._thread = threading.Thread(target=self._run, name="kubestill-gateway-client", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 5)

    def mark(self, phase: str) -> None:
        """Count the answers from now on under `phase`."""
        with self._lock:
            self._phase = phase
            if phase not in self.counts:
                self.counts[phase] = Counter()
                self.phases.append(phase)

    def snapshot(self) -> list[tuple[str, Counter[str]]]:
        """(phase, answers by backend tag or HTTP status) in the order the phases were first marked."""
        with self._lock:
            return [(p, Counter(self.counts[p])) for p in self.phases]

    def total(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for _, counts in self.snapshot():
            out.update(counts)
        return out

    def text(self, n: int) -> str:
        """What request `n` carries."""
        return self.texts[n % len(self.texts)] if self.texts else f"request {n}"

    def sent_by(self, who: str) -> list[str]:
        """The texts of the requests answered by `who` (a backend tag, an `untagged` reading or a status), in
        the order they were sent."""
        with self._lock:
            return [self.text(n) for n, answered in self.answers if answered == who]

    def send(self, conn: http.client.HTTPConnection, n: int) -> str:
        """One request; who answered (the header's value, else `untagged` of a 200's body), else the HTTP status,
        else the error's name."""
        headers = {"Content-Type": "application/json"}
        if self.host:
            headers["Host"] = self.host
        try:
            conn.request("POST", f"/v2/models/{self.model}/infer", body=infer_body(self.text(n)), headers=headers)
            resp = conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException) as err:
            conn.close()  # reconnects on the next request
            return type(err).__name__
        tag = resp.getheader(BACKEND_HEADER)
        if not tag and resp.status == 200 and self.untagged is not None:
            return self.untagged(body)
        return tag if tag and resp.status == 200 else (f"{tag}:{resp.status}" if tag else str(resp.status))

    def _run(self) -> None:
        parsed = urlparse(self.url)
        conn = http.client.HTTPConnection(parsed.hostname or "127.0.0.1", parsed.port or 80, timeout=self.timeout)
        started = time.monotonic()
        n = 0
        while not self._stop.is_set() and time.monotonic() - started < self.max_seconds:
            who = self.send(conn, n)
            with self._lock:
                self.counts[self._phase][who] += 1
                self.answers.append((n, who))
            n += 1
            delay = started + n / self.rate - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
        conn.close()
