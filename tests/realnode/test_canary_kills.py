"""A canary you can trust under kills, on the real runtime: the chart's operator Deployment (the operator image,
two replicas with kopf peering) rolls a CanaryRollout out through Traefik while the active replica's process is
SIGKILLed on the host, twice, mid-step. Every step's weight must reach the route in order, once, and stay there
for at least the step's pause; every request a plain client sends through the gateway meanwhile is answered by the
baseline or the candidate (the data plane never depends on the operator being alive); the rollout is Promoted.

The process-node suite (tests/e2e/canary/test_canary_kills.py) kills a host process many times; this is the
same promise where users run it: a container killed under its kubelet, restarted by it, and the standby replica
and the restarted one settling who is active through the peering object.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubestill.dev.gateway import start_gateway
from kubestill.dev.gateway_client import GatewayClient, tagged_backend_ref
from kubestill.dev.kubeapi import KubeAPI
from kubestill.dev.realnode import RealNode

from .conftest import REPO_ROOT, describe_pods, get_json, wait_for

pytestmark = pytest.mark.realnode

STEPS = [10, 30, 60]
PAUSE = 8.0
# The route is polled every 0.2 s: a step can look shorter than it was by two polls, and the step's clock starts
# only once the operator has read the route back.
SLACK = 0.6
SERVER = """
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b'{"outputs": []}'
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("", 8080), H).serve_forever()
"""


def backend(name: str, image: str) -> list[dict[str, Any]]:
    labels = {"app": name}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "web", "image": image, "imagePullPolicy": "Never",
                                     "command": ["python3", "-c", SERVER], "ports": [{"containerPort": 8080}],
                                     "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}]}}},
    }
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
               "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]}}
    return [deployment, service]


def helm(node: RealNode, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(node.bin_dir / "helm"), f"--kubeconfig={node.cluster.kubeconfig}", *args],
                          capture_output=True, text=True, timeout=300)


class RouteLog:
    """(monotonic time, candidate weight) for every version of the route seen by polling it every 0.2 s."""

    def __init__(self, api: KubeAPI, path: str) -> None:
        self.api, self.path = api, path
        self.versions: list[tuple[float, int | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        seen = ""
        while not self._stop.wait(0.2):
            route = self.api.get(self.path) or {}
            version = route.get("metadata", {}).get("resourceVersion", "")
            if version and version != seen:
                seen = version
                refs = route["spec"]["rules"][0].get("backendRefs") or []
                weight = next((r.get("weight", 1) for r in refs if r["name"] == "candidate"), None)
                self.versions.append((time.monotonic(), weight))

    def __enter__(self) -> RouteLog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def held(self) -> list[tuple[int | None, float]]:
        """Each candidate weight the route carried, in order (repeats folded), and for how long (s)."""
        out: list[tuple[int | None, float]] = []
        versions = [*self.versions, (time.monotonic(), None)]
        for (t, weight), (t_next, _) in itertools.pairwise(versions):
            if out and out[-1][0] == weight:
                out[-1] = (weight, out[-1][1] + t_next - t)
            else:
                out.append((weight, t_next - t))
        return out


# What the kill loop reads goes through one in-process API client, not kubectl: each kubectl call starts a process
# and reads API discovery, seconds on a loaded machine, and a CI run once spent 40 s between seeing step 1 and the
# kill, by when the rollout had been promoted.
def _rollout_status(api: KubeAPI, namespace: str) -> dict[str, Any]:
    rollout = api.get(f"/apis/kubestill.io/v1alpha1/namespaces/{namespace}/canaryrollouts/kills") or {}
    return dict(rollout.get("status") or {})


def active_replica(api: KubeAPI, namespace: str, peering: str) -> str:
    """The Pod name of the active operator replica: of the peers in the KopfPeering whose record is fresh
    (lastseen + lifetime not past), the one of the highest priority ("" while none is)."""
    record = api.get(f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings/{peering}") or {}
    peers = record.get("status") or {}
    now = datetime.now(UTC)

    def fresh(peer: dict[str, Any]) -> bool:
        seen = datetime.fromisoformat(str(peer.get("lastseen", "1970-01-01T00:00:00")))
        seen = seen if seen.tzinfo else seen.replace(tzinfo=UTC)
        return seen + timedelta(seconds=float(peer.get("lifetime", 60))) > now

    live = {name: p for name, p in peers.items() if isinstance(p, dict) and "priority" in p and fresh(p)}
    return max(live, key=lambda name: live[name]["priority"]) if live else ""


def settled(node: RealNode, api: KubeAPI, namespace: str, peering: str) -> str:
    """The active replica once the peering has settled ("" before): both replicas have a fresh record, the one
    of the highest priority has resumed and the other is paused. The kills wait for it to mean anything. (In a
    cold CI run both replicas once resumed at start and the lower one paused only ~50 s later: Helm creates the
    KopfPeering after the Deployment, and replicas started before it existed all resumed when it appeared; each
    replica now waits for its peering object before kopf starts, tests/integration/test_operator_peering.py.)"""
    record = api.get(f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings/{peering}") or {}
    active = active_replica(api, namespace, peering)
    pods = [p["metadata"]["name"] for p in api.list(f"/api/v1/namespaces/{namespace}/pods",
                                                     selector="app.kubernetes.io/name=kubestill")]
    if not active or len(pods) != 2 or set(pods) - set(record.get("status") or {}):
        return ""
    return active if all(_paused(node, namespace, pod) == (pod != active) for pod in pods) else ""


def _paused(node: RealNode, namespace: str, pod: str) -> bool:
    """Whether kopf in `pod` holds its handlers for a peer: it starts paused, says "Resuming operations" when
    no live peer outranks it, and "Pausing operations in favour of" when one appears later."""
    log = node.cluster.kubectl("logs", "-n", namespace, pod, check=False).stdout
    return log.rfind("Resuming operations after the pause") <= log.rfind("Pausing operations in favour of")


def kill_container(api: KubeAPI, namespace: str, pod: str) -> None:
    """SIGKILL every process of the Pod's container, from the host (as the OOM killer or a crash would)."""
    status = (api.get(f"/api/v1/namespaces/{namespace}/pods/{pod}") or {})["status"]["containerStatuses"][0]
    container_id = status["containerID"].split("://", 1)[1]
    killed = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            in_container = container_id in (proc / "cgroup").read_text()
        except OSError:
            continue
        if in_container:
            try:
                os.kill(int(proc.name), signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
    assert killed, f"no process of container {container_id} found on the host"


def at_step(api: KubeAPI, namespace: str, step: int) -> bool:
    status = _rollout_status(api, namespace)
    return status.get("phase") == "Progressing" and status.get("currentStep") == step


def test_rollout_through_the_gateway_survives_sigkilled_operator_replicas(
        real_node: RealNode, namespace: str, loaded: Callable[[RealNode, str], str]) -> None:
    image = loaded(real_node, "operator")
    cluster = real_node.cluster
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input=yaml.safe_dump_all([*backend("baseline", image), *backend("candidate", image)]))
    peering = f"kills-{namespace}"
    done = helm(real_node, "install", "kubestill", str(REPO_ROOT / "charts" / "kubestill"), "-n", namespace,
                "--set", "crds.enabled=false", "--set", "watch.mode=namespaced",
                "--set", f"peering.name={peering}", "--wait", "--timeout", "3m")
    api = KubeAPI(cluster.kubeconfig)
    try:
        assert done.returncode == 0, f"{done.stderr}\n{describe_pods(real_node, namespace)}"
        with start_gateway(cluster.kubeconfig, name=f"kills-{namespace[-6:]}") as gateway:
            route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                     "metadata": {"name": "route", "namespace": namespace},
                     "spec": {"parentRefs": [gateway.parent_ref()], "rules": [{"backendRefs": [
                         tagged_backend_ref("baseline", 80, 100, "baseline"),
                         tagged_backend_ref("candidate", 80, 0, "candidate")]}]}}
            cluster.kubectl("apply", "-f", "-", input=json.dumps(route))
            client = GatewayClient(gateway.url, "any", rate=20, max_seconds=300)
            conn = http.client.HTTPConnection(gateway.host, gateway.port, timeout=10)
            wait_for(lambda: client.send(conn, 0) == "baseline", 60, "the route to answer through the gateway")
            conn.close()
            rollout = {"apiVersion": "kubestill.io/v1alpha1", "kind": "CanaryRollout",
                       "metadata": {"name": "kills", "namespace": namespace},
                       "spec": {"route": {"name": "route"}, "baseline": {"name": "baseline", "port": 80},
                                "candidate": {"service": {"name": "candidate", "port": 80}},
                                "steps": [{"weight": w, "pause": f"{PAUSE:g}s"} for w in STEPS]}}
            route_path = f"/apis/gateway.networking.k8s.io/v1/namespaces/{namespace}/httproutes/route"
            explain = partial(_operators, real_node, namespace, peering)
            _wait(lambda: settled(real_node, api, namespace, peering), 150,
                  "the peering to settle (one replica active, the other paused)", explain)
            with RouteLog(api, route_path) as log:
                wait_for(lambda: log.versions, 10, "the route's first version in the log")
                client.start()
                try:
                    cluster.kubectl("apply", "-f", "-", input=json.dumps(rollout))
                    killed: list[str] = []
                    for step in (0, 1):  # mid-step: a second into the step's pause
                        _wait(partial(at_step, api, namespace, step), 120, f"step {step + 1}", explain)
                        time.sleep(1)
                        victim = _wait(lambda: active_replica(api, namespace, peering), 60,
                                       "an active operator replica in the peering", explain)
                        kill_container(api, namespace, victim)
                        killed.append(victim)
                    status = _wait(lambda: _finished(api, namespace), 240, "the rollout to finish", explain)
                    # The promotion's route write and the status come within milliseconds of each other: keep
                    # polling until the log has the last version too.
                    wait_for(lambda: status["phase"] != "Promoted" or log.versions[-1][1] == 100, 15,
                             "the promoted route in the log")
                finally:
                    client.stop()
        assert status["phase"] == "Promoted", (status, describe_pods(real_node, namespace))
        restarts = {p["metadata"]["name"]: p["status"]["containerStatuses"][0]["restartCount"] for p in
                    get_json(real_node, "pods", "-n", namespace, "-l", "app.kubernetes.io/name=kubestill")["items"]}
        assert all(restarts[name] >= 1 for name in killed), restarts  # the kills were real

        held = log.held()
        print(f"route held {[(w, round(t, 1)) for w, t in held]}; answers {dict(client.total())}; "
              f"restarts {restarts}")
        weights = [w for w, _ in held]
        assert weights[:weights.index(100) + 1] == [0, *STEPS, 100], held
        for weight, seconds in held:
            if weight in STEPS:
                assert seconds >= PAUSE - SLACK, f"step {weight}% held {seconds:.1f}s < {PAUSE}s: {held}"
        answers = client.total()
        assert set(answers) == {"baseline", "candidate"}, answers  # no error, no gateway-made answer
        assert answers["candidate"] > 0 and sum(answers.values()) > 20 * 3 * PAUSE * 0.5, answers
    finally:
        cluster.kubectl("delete", "canaryrollout", "kills", "-n", namespace, "--ignore-not-found", "--wait=false",
                        check=False)
        helm(real_node, "uninstall", "kubestill", "-n", namespace, "--wait", "--timeout", "2m")


