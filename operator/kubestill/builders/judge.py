"""The agreement judge of a CanaryRollout: a Deployment running `kubestill judge` from the operator image and
the Service the route mirrors to. Pure: settings in, manifest dicts out. Not wired yet (issue #17, part 2: the
canary handler applies them when spec.analysis.agreement is set).

The judge's settings travel as KUBESTILL_JUDGE_* variables (kubestill.api.judge.JudgeSettings.to_env, read back
by the CLI with from_env). One replica: the judge keeps its counters in memory and Prometheus sums over Pods, so
more replicas would be correct but each would hold its own share of the --max-rps budget; one keeps the bound
on the teacher what the user set.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubestill.api.judge import METRICS_PORT, MIRROR_PORT, JudgeSettings, env_name
from kubestill.api.names import judge_name
from kubestill.api.v1alpha1.canaryrollout import BackendRef

from .meta import build_cluster_ip_service, child_metadata

JUDGE_CONTAINER = "judge"
ROLLOUT_LABEL = "kubestill.io/canaryrollout"
# Requests of a judge comparing at 10 requests per second (the default bound); its limits leave room for
# bursts of large embeddings or generations being parsed.
DEFAULT_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"memory": "512Mi"},
}


def judge_backend(rollout: str) -> BackendRef:
    """The judge's Service as the route's mirror target: `<rollout>-judge`, its http port.

    >>> judge_backend("sentiment")
    BackendRef(name='sentiment-judge', port=8080)
    """
    return BackendRef(name=judge_name(rollout), port=MIRROR_PORT)


def _labels(rollout: str) -> dict[str, str]:
    return {ROLLOUT_LABEL: rollout, "app.kubernetes.io/name": "kubestill-judge",
            "app.kubernetes.io/instance": judge_name(rollout)}


def build_judge_deployment(
    rollout: Mapping[str, Any],
    settings: JudgeSettings,
    *,
    image: str,
    pull_policy: str = "IfNotPresent",
    pull_secrets: tuple[str, ...] = (),
    pod_security: Mapping[str, Any] | None = None,
    security: Mapping[str, Any] | None = None,
    resources: Mapping[str, Any] | None = None,
    extra_labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """apps/v1 Deployment `<rollout>-judge`, owned by the rollout: `kubestill judge` on MIRROR_PORT (http) and
    METRICS_PORT (metrics, scraped by Prometheus through the pod annotations), ready and live on /healthz.
    `image` is the operator image (the judge needs no torch); `pod_security` and `security` are the Pod's and
    the container's securityContext (the chart's restricted ones)."""
    name = rollout["metadata"]["name"]
    env = [{"name": k, "value": v} for k, v in sorted(settings.to_env().items())]
    env += [{"name": env_name("port"), "value": str(MIRROR_PORT)},
            {"name": env_name("metrics_port"), "value": str(METRICS_PORT)}]
    container: dict[str, Any] = {
        "name": JUDGE_CONTAINER,
        "image": image,
        "imagePullPolicy": pull_policy,
        "command": ["kubestill", "judge"],
        "env": env,
        "ports": [{"name": "http", "containerPort": MIRROR_PORT},
                  {"name": "metrics", "containerPort": METRICS_PORT}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "metrics"}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "metrics"}, "periodSeconds": 10,
                          "failureThreshold": 6},
        "resources": dict(resources if resources is not None else DEFAULT_RESOURCES),
    }
    if security:
        container["securityContext"] = dict(security)
    pod_spec: dict[str, Any] = {"containers": [container], "automountServiceAccountToken": False}
    if pod_security:
        pod_spec["securityContext"] = dict(pod_security)
    if pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in pull_secrets]
    metadata = child_metadata(judge_name(name), rollout, _labels(name), extra_labels)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/instance": judge_name(name)}},
            "template": {
                "metadata": {
                    "labels": dict(metadata["labels"]),
                    "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(METRICS_PORT)},
                },
                "spec": pod_spec,
            },
        },
    }


def build_judge_service(rollout: Mapping[str, Any], extra_labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """ClusterIP Service `<rollout>-judge`: http (the mirror target of the route) and metrics."""
    name = rollout["metadata"]["name"]
    return build_cluster_ip_service(judge_name(name), rollout, _labels(name), extra_labels,
                                    [("http", MIRROR_PORT), ("metrics", METRICS_PORT)])
