"""Traefik as the Gateway API data plane of the tests, the benchmarks and `kubestill dev`: one `traefik` process
out of cluster, reading the API server through a kubeconfig, routing HTTPRoutes attached to a Gateway of ours.

The binary is built from Traefik's Go module by tests/cluster/traefik/build.sh into the same cache as the control
plane, with Traefik's CRDs beside it (traefik-crds.yml, from the same module zip). What the process needs in the
cluster: a GatewayClass for controller `traefik.io/gateway-controller` (labelled, so that this instance serves only
its own class), a Gateway with one HTTP listener whose port is that of Traefik's `web` entryPoint (Traefik maps
listeners to entryPoints by port), and Traefik's CRDs for the kubernetescrd provider (a TraefikService with
`mirroring` is how Traefik mirrors: it does not implement the Gateway API's RequestMirror filter, see
tests/integration/test_gateway.py). No RBAC: out of cluster, Traefik uses the kubeconfig's admin identity.

Sources: Gateway API v1 (gateway.networking.k8s.io, GatewayClass/Gateway/HTTPRoute), Traefik's docs "Kubernetes
Gateway API" and "Kubernetes CRD" providers, "Metrics > Prometheus" and the flags of `traefik --help`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from .controlplane import REPO_ROOT, default_bin_dir
from .kubeapi import KubeAPI, KubeError
from .ports import reserve_ports
from .procgroup import stop_group

BUILD_SCRIPT = REPO_ROOT / "tests" / "cluster" / "traefik" / "build.sh"
CRDS_FILE = "traefik-crds.yml"  # written by build.sh next to the binary
CONTROLLER_NAME = "traefik.io/gateway-controller"
SELECTOR_LABEL = "kubestill.io/gateway"
FIELD_MANAGER = "kubestill-gateway"
GATEWAY_API = "/apis/gateway.networking.k8s.io/v1"
# Seconds. Traefik's default buckets (0.1, 0.3, 1.2, 5) cannot tell a 5 ms answer from a 90 ms one; a canary's
# latency analysis needs the low end.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Traefik applies a provider's next configuration at most every providersThrottleDuration (default 2 s): a route
# change right after another event (e.g. Traefik's own status write) would wait that long.
THROTTLE = "200ms"


def ensure_traefik(bin_dir: Path | None = None) -> Path:
    """The traefik binary: built (or found current by its stamp) with the build script of a checkout.

    Raises FileNotFoundError outside a checkout when the cache holds no binary, CalledProcessError when the build
    fails."""
    target = bin_dir or default_bin_dir()
    if BUILD_SCRIPT.exists():
        env = {**os.environ, "KUBESTILL_BIN_DIR": str(target)}
        out = subprocess.run(["bash", str(BUILD_SCRIPT)], env=env, check=True, text=True, stdout=subprocess.PIPE)
        return Path(out.stdout.strip().splitlines()[-1])
    if not (target / "traefik").exists():
        raise FileNotFoundError(f"traefik not found in {target}; build it with tests/cluster/traefik/build.sh")
    return target / "traefik"


def build_gateway_class(name: str) -> dict[str, Any]:
    """A GatewayClass for Traefik's controller, labelled so that only the Traefik started for it serves it."""
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
            "metadata": {"name": name, "labels": {SELECTOR_LABEL: name}},
            "spec": {"controllerName": CONTROLLER_NAME}}


def build_gateway(name: str, namespace: str, class_name: str, port: int) -> dict[str, Any]:
    """A Gateway with one HTTP listener (`http`) on `port`, open to HTTPRoutes of every namespace."""
    listener = {"name": "http", "protocol": "HTTP", "port": port, "allowedRoutes": {"namespaces": {"from": "All"}}}
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"gatewayClassName": class_name, "listeners": [listener]}}


