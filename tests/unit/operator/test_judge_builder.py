"""The judge's Deployment and Service (kubestill.builders.judge): owned by the rollout, the settings carried as
the variables `kubestill judge` reads back, probes and the Service on the ports the judge listens on."""

from __future__ import annotations

from typing import Any

import pytest

from kubestill.api.judge import METRICS_PORT, MIRROR_PORT, JudgeSettings
from kubestill.api.v1alpha1.common import Task
from kubestill.builders.judge import build_judge_deployment, build_judge_service
from kubestill.cli import build_parser

ROLLOUT: dict[str, Any] = {"apiVersion": "kubestill.io/v1alpha1", "kind": "CanaryRollout",
           "metadata": {"name": "news", "namespace": "ml", "uid": "u-1"}}
SETTINGS = JudgeSettings(Task.CLASSIFICATION, "http://news-teacher.ml.svc:8000", "http://news-triton.ml.svc:8000",
                         sample=20.0, max_rps=4.0)


def env_of(deployment: dict[str, Any]) -> dict[str, str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"]}


def test_the_judge_reads_back_exactly_the_settings_the_deployment_carries(monkeypatch: pytest.MonkeyPatch) -> None:
    deployment = build_judge_deployment(ROLLOUT, SETTINGS, image="kubestill-operator:0.1.0")
    env = env_of(deployment)
    assert JudgeSettings.from_env(env) == SETTINGS
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args = build_parser().parse_args(["judge"])  # the CLI's defaults come from the same variables
    assert (args.port, args.metrics_port) == (MIRROR_PORT, METRICS_PORT)
    assert deployment["spec"]["template"]["spec"]["containers"][0]["command"] == ["kubestill", "judge"]


def test_deployment_and_service_are_owned_by_the_rollout_and_select_the_same_pods() -> None:
    deployment = build_judge_deployment(ROLLOUT, SETTINGS, image="op:1", extra_labels={"team": "ml"})
    service = build_judge_service(ROLLOUT, extra_labels={"team": "ml"})
    for obj in (deployment, service):
        assert obj["metadata"]["name"] == "news-judge"
        assert obj["metadata"]["namespace"] == "ml"
        assert obj["metadata"]["ownerReferences"][0]["uid"] == "u-1"
        assert obj["metadata"]["labels"]["team"] == "ml"
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert named == {"http": MIRROR_PORT, "metrics": METRICS_PORT}
    assert {p["targetPort"] for p in service["spec"]["ports"]} == set(named)
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(METRICS_PORT)
    assert deployment["spec"]["replicas"] == 1  # one holder of the --max-rps budget


def test_security_contexts_pull_settings_and_resources_are_passed_through() -> None:
    restricted = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    container_security = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True}
    deployment = build_judge_deployment(
        ROLLOUT, SETTINGS, image="op:1", pull_policy="Always", pull_secrets=("regcred",),
        pod_security=restricted, security=container_security, resources={"requests": {"cpu": "1"}})
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"] == restricted
    assert container["securityContext"] == container_security
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert container["imagePullPolicy"] == "Always"
    assert container["resources"] == {"requests": {"cpu": "1"}}
    assert pod["automountServiceAccountToken"] is False  # the judge never talks to the API server
    plain = build_judge_deployment(ROLLOUT, SETTINGS, image="op:1")["spec"]["template"]["spec"]
    assert "securityContext" not in plain and "imagePullSecrets" not in plain
    assert plain["containers"][0]["resources"]["requests"] == {"cpu": "100m", "memory": "128Mi"}


def test_a_long_rollout_name_still_gives_a_valid_service_name() -> None:
    rollout = {**ROLLOUT, "metadata": {**ROLLOUT["metadata"], "name": "a" * 80}}
    name = build_judge_service(rollout)["metadata"]["name"]
    assert len(name) <= 63 and name.endswith("-judge")
