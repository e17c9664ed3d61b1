"""Real traffic through a real Gateway API data plane: Traefik (kubestill.dev.gateway) on the real kube-apiserver,
to real HTTP backends (tests/integration/http_backends.py) that name themselves in their answers and record what
they were asked, so a split is counted from what the client got, and a mirror from what the shadow received.

Gateway API v1: HTTPRoute backendRefs weights ("proportional to the sum of weights"), the RequestMirror filter
(Extended support). Traefik's WRR is an earliest-deadline-first schedule (pkg/server/service/loadbalancer/wrr):
deterministic, so 1,000 requests at 90/10 are exactly 900/100.
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kubestill.dev.gateway import GATEWAY_API, Gateway, apply

from . import http_backends
from .http_backends import FOLLOW_BOUND_S, PORT, Backend, Client, ref, split

pytestmark = pytest.mark.integration

NAMES = ("baseline", "candidate", "shadow")


@pytest.fixture
def backends(gateway: Gateway, namespace: str, address: str) -> Iterator[dict[str, Backend]]:
    """baseline, candidate and shadow, published in the test's namespace."""
    mirror = f"/apis/traefik.io/v1alpha1/namespaces/{namespace}/traefikservices/mirror"
    with http_backends.published(gateway, namespace, address, NAMES, [mirror]) as started:
        yield started


def put_route(gateway: Gateway, namespace: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return http_backends.put_route(gateway, namespace, rules, NAMES)


def route_condition(gateway: Gateway, namespace: str, kind: str) -> str | None:
    """The status of condition `kind` that our gateway's controller set on route r."""
    live = gateway.kube.get(f"{GATEWAY_API}/namespaces/{namespace}/httproutes/r") or {}
    for parent in (live.get("status") or {}).get("parents") or []:
        if parent.get("parentRef", {}).get("name") == gateway.name:
            for cond in parent.get("conditions") or []:
                if cond["type"] == kind:
                    return str(cond["status"])
    return None


def backend_metrics(gateway: Gateway, namespace: str, backend: str) -> dict[str, float]:
    """Traefik's per-service samples for `backend` in rule 1 of route r, by sample name (+ `le` for buckets).
    Traefik names the service httproute-<ns>-<route>-gw-<gw ns>-<gw>-ep-<entryPoint>-<rule>-<hash>-svc-<ns>-<svc>-<i>
    @kubernetesgateway: the hash changes with the rule, hence a pattern."""
    service = re.compile(rf"httproute-{namespace}-r-.*-ep-web-1-[0-9a-f]+-svc-{namespace}-{backend}-\d+"
                         r"@kubernetesgateway")
    with urllib.request.urlopen(gateway.metrics_url, timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if service.fullmatch(sample.labels.get("service", "")):
                key = sample.name + (f"{{le={sample.labels['le']}}}" if "le" in sample.labels else "")
                out[key] = out.get(key, 0.0) + sample.value
    return out


def test_weighted_split_is_exact(gateway: Gateway, namespace: str, backends: dict[str, Backend],
                                 client: Client) -> None:
    put_route(gateway, namespace, [split(("baseline", 90), ("candidate", 10))])
    client.wait_route(NAMES)
    assert client.answers(1000) == Counter(baseline=900, candidate=100)
    # The backends saw the same: nothing answered from elsewhere, nothing was retried.
    assert backends["candidate"].server.count("/work/") == 100
    assert backends["baseline"].server.count("/work/") == 900
    assert route_condition(gateway, namespace, "Accepted") == "True"
    # Per-backend metrics for the analysis: the candidate's count, with latency buckets down to milliseconds.
    # (Traefik counts a request after its answer is written: give it a moment.)
    deadline = time.monotonic() + 5
    while (got := backend_metrics(gateway, namespace, "candidate")).get("traefik_service_requests_total") != 100:
        assert time.monotonic() < deadline, got
        time.sleep(0.05)
    assert got["traefik_service_request_duration_seconds_count"] == 100
    assert got["traefik_service_request_duration_seconds_bucket{le=+Inf}"] == 100
    assert "traefik_service_request_duration_seconds_bucket{le=0.005}" in got  # Traefik's own lowest is 0.1 s


def test_split_follows_weight_changes(gateway: Gateway, namespace: str, backends: dict[str, Backend],
                                      client: Client) -> None:
    put_route(gateway, namespace, [split(("baseline", 90), ("candidate", 10))])
    client.wait_route(NAMES)
    client.wait_split(Counter(baseline=90, candidate=10))
    for weights in ((50, 50), (0, 100)):
        put_route(gateway, namespace, [split(("baseline", weights[0]), ("candidate", weights[1]))])
        expected = Counter({k: v for k, v in zip(("baseline", "candidate"), weights, strict=True) if v})
        client.wait_split(expected)  # within FOLLOW_BOUND_S; 0.2-0.6 s measured here
        assert client.answers(1000) == Counter({k: 10 * v for k, v in expected.items()})


def test_traefik_service_mirrors_to_the_shadow(gateway: Gateway, namespace: str, backends: dict[str, Backend],
                                               client: Client) -> None:
    # Traefik's mirroring: a TraefikService (traefik.io/v1alpha1) whose main service is the baseline and whose
    # mirror gets a copy of 100% of the requests; the route sends its rule there (backendRef kind TraefikService).
    mirror = {"apiVersion": "traefik.io/v1alpha1", "kind": "TraefikService",
              "metadata": {"name": "mirror", "namespace": namespace},
              "spec": {"mirroring": {"name": "baseline", "port": PORT,
                                     "mirrors": [{"name": "shadow", "port": PORT, "percent": 100}]}}}
    apply(gateway.kube, f"/apis/traefik.io/v1alpha1/namespaces/{namespace}/traefikservices/mirror", mirror)
    rule = {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
            "backendRefs": [{"group": "traefik.io", "kind": "TraefikService", "name": "mirror"}]}
    put_route(gateway, namespace, [rule])
    # The route and the TraefikService come from two providers: wait for the mirrored rule itself too.
    client.wait_route(NAMES)
    client.wait_ok("/ready")
    n = 500
    assert client.answers(n) == Counter(baseline=n)  # every answer from the baseline, never the shadow
    deadline = time.monotonic() + FOLLOW_BOUND_S
    while backends["shadow"].server.count("/work/") < n and time.monotonic() < deadline:
        time.sleep(0.05)  # copies are sent alongside, not before the answer
    shadow = backends["shadow"].server
    assert {p: c for p, c in shadow.paths.items() if p.startswith("/work/")} == {f"/work/{i}": 1 for i in range(n)}
    assert backends["baseline"].server.count("/work/") == n


def test_request_mirror_filter_is_not_implemented(gateway: Gateway, namespace: str, backends: dict[str, Backend],
                                                  client: Client) -> None:
    """Traefik v3.7 accepts the standard RequestMirror filter and then answers 500 to every request of the rule
    (log: "unsupported filter RequestMirror"). If this fails, Traefik implements it: mirror through the route."""
    mirrored = {**split(("baseline", 100)),
                "filters": [{"type": "RequestMirror", "requestMirror": {"backendRef": ref("shadow"), "percent": 100}}]}
    put_route(gateway, namespace, [mirrored])
    client.wait_route(NAMES)
    assert client.answers(20) == Counter({"500": 20})
    assert "unsupported filter RequestMirror" in gateway.log_path.read_text(errors="replace")
    assert backends["shadow"].server.count("/work/") == 0 and backends["baseline"].server.count("/work/") == 0
    assert route_condition(gateway, namespace, "Accepted") == "True"
