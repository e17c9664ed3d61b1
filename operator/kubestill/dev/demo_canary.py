"""The demo's last act: roll a Ready StudentModel out over an HTTPRoute with short pauses, analysed by a real
Prometheus, with a load generator playing the gateway's data plane.

Call `demo_canary(cluster, namespace, "my-student")` after the StudentModel is Ready (the local node serves
its Triton Deployment and publishes the Service's local URLs). Without a separate baseline Service, the demo
creates `<student>-baseline`, a second Service over the same Triton Pods: the local demo has no teacher
server, so both sides of the split reach one tritonserver, while everything the rollout does (steps, route
weights, Prometheus analysis, rollback alerts, status, Events) is the real thing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from kubestill.api.v1alpha1.canaryrollout import BackendRef
from kubestill.builders.triton import model_name

from .controlplane import Cluster
from .kubeapi import KubeAPI
from .loadgen import LoadGenerator, route_reader
from .polling import wait_for
from .prometheus import start_prometheus
from .services import local_endpoints

TRITON_HTTP_PORT = 8000


def alert_rules(selector: str, service: str) -> dict[str, Any]:
    """The demo's rollback alert: any failed inference of the candidate's Triton (`selector`: PromQL label
    matchers of its series, e.g. `job="candidate"`) in the last 10 s, labelled with its Service."""
    return {
        "groups": [{
            "name": "kubestill-demo",
            "interval": "1s",
            "rules": [{
                "alert": "StudentErrors",
                "expr": f'sum(rate(nv_inference_request_failure{{{selector}}}[10s])) > 0',
                "labels": {"service": service, "severity": "page"},
            }],
        }]
    }


def rollout_body(namespace: str, student_model: str, route_name: str, baseline: str, prometheus_url: str,
                 selector: str, steps: tuple[tuple[int, str], ...]) -> dict[str, Any]:
    """The demo's CanaryRollout `<student>-canary`: `steps` of (weight %, pause), analysed every 2 s on the
    candidate's Triton success ratio (series matched by `selector`), rolled back by alert_rules()' alert."""
    ok = f'sum(rate(nv_inference_request_success{{{selector}}}[10s]))'
    failed = f'sum(rate(nv_inference_request_failure{{{selector}}}[10s]))'
    return {
        "apiVersion": "kubestill.io/v1alpha1", "kind": "CanaryRollout",
        "metadata": {"name": f"{student_model}-canary", "namespace": namespace},
        "spec": {
            "route": {"name": route_name},
            "baseline": {"name": baseline, "port": TRITON_HTTP_PORT},
            "candidate": {"studentModel": student_model},
            "steps": [{"weight": w, "pause": p} for w, p in steps],
            "analysis": {
                "prometheusUrl": prometheus_url, "interval": "2s", "inconclusiveLimit": 6,
                "metrics": [{"name": "success-ratio", "query": f"{ok} / ({ok} + {failed})", "min": 0.99}],
            },
            "rollbackAlerts": [{"labels": {"service": "{{candidate}}", "severity": "page"}}],
            "promotion": {"keepBaselineFor": "30s"},
        },
    }


def _local_urls(api: KubeAPI, namespace: str, service: str, timeout: float = 120) -> dict[str, str]:
    """The process node's local URLs of `service` by port name, once it publishes an http one."""
    def published() -> dict[str, str]:
        found = local_endpoints(namespace, service, api=api)
        return found if found.get("http") else {}

    return wait_for(published, timeout, f"the local endpoints of Service {service}")


def candidate_service(api: KubeAPI, namespace: str, student_model: str, timeout: float = 120) -> str:
    """The Service of a StudentModel's Triton, once its status names it."""
    path = f"/apis/kubestill.io/v1alpha1/namespaces/{namespace}/studentmodels/{student_model}"
    name: str = wait_for(lambda: str(((api.get(path) or {}).get("status") or {}).get("serviceName") or ""),
                         timeout, f"the Service of StudentModel {student_model}")
    return name


