"""Real traffic through a real Gateway API data plane: Traefik (kubestill.dev.gateway) on the real kube-apiserver.

The backends are Python HTTP servers on this machine's non-loopback address, published as selector-less Services
with hand-written EndpointSlices (nothing runs Pods here, and the API server refuses 127.0.0.1 in an EndpointSlice).
Every backend names itself in its answers (header X-Backend) and records the paths it was asked for, so a split
is counted from what the client got, and a mirror from what the shadow received.

Gateway API v1: HTTPRoute backendRefs weights ("proportional to the sum of weights"), the RequestMirror filter
(Extended support). Traefik's WRR is an earliest-deadline-first schedule (pkg/server/service/loadbalancer/wrr):
deterministic, so 1,000 requests at 90/10 are exactly 900/100.
"""

from __future__ import annotations

import http.client
import re
import socket
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kubestill.dev.controlplane import Cluster
from kubestill.dev.gateway import GATEWAY_API, Gateway, apply, start_gateway

pytestmark = pytest.mark.integration

NAMES = ("baseline", "candidate", "shadow")
PORT = 80  # the Services' port; each backend listens on its own free port (the EndpointSlice's)
FOLLOW_BOUND_S = 10.0  # Traefik applies a route change in 0.1-0.3 s (FINDINGS); far above that is a failure


def host_address() -> str | None:
    """This machine's non-loopback IPv4 address: the source address of a UDP socket connected outward (connect()
    on a datagram socket only picks the route, nothing is sent). None when there is none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1 (RFC 5737): any routable destination does
        except OSError:
            return None
        address: str = s.getsockname()[0]
    return None if address.startswith("127.") or address == "0.0.0.0" else address


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Traefik talks to its backends
    disable_nagle_algorithm = True  # else 40 ms per keep-alive answer (delayed ACK)
    server: _Server

    def do_GET(self) -> None:
        self.server.record(self.path)
        body = self.server.name.encode()
        self.send_response(200)
        self.send_header("X-Backend", self.server.name)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, name: str, address: str) -> None:
        super().__init__((address, 0), _Handler)
        self.name = name
        self.paths: Counter[str] = Counter()
        self._lock = threading.Lock()

    def record(self, path: str) -> None:
        with self._lock:
            self.paths[path] += 1

    def count(self, prefix: str) -> int:
        with self._lock:
            return sum(n for p, n in self.paths.items() if p.startswith(prefix))


@dataclass
class Backend:
    """One HTTP backend on `address`, served from a thread until close()."""

    name: str
    server: _Server
    thread: threading.Thread = field(repr=False)

    @classmethod
    def start(cls, name: str, address: str) -> Backend:
        server = _Server(name, address)
        thread = threading.Thread(target=server.serve_forever, name=f"backend-{name}", daemon=True)
        thread.start()
        return cls(name, server, thread)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def service(namespace: str, backend: Backend) -> dict[str, Any]:
    """A selector-less Service: its endpoints are ours to write."""
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": backend.name, "namespace": namespace},
            "spec": {"ports": [{"name": "http", "port": PORT, "targetPort": backend.port, "protocol": "TCP"}]}}


def endpoint_slice(namespace: str, backend: Backend, address: str) -> dict[str, Any]:
    """The Service's one endpoint: the backend's address and port (the slice's port name matches the Service's)."""
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": backend.name, "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": backend.name}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
            "ports": [{"name": "http", "port": backend.port, "protocol": "TCP"}]}


def ref(name: str, weight: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "port": PORT}
    if weight is not None:
        out["weight"] = weight
    return out


def route(namespace: str, gateway: Gateway, rules: list[dict[str, Any]]) -> dict[str, Any]:
    """HTTPRoute `r` on the gateway for host <namespace>.test. A first rule sends /probe to every backend in turn
    (Client.wait_route), so that waiting for the route does not move the weighted rule's schedule."""
    probe = {"matches": [{"path": {"type": "PathPrefix", "value": "/probe"}}],
             "backendRefs": [ref(name, 1) for name in NAMES]}
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "r", "namespace": namespace},
            "spec": {"parentRefs": [gateway.parent_ref()], "hostnames": [f"{namespace}.test"],
                     "rules": [probe, *rules]}}


def split(*weights: tuple[str, int]) -> dict[str, Any]:
    return {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
            "backendRefs": [ref(name, weight) for name, weight in weights]}