def _finished(api: KubeAPI, namespace: str) -> dict[str, Any]:
    status = _rollout_status(api, namespace)
    return status if status.get("phase") in ("Promoted", "RolledBack", "Failed") else {}


def _wait(check: Callable[[], Any], timeout: float, what: str, explain: Callable[[], str]) -> Any:
    """wait_for, with the operator replicas' side of the story in the failure message."""
    try:
        return wait_for(check, timeout, what)
    except AssertionError as err:
        raise AssertionError(f"{err}\n{explain()}") from None


def _operators(node: RealNode, namespace: str, peering: str) -> str:
    """Why no replica moved the rollout: its status, the peering record, each operator container's log (the
    killed one's previous run too), their restarts and probes, and the namespace's events."""
    kubectl = node.cluster.kubectl
    rollout = get_json(node, "canaryrollout", "kills", "-n", namespace).get("status")
    peers = get_json(node, "kopfpeering", peering, "-n", namespace).get("status")
    parts = [f"rollout status: {json.dumps(rollout)}", f"peering: {json.dumps(peers)}, now {datetime.now(UTC)}"]
    pods = get_json(node, "pods", "-n", namespace, "-l", "app.kubernetes.io/name=kubestill").get("items", [])
    for pod in pods:
        name = pod["metadata"]["name"]
        parts.append(f"--- {name}: {json.dumps(pod['status'].get('containerStatuses'))}")
        for previous in ("--previous=true", "--previous=false"):
            out = kubectl("logs", "-n", namespace, name, previous, "--timestamps", "--tail", "60", check=False)
            parts.append(f"--- {name} logs {previous} ---\n{(out.stdout or out.stderr)[-5000:]}")
    events = kubectl("get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False).stdout
    parts.append(f"--- events ---\n{events[-4000:]}")
    return "\n".join(parts)