def build_ready_objects(name: str, namespace: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A TraefikService `<name>-ready` onto Traefik's own ping handler and an HTTPRoute for host
    ready.<name>.kubestill.invalid onto it: that host answers 200 once both providers (kubernetesgateway for the
    route, kubernetescrd for the TraefikService) have delivered their configuration. Without it the crd provider's
    first configuration could land after the readiness wait, and its reload restarts every weighted schedule."""
    service = {"apiVersion": "traefik.io/v1alpha1", "kind": "TraefikService",
               "metadata": {"name": f"{name}-ready", "namespace": namespace},
               "spec": {"weighted": {"services": [{"name": "ping@internal", "kind": "TraefikService"}]}}}
    parent = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": name, "sectionName": "http"}
    backend = {"group": "traefik.io", "kind": "TraefikService", "name": f"{name}-ready"}
    route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
             "metadata": {"name": f"{name}-ready", "namespace": namespace},
             "spec": {"parentRefs": [parent], "hostnames": [ready_host(name)], "rules": [{"backendRefs": [backend]}]}}
    return service, route


def ready_host(name: str) -> str:
    return f"ready.{name}.kubestill.invalid"  # RFC 2606: never a real name


def _objects(name: str, namespace: str, port: int) -> list[tuple[str, dict[str, Any]]]:
    """(URL, manifest) of everything a gateway needs in the cluster, in creation order."""
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    ready_service, ready_route = build_ready_objects(name, namespace)
    return [
        (f"/api/v1/namespaces/{namespace}", ns),
        (f"{GATEWAY_API}/gatewayclasses/{name}", build_gateway_class(name)),
        (f"{GATEWAY_API}/namespaces/{namespace}/gateways/{name}", build_gateway(name, namespace, name, port)),
        (f"/apis/traefik.io/v1alpha1/namespaces/{namespace}/traefikservices/{name}-ready", ready_service),
        (f"{GATEWAY_API}/namespaces/{namespace}/httproutes/{name}-ready", ready_route),
    ]


def traefik_argv(binary: Path, *, class_name: str, host: str, web_port: int, metrics_port: int,
                 buckets: Sequence[float] = LATENCY_BUCKETS) -> list[str]:
    """Traefik's command line: entryPoint `web` on host:web_port (the Gateway listener's port), `/metrics` and
    `/ping` on entryPoint `metrics` (127.0.0.1:metrics_port), the kubernetesgateway provider for GatewayClasses
    labelled `kubestill.io/gateway=<class_name>` (status address `host`) and the kubernetescrd provider."""
    return [
        str(binary),
        "--global.checkNewVersion=false", "--global.sendAnonymousUsage=false",
        "--log.level=INFO", "--log.noColor=true",
        f"--entryPoints.web.address={host}:{web_port}",
        f"--entryPoints.metrics.address=127.0.0.1:{metrics_port}",
        # Headers such as X_User are forwarded as they came (Traefik's default, stated to silence its warning):
        # the data plane must not change what the teacher and the student receive.
        "--entryPoints.web.http.aliasHeadersStrategy=keep", "--entryPoints.metrics.http.aliasHeadersStrategy=keep",
        "--providers.kubernetesgateway=true",
        f"--providers.kubernetesgateway.labelSelector={SELECTOR_LABEL}={class_name}",
        f"--providers.kubernetesgateway.statusAddress.ip={host}",
        # safeNaming: TraefikService names that cannot collide across namespaces (Traefik's advice for new setups).
        # allowEmptyServices: a TraefikService whose mirror target (the rollout's judge) has no ready endpoints is
        # kept, its main service serving and the copies failing; without it Traefik drops the TraefikService and
        # the route with it ("no servers found", a 404 for every request while the judge's Pod is gone).
        "--providers.kubernetescrd=true", "--providers.kubernetescrd.safeNaming=true",
        "--providers.kubernetescrd.allowEmptyServices=true",
        f"--providers.providersThrottleDuration={THROTTLE}",
        "--metrics.prometheus=true", "--metrics.prometheus.entryPoint=metrics",
        "--metrics.prometheus.addServicesLabels=true",
        "--metrics.prometheus.buckets=" + ",".join(str(b) for b in buckets),
        "--ping=true", "--ping.entryPoint=metrics",
    ]


@dataclass
class Gateway:
    """A running Traefik and the Gateway it programs. `url` is the listener (send requests there with an
    HTTPRoute's hostname as Host), `metrics_url` its Prometheus endpoint; `parent_ref()` attaches a route."""

    name: str
    namespace: str
    host: str
    port: int
    metrics_port: int
    workdir: Path
    process: subprocess.Popen[bytes]
    kube: KubeAPI
    owns_workdir: bool = True

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def log_path(self) -> Path:
        return self.workdir / "traefik.log"

    def parent_ref(self) -> dict[str, str]:
        """An HTTPRoute `spec.parentRefs` entry for this Gateway's listener."""
        return {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": self.name,
                "namespace": self.namespace, "sectionName": "http"}

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM to Traefik's process group, SIGKILL after `timeout` s; then delete the objects start_gateway
        made but the namespace (best effort: the API server may already be gone) and a temporary workdir."""
        stop_group(self.process, timeout)
        for path, _ in reversed(_objects(self.name, self.namespace, self.port)[1:]):  # the namespace stays
            with contextlib.suppress(KubeError, OSError):
                self.kube.delete(path)
        if self.owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def apply(kube: KubeAPI, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """Server-side apply of `body` at `path` (the object's own URL) as field manager kubestill-gateway, forced:
    these objects are ours alone. Raises KubeError with the API server's answer."""
    return kube.request("PATCH", path, body, params={"fieldManager": FIELD_MANAGER, "force": "true"},
                        content_type="application/apply-patch+yaml")


def install_traefik_crds(kube: KubeAPI, crds_file: Path, timeout: float = 60) -> list[str]:
    """Server-side apply Traefik's CRDs (server-side: several are too big for the last-applied annotation of a
    client-side apply) and wait until each is Established; returns their names. Raises TimeoutError."""
    names = []
    for doc in yaml.safe_load_all(crds_file.read_text()):
        if doc and doc.get("kind") == "CustomResourceDefinition":
            name = doc["metadata"]["name"]
            apply(kube, f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}", doc)
            names.append(name)
    for name in names:
        path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
        _wait(partial(_condition_at, kube, path, "Established"), timeout, f"CRD {name} not Established")
    return names


def _condition(obj: dict[str, Any] | None, kind: str) -> bool:
    """Whether `obj` has condition `kind` True for its current generation (when the condition records one)."""
    if obj is None:
        return False
    generation = obj.get("metadata", {}).get("generation")
    for cond in obj.get("status", {}).get("conditions") or []:
        if cond.get("type") == kind:
            observed = cond.get("observedGeneration", generation)
            return bool(cond.get("status") == "True" and observed == generation)
    return False


def _condition_at(kube: KubeAPI, path: str, kind: str) -> bool:
    return _condition(kube.get(path), kind)


def _wait(ready: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} after {timeout:g}s")
        time.sleep(interval)


def status(url: str, host: str | None = None, timeout: float = 1) -> int:
    """The HTTP status of GET `url` (with that Host header, when given); 0 when nothing answers."""
    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except OSError:
        return 0


def start_gateway(kubeconfig: Path, *, name: str = "kubestill", namespace: str = "kubestill-gateway",
                  host: str = "127.0.0.1", binary: Path | None = None, workdir: Path | None = None,
                  timeout: float = 60) -> Gateway:
    """Start Traefik against the cluster of `kubeconfig` and program a Gateway `namespace/name` (class `name`).

    Ready when the Gateway is Programmed for its generation and a route through a TraefikService answers on the
    listener (build_ready_objects): both providers are then in force. Raises
    RuntimeError when Traefik exits, TimeoutError after `timeout` s (the log is in workdir/traefik.log)."""
    binary = binary or ensure_traefik()
    kube = KubeAPI(kubeconfig)
    install_traefik_crds(kube, binary.parent / CRDS_FILE)
    taken: set[int] = set()
    web_port, metrics_port = reserve_ports(taken, host=host), reserve_ports(taken)
    for path, manifest in _objects(name, namespace, web_port):
        apply(kube, path, manifest)
    owns = workdir is None
    work = Path(tempfile.mkdtemp(prefix="kubestill-traefik-")) if workdir is None else workdir
    work.mkdir(parents=True, exist_ok=True)
    argv = traefik_argv(binary, class_name=name, host=host, web_port=web_port, metrics_port=metrics_port)
    # Out of cluster through KUBECONFIG: Traefik prefers the in-cluster config when these two are set.
    env = {k: v for k, v in os.environ.items() if k not in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")}
    env["KUBECONFIG"] = str(kubeconfig)
    with open(work / "traefik.log", "ab") as log:
        proc = subprocess.Popen(argv, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    running = Gateway(name, namespace, host, web_port, metrics_port, work, proc, kube, owns)
    try:
        _wait_ready(running, timeout)
    except TimeoutError as err:
        tail = running.log_path.read_text(errors="replace")[-2000:]  # stop() removes a temporary workdir
        running.stop()
        raise TimeoutError(f"{err}; traefik's log ends:\n{tail}") from None
    except BaseException:
        running.stop()
        raise
    return running


def _wait_ready(gateway: Gateway, timeout: float) -> None:
    path = f"{GATEWAY_API}/namespaces/{gateway.namespace}/gateways/{gateway.name}"

    def ready() -> bool:
        if gateway.process.poll() is not None:
            tail = gateway.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"traefik exited with {gateway.process.returncode}: {tail}")
        return _condition(gateway.kube.get(path), "Programmed") and status(gateway.url, ready_host(gateway.name)) == 200

    _wait(ready, timeout, f"Gateway {gateway.namespace}/{gateway.name} not Programmed and routing", interval=0.2)