class Client:
    """One keep-alive connection to the gateway, sending Host: <namespace>.test."""

    def __init__(self, gateway: Gateway, namespace: str) -> None:
        self.conn = http.client.HTTPConnection(gateway.host, gateway.port, timeout=10)
        self.host = f"{namespace}.test"

    def get(self, path: str) -> tuple[int, str]:
        """(status, the X-Backend that answered, or '' when the gateway answered itself)."""
        self.conn.request("GET", path, headers={"Host": self.host})
        resp = self.conn.getresponse()
        resp.read()
        return resp.status, resp.getheader("X-Backend") or ""

    def answers(self, n: int, path: str = "/work") -> Counter[str]:
        """Who answered each of `n` requests (a status other than 200 counts under its number)."""
        out: Counter[str] = Counter()
        for i in range(n):
            status, backend = self.get(f"{path}/{i}")
            out[backend if status == 200 else str(status)] += 1
        return out

    def wait_ok(self, path: str, timeout: float = FOLLOW_BOUND_S) -> float:
        """Seconds until GET `path` answers 200. Raises TimeoutError."""
        start = time.monotonic()
        while (status := self.get(path)[0]) != 200:
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"GET {path} on {self.host}: still {status} after {timeout}s")
            time.sleep(0.02)
        return time.monotonic() - start

    def wait_route(self, timeout: float = FOLLOW_BOUND_S) -> float:
        """Seconds until /probe is answered by every backend in a row. Traefik watches each kind apart, so a
        route can be in force before a Service or EndpointSlice it names (that backend answers 500 or 503
        meanwhile); once every backend answers, the route's configuration is complete. Raises TimeoutError."""
        start, last = time.monotonic(), [""] * len(NAMES)
        while sorted(last) != sorted(NAMES):
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"route on {self.host}: /probe answered by {last} after {timeout}s")
            status, backend = self.get("/probe")
            last = [*last[1:], backend if status == 200 else str(status)]
        return time.monotonic() - start

    def wait_split(self, expected: Counter[str], window: int = 100, timeout: float = FOLLOW_BOUND_S) -> float:
        """Seconds until a window of `window` requests is answered exactly as `expected`. Raises TimeoutError."""
        start = time.monotonic()
        while (got := self.answers(window)) != expected:
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"split still {dict(got)} after {timeout}s, expected {dict(expected)}")
        return time.monotonic() - start

    def close(self) -> None:
        self.conn.close()


@pytest.fixture(scope="module")
def address() -> str:
    found = host_address()
    if found is None:
        pytest.skip("no non-loopback IPv4 address: the API server refuses 127.0.0.1 in EndpointSlices")
    return found


@pytest.fixture(scope="module")
def gateway(cluster: Cluster) -> Iterator[Gateway]:
    """One Traefik for the module, with a GatewayClass and a Gateway of its own."""
    with start_gateway(cluster.kubeconfig, name=f"gw-{uuid.uuid4().hex[:8]}") as running:
        yield running


@pytest.fixture
def backends(gateway: Gateway, namespace: str, address: str) -> Iterator[dict[str, Backend]]:
    """baseline, candidate and shadow, published in the test's namespace. Afterwards the test's routes are deleted
    at once (not later with the namespace): a route change makes Traefik rebuild its handlers, which would restart
    the next test's weighted schedule in the middle of a count."""
    started = {name: Backend.start(name, address) for name in NAMES}
    try:
        for backend in started.values():
            apply(gateway.kube, f"/api/v1/namespaces/{namespace}/services/{backend.name}",
                  service(namespace, backend))
            apply(gateway.kube, f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices/{backend.name}",
                  endpoint_slice(namespace, backend, address))
        yield started
    finally:
        gateway.kube.delete(f"{GATEWAY_API}/namespaces/{namespace}/httproutes/r")
        gateway.kube.delete(f"/apis/traefik.io/v1alpha1/namespaces/{namespace}/traefikservices/mirror")
        for backend in started.values():
            backend.close()


@pytest.fixture
def client(gateway: Gateway, namespace: str) -> Iterator[Client]:
    c = Client(gateway, namespace)
    try:
        yield c
    finally:
        c.close()


def put_route(gateway: Gateway, namespace: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return apply(gateway.kube, f"{GATEWAY_API}/namespaces/{namespace}/httproutes/r", route(namespace, gateway, rules))


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
    client.wait_route()
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
    client.wait_route()
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
    client.wait_route()
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
    client.wait_route()
    assert client.answers(20) == Counter({"500": 20})
    assert "unsupported filter RequestMirror" in gateway.log_path.read_text(errors="replace")
    assert backends["shadow"].server.count("/work/") == 0 and backends["baseline"].server.count("/work/") == 0
    assert route_condition(gateway, namespace, "Accepted") == "True"
