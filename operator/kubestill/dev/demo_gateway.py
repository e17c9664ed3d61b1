"""The demo's canary on a real node, through a real gateway: Traefik (kubestill.dev.gateway) enforces the
HTTPRoute that the CanaryRollout re-weights, a plain client (kubestill.dev.gateway_client) sends inference
requests to the Gateway's address and counts who answered, and upstream Prometheus discovers the Triton Pods
through the API server (kubernetes_sd_configs), as users run it.

The route declares both backendRefs from the start (the candidate at weight 0, as the README recommends for
GitOps), each with a ResponseHeaderModifier naming it, so the client tells the answers apart by a response
header and the rollout changes only the weights. The baseline is a second Service over the student's own Triton
Pods (the demo has no teacher server): which backendRef the gateway picked is what the counts show.
"""

from __future__ import annotations

import http.client
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubestill.builders.triton import model_name

from .controlplane import Cluster
from .demo_canary import (
    TRITON_HTTP_PORT,
    alert_rules,
    candidate_service,
    ensure_baseline_service,
    rollout_body,
    watch_rollout,
)
from .gateway import start_gateway
from .gateway_client import GatewayClient, tagged_backend_ref
from .kubeapi import KubeAPI
from .polling import wait_for
from .prometheus import PrometheusProcess, kubernetes_pods_job, start_prometheus


@dataclass
class GatewayCanaryResult:
    """The rollout's final status, and the answers the client got per phase it saw (phase, {tag: count})."""

    status: dict[str, Any]
    answers: list[tuple[str, dict[str, int]]]


def phase_label(status: dict[str, Any]) -> str:
    """How the client's counts are grouped: by the canary step status shows (`step 2 (50%)`, counted from 1 as
    the status message counts), `before the first step` until the operator has started it, or the phase.

    >>> phase_label({}), phase_label({"phase": "Progressing", "currentStep": 1, "currentWeight": 50})
    ('before the first step', 'step 2 (50%)')
    """
    phase = status.get("phase", "Pending")
    if phase == "Progressing" and status.get("currentStep", -1) >= 0:
        return f"step {status['currentStep'] + 1} ({status.get('currentWeight', 0)}%)"
    return "before the first step" if phase == "Pending" else str(phase)


def _series_seen(prom: PrometheusProcess, selector: str) -> bool:
    from kubestill.clients.prometheus import Prometheus

    return Prometheus(alerts_ttl=0).query_value(prom.url, f"sum(nv_inference_request_success{{{selector}}})") \
        is not None


def demo_canary_through_gateway(
    cluster: Cluster,
    namespace: str,
    student_model: str,
    *,
    steps: tuple[tuple[int, str], ...] = ((20, "8s"), (50, "8s"), (100, "3s")),
    rate: float = 20.0,
    timeout: float = 240.0,
    log: Callable[[str], None] = print,
) -> GatewayCanaryResult:
    """Roll Ready StudentModel `student_model` out through Traefik; returns the final status and the client's
    counts. Needs the operator and a real node running against `cluster`, Traefik and upstream Prometheus built
    (scripts/setup.sh as root). Raises TimeoutError when the route, Pods or metrics never come up."""
    api = KubeAPI(cluster.kubeconfig)
    service = candidate_service(api, namespace, student_model)
    baseline = ensure_baseline_service(cluster, api, namespace, service, f"{student_model}-baseline")
    selector = f'namespace="{namespace}",service="{service}"'
    scrape = kubernetes_pods_job("kubernetes-pods", cluster.kubeconfig, [namespace])
    with start_gateway(cluster.kubeconfig, name=f"demo-{uuid.uuid4().hex[:6]}") as gateway, \
            start_prometheus({}, alert_rules(selector, service), scrape_configs=[scrape]) as prom:
        log(f"gateway (Traefik) listening at {gateway.url}; Prometheus at {prom.url} discovers the Triton Pods "
            "through the API server")
        route_name = f"{student_model}-route"
        route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                 "metadata": {"name": route_name, "namespace": namespace},
                 "spec": {"parentRefs": [gateway.parent_ref()],
                          "rules": [{"backendRefs": [
                              tagged_backend_ref(baseline, TRITON_HTTP_PORT, 100, "baseline"),
                              tagged_backend_ref(service, TRITON_HTTP_PORT, 0, "candidate")]}]}}
        cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(route))
        client = GatewayClient(gateway.url, model_name(student_model), rate=rate, max_seconds=timeout)
        conn = http.client.HTTPConnection(gateway.host, gateway.port, timeout=10)
        wait_for(lambda: client.send(conn, 0) == "baseline", 60, "the route to answer through the gateway")
        conn.close()
        wait_for(lambda: _series_seen(prom, selector), 60, "Prometheus to discover the candidate's Triton Pod")
        body = rollout_body(namespace, student_model, route_name, baseline, prom.url, selector, steps)
        cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(body))
        client.start()
        try:
            status = watch_rollout(api, namespace, f"{student_model}-canary", timeout, log,
                                   on_change=lambda st: client.mark(phase_label(st)))
        finally:
            client.stop()
    answers = [(phase, dict(counts)) for phase, counts in client.snapshot() if counts]
    log("answers through the gateway, by the rollout status the client had seen (the operator writes the route "
        "a moment before the status, so a step's first answers can fall under the one before):")
    for phase, counts in answers:
        log(f"  {phase}: " + ", ".join(f"{who} {n}" for who, n in sorted(counts.items())))
    return GatewayCanaryResult(status, answers)
