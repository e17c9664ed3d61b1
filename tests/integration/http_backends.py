"""Real HTTP backends behind a real gateway, for the tests that send traffic through Traefik
(tests/integration/test_gateway.py, test_gateway_canary.py).

The backends are Python HTTP servers on this machine's non-loopback address, published as selector-less Services
with hand-written EndpointSlices (nothing runs Pods here, and the API server refuses 127.0.0.1 in an EndpointSlice).
Every backend names itself in its answers (header X-Backend) and records the paths it was asked for, so a split
is counted from what the client got, and a mirror from what the shadow received.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kubestill.dev.gateway import GATEWAY_API, Gateway, apply

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


def publish(gateway: Gateway, namespace: str, backend: Backend, address: str) -> None:
    """The backend's Service and EndpointSlice in `namespace`."""
    apply(gateway.kube, f"/api/v1/namespaces/{namespace}/services/{backend.name}", service(namespace, backend))
    apply(gateway.kube, f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices/{backend.name}",
          endpoint_slice(namespace, backend, address))


@contextlib.contextmanager
def published(gateway: Gateway, namespace: str, address: str, names: Sequence[str],
              also_delete: Sequence[str] = ()) -> Iterator[dict[str, Backend]]:
    """Backends `names` on `address`, published in `namespace`. Afterwards the route `r` (and the API paths of
    `also_delete`) go at once, not later with the namespace: a route change makes Traefik rebuild its handlers,
    which would restart the next test's weighted schedule in the middle of a count."""
    started = {name: Backend.start(name, address) for name in names}
    try:
        for backend in started.values():
            publish(gateway, namespace, backend, address)
        yield started
    finally:
        gateway.kube.delete(f"{GATEWAY_API}/namespaces/{namespace}/httproutes/r")
        for path in also_delete:
            gateway.kube.delete(path)
        for backend in started.values():
            backend.close()


def put_route(gateway: Gateway, namespace: str, rules: list[dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    return apply(gateway.kube, f"{GATEWAY_API}/namespaces/{namespace}/httproutes/r",
                 route(namespace, gateway, rules, names))


def ref(name: str, weight: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "port": PORT}
    if weight is not None:
        out["weight"] = weight
    return out


def route(namespace: str, gateway: Gateway, rules: list[dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """HTTPRoute `r` on the gateway for host <namespace>.test. A first rule sends /probe to every backend of
    `names` in turn (Client.wait_route), so that waiting for the route does not move the weighted rule's
    schedule."""
    probe = {"matches": [{"path": {"type": "PathPrefix", "value": "/probe"}}],
             "backendRefs": [ref(name, 1) for name in names]}
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

    def wait_route(self, names: Sequence[str], timeout: float = FOLLOW_BOUND_S) -> float:
        """Seconds until /probe is answered by every backend of `names` in a row (the probe rule of route()).
        Traefik watches each kind apart, so a route can be in force before a Service or EndpointSlice it names
        (that backend answers 500 or 503 meanwhile); once every backend answers, the route's configuration is
        complete. Raises TimeoutError."""
        start, last = time.monotonic(), [""] * len(names)
        while sorted(last) != sorted(names):
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
