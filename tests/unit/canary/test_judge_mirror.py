"""With agreement analysis the route mirrors to the rollout's judge (not the candidate), in the shadow step and
every weighted step; the judge's Deployment and Service say what it compares."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kubestill.api.judge import JudgeSettings
from kubestill.api.route_record import RouteRecord
from kubestill.api.v1alpha1.canaryrollout import BackendRef, CanaryRolloutStatus, ShadowMirror
from kubestill.api.v1alpha1.common import Task
from kubestill.builders.httproute import (
    build_httproute_weights,
    build_route_restore,
    desired_observation,
    observe_route,
)
from kubestill.builders.judge import judge_backend
from kubestill.handlers.canary_judge import JudgeSync, judge_settings
from kubestill.logic.canary_status import route_state
from kubestill.logic.shadow_mirror import mirror_release_at
from kubestill.settings import Settings

from .helpers import at, in_step, spec

BASE = BackendRef(name="teacher", port=8000)
CAND = BackendRef(name="student", port=8000)
JUDGE = judge_backend("r")


def mirror_to(target: BackendRef, percent: int) -> dict[str, Any]:
    return {"type": "RequestMirror",
            "requestMirror": {"backendRef": {"name": target.name, "port": target.port}, "percent": percent}}


def route(filters: list[dict[str, Any]] | None = None, weights: tuple[int, int] | None = None) -> dict[str, Any]:
    refs: list[dict[str, Any]] = [{"name": "teacher", "port": 8000}]
    if weights is not None:
        refs = [{"name": "teacher", "port": 8000, "weight": weights[0]},
                {"name": "student", "port": 8000, "weight": weights[1]}]
    rule: dict[str, Any] = {"backendRefs": refs}
    if filters is not None:
        rule["filters"] = filters
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "r", "namespace": "ml", "resourceVersion": "1"}, "spec": {"rules": [rule]}}


def _agreement(**extra: Any) -> dict[str, Any]:
    return {"prometheusUrl": "http://prom:9090", "agreement": {"minRate": 0.9, "task": "classification",
                                                              "samplePercent": 5, **extra}}


AGREE = spec(analysis=_agreement())
AGREE_SHADOW = spec(analysis=_agreement(), shadow={"percent": 100, "pause": "1m"})
AGREE_TRAEFIK = spec(analysis=_agreement(), shadow={"percent": 100, "pause": "1m", "mirror": "TraefikService"})


@pytest.mark.parametrize(
    ("rollout", "status", "weight", "percent", "to_judge"),
    [
        # samplePercent to the judge, not shadow.percent to the candidate.
        (AGREE_SHADOW, in_step(-1, 0, 0, shadowing=True), 0, 5, True),
        (AGREE, in_step(0, 10, 0), 10, 5, True),
        (AGREE, in_step(1, 50, 0, phase="Paused"), 50, 5, True),
        # Over: no mirror.
        (AGREE, CanaryRolloutStatus(phase="Promoted"), 100, None, False),
        (AGREE, CanaryRolloutStatus(phase="RolledBack"), 0, None, False),
        # Without agreement, as before.
        (spec(shadow={"percent": 30, "pause": "1m"}), in_step(-1, 0, 0, shadowing=True), 0, 30, False),
        (spec(), in_step(0, 10, 0), 10, None, False),
    ],
)
def test_route_state_mirrors_to_the_judge(rollout: Any, status: CanaryRolloutStatus, weight: int,
                                          percent: int | None, to_judge: bool) -> None:
    state = route_state(rollout, status)
    assert (state.candidate_weight, state.mirror_percent, state.to_judge) == (weight, percent, to_judge)


def test_route_to_the_judge_and_back() -> None:
    # The shadow step's mirror to the candidate is replaced by the judge's when agreement starts.
    body = build_httproute_weights(route([mirror_to(CAND, 100)]), 0, BASE, CAND, 10, 5, judge=JUDGE, to_judge=True)
    assert body["spec"]["rules"][0]["filters"] == [mirror_to(JUDGE, 5)]
    assert observe_route(body, 0, BASE, CAND, judge=JUDGE) == desired_observation(10, 5, to_judge=True)
    # Without the judge named, its mirror is not ours: the observation differs, so the route is rewritten.
    assert observe_route(body, 0, BASE, CAND).mirror_percent is None
    # Promotion: the judge's mirror goes, the user's filters stay.
    other = {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x", "value": "1"}]}}
    promoted = build_httproute_weights(route([other, mirror_to(JUDGE, 5)], (90, 10)), 0, BASE, CAND, 100,
                                       judge=JUDGE)
    assert promoted["spec"]["rules"][0]["filters"] == [other]


def test_judge_mirror_needs_the_judge() -> None:
    with pytest.raises(ValueError, match="judge"):
        build_httproute_weights(route(), 0, BASE, CAND, 10, 5, to_judge=True)


def test_restore_removes_the_judges_mirror() -> None:
    record = RouteRecord(route="r", rule_index=0, baseline=BASE, baseline_weight=None, candidate=CAND,
                         candidate_declared=False)
    restored = build_route_restore(route([mirror_to(JUDGE, 5)], (90, 10)), record, None, JUDGE)
    assert restored is not None
    assert restored["spec"]["rules"][0] == {"backendRefs": [{"name": "teacher", "port": 8000}]}


def test_traefik_service_kept_through_the_weighted_steps_with_agreement() -> None:
    # It mirrors to the judge in every step; without agreement it goes after the shadow step.
    status = in_step(0, 10, 0)
    assert mirror_release_at(AGREE_TRAEFIK, status) is None
    plain = spec(shadow={"percent": 100, "pause": "1m", "mirror": "TraefikService"})
    assert mirror_release_at(plain, status) == at(10)
    state = route_state(AGREE_TRAEFIK, status)
    assert state.mirror == ShadowMirror.TRAEFIK_SERVICE and state.to_judge


def test_judge_settings_and_manifests() -> None:
    rollout = spec(analysis=_agreement(maxBaselineRps=2.5, cosineThreshold=0.8))
    settings = judge_settings(rollout, "ml", CAND, Task.CLASSIFICATION)
    assert settings == JudgeSettings(Task.CLASSIFICATION, "http://teacher.ml.svc:8000", "http://student.ml.svc:8000",
                                     sample=100.0, max_rps=2.5, cosine_threshold=0.8)
    owner = {"apiVersion": "kubestill.io/v1alpha1", "kind": "CanaryRollout",
             "metadata": {"name": "r", "namespace": "ml", "uid": "u"}}
    deployment, service = JudgeSync(Settings(judge_image="op:1")).manifests(owner, rollout, CAND, Task.CLASSIFICATION)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert container["image"] == "op:1"
    assert env["KUBESTILL_JUDGE_MAX_RPS"] == "2.5" and env["KUBESTILL_JUDGE_SAMPLE"] == "100.0"
    assert env["KUBESTILL_JUDGE_CANDIDATE"] == "http://student.ml.svc:8000"
    assert service["metadata"]["name"] == JUDGE.name
    assert {p["port"] for p in service["spec"]["ports"]} >= {JUDGE.port}
    assert all(b["metadata"]["ownerReferences"][0]["uid"] == "u" for b in (deployment, service))


class FakeApi:
    """The calls JudgeSync makes: a StudentModel read, creates (True: created), reads of the judge's Deployment
    (its readyReplicas: `ready`)."""

    def __init__(self, task: str | None, ready: int = 1) -> None:
        self.task, self.gets, self.ready = task, 0, ready
        self.deployment_gets = 0
        self.created: list[str] = []

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        if kind == "Deployment":
            self.deployment_gets += 1
            return {"metadata": {"name": name}, "status": {"replicas": 1, "readyReplicas": self.ready}}
        self.gets += 1
        return {"spec": {"task": self.task}} if self.task is not None else None

    async def create(self, body: dict[str, Any]) -> bool:
        self.created.append(body["kind"])
        return True


def test_judge_sync_reads_the_student_models_task_once_and_applies_on_change() -> None:
    owner = {"apiVersion": "kubestill.io/v1alpha1", "kind": "CanaryRollout",
             "metadata": {"name": "r", "namespace": "ml", "uid": "u"}}
    rollout = spec(candidate={"studentModel": "s"}, analysis={"prometheusUrl": "http://p",
                                                             "agreement": {"minRate": 0.9}})
    sync, api = JudgeSync(Settings()), FakeApi("embedding")

    async def run() -> list[Any]:
        return [await sync.ensure(api, ("ml", "r"), owner, rollout, CAND) for _ in range(3)]  # type: ignore[arg-type]

    assert asyncio.run(run()) == [None, None, None]
    # Steady state: nothing read or written; a RequestMirror filter does not wait for the judge's Pod.
    assert (api.gets, api.deployment_gets, api.created) == (1, 0, ["Deployment", "Service"])
    env = {e["name"]: e["value"] for e in
           JudgeSync(Settings()).manifests(owner, rollout, CAND, Task.EMBEDDING)[0]["spec"]["template"]["spec"][
               "containers"][0]["env"]}
    assert env["KUBESTILL_JUDGE_TASK"] == "embedding"
    missing = asyncio.run(JudgeSync(Settings()).ensure(FakeApi(None), ("ml", "r"), owner, rollout, CAND))  # type: ignore[arg-type]
    assert missing is not None and missing.reason == "JudgeTaskUnknown" and not missing.carries


def test_the_route_waits_for_the_judges_first_ready_pod() -> None:
    """Traefik drops a TraefikService whose mirror has no endpoints, and the route naming it (404 for all): the
    judge is applied at once, but the TraefikService mirrors to it only once its Deployment has a ready Pod."""
    owner = {"apiVersion": "kubestill.io/v1alpha1", "kind": "CanaryRollout",
             "metadata": {"name": "r", "namespace": "ml", "uid": "u"}}
    rollout = spec(analysis={"prometheusUrl": "http://p", "agreement": {"minRate": 0.9, "task": "classification"}},
                   shadow={"percent": 100, "pause": "1m", "mirror": "TraefikService"})
    sync, api = JudgeSync(Settings()), FakeApi(None, ready=0)

    async def ensure() -> Any:
        return await sync.ensure(api, ("ml", "r"), owner, rollout, CAND)  # type: ignore[arg-type]

    starting = [asyncio.run(ensure()) for _ in range(2)]
    assert [(v.carries, v.reason) for v in starting] == [(False, "JudgeNotReady")] * 2
    assert "r-judge has no ready Pod yet" in starting[0].message
    assert api.created == ["Deployment", "Service"]  # applied once, while it starts
    api.ready = 1
    assert [asyncio.run(ensure()) for _ in range(2)] == [None, None]
    assert api.deployment_gets == 3  # once ready, never read again
    sync.forget(("ml", "r"))
    api.ready = 0
    assert asyncio.run(ensure()) is not None  # a new rollout of the same name waits for its own judge