def ensure_baseline_service(cluster: Cluster, api: KubeAPI, namespace: str, service: str, baseline: str) -> str:
    """Service `baseline`: a second Service over the Pods of `service` (the demo has no teacher server)."""
    svc = api.get(f"/api/v1/namespaces/{namespace}/services/{service}") or {}
    body = {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": baseline, "namespace": namespace,
                         "labels": {"app.kubernetes.io/managed-by": "kubestill-demo"}},
            "spec": {"selector": svc.get("spec", {}).get("selector", {}), "ports": svc.get("spec", {}).get(
                "ports", [{"name": "http", "port": TRITON_HTTP_PORT}])}}
    cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(body))
    return baseline


def demo_canary(
    cluster: Cluster,
    namespace: str,
    student_model: str,
    baseline_service: str | None = None,
    *,
    steps: tuple[tuple[int, str], ...] = ((20, "6s"), (50, "6s"), (100, "3s")),
    timeout: float = 180.0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Roll `student_model` out step by step; returns the CanaryRollout's final status (Promoted or
    RolledBack). Needs the operator and the local node running against `cluster`."""
    api = KubeAPI(cluster.kubeconfig)
    service = candidate_service(api, namespace, student_model)
    cand_urls = _local_urls(api, namespace, service)
    baseline = baseline_service or ensure_baseline_service(cluster, api, namespace, service,
                                                           f"{student_model}-baseline")
    base_urls = _local_urls(api, namespace, baseline)

    route_name = f"{student_model}-route"
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": route_name, "namespace": namespace},
        "spec": {"parentRefs": [{"name": "demo-gateway"}],
                 "rules": [{"backendRefs": [{"name": baseline, "port": TRITON_HTTP_PORT, "weight": 100}]}]},
    }
    cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(route))

    metrics = cand_urls.get("metrics", "").split("//")[-1]
    jobs = {"candidate": [metrics]} if metrics else {}
    with start_prometheus(jobs, alert_rules('job="candidate"', service)) as prom:
        log(f"prometheus at {prom.url}, scraping the candidate's Triton metrics at {metrics or '(none)'}")
        body = rollout_body(namespace, student_model, route_name, baseline, prom.url, 'job="candidate"', steps)
        cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(body))
        read = route_reader(cluster.server, cluster.token, cluster.ca_file, namespace, route_name, 0,
                            BackendRef(name=baseline, port=TRITON_HTTP_PORT),
                            BackendRef(name=service, port=TRITON_HTTP_PORT))
        load = LoadGenerator(read, base_urls["http"], cand_urls["http"], model=model_name(student_model),
                             rate=20, max_seconds=timeout).start()
        try:
            status = watch_rollout(api, namespace, f"{student_model}-canary", timeout, log)
        finally:
            load.stop()
        tallies = load.snapshot()
        log(f"requests: baseline {tallies['baseline'].ok} ok / {tallies['baseline'].failed} failed, "
            f"candidate {tallies['candidate'].ok} ok / {tallies['candidate'].failed} failed")
        return status


def watch_rollout(api: KubeAPI, namespace: str, name: str, timeout: float, log: Callable[[str], None],
                  on_change: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Print each new phase/message of CanaryRollout `name` until it ends (Promoted, RolledBack, Failed) or
    `timeout` seconds pass; `on_change` sees each new status. Returns the last status seen."""
    path = f"/apis/kubestill.io/v1alpha1/namespaces/{namespace}/canaryrollouts/{name}"
    last = ""
    status: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = (api.get(path) or {}).get("status") or {}
        line = f"{status.get('phase', 'Pending')}: {status.get('message', '')}"
        if line != last:
            log(f"canary {line}")
            last = line
            if on_change is not None:
                on_change(status)
        if status.get("phase") in ("Promoted", "RolledBack", "Failed"):
            break
        time.sleep(0.5)
    return status
