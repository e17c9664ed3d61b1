"""A CanaryRollout's agreement judge, as I/O: its Deployment and Service (builders/judge.py), applied before the
route mirrors to them and whenever what they should say changes. Owned by the rollout, so the garbage collector
deletes them with it.

The route samples (`samplePercent` of requests reach the judge), so the judge compares every request it gets
(its own `sample` stays 100) within `maxBaselineRps`. Both sides are asked through their Services' cluster DNS
names, on the ports the route uses. The task is spec.analysis.agreement.task, else the candidate StudentModel's.

Through a TraefikService (spec.shadow.mirror: TraefikService) the route mirrors to the judge only once its
Deployment has a ready Pod: Traefik drops a TraefikService whose mirror has no endpoints ("no servers found") and
with it the route that names it, answering 404 to every request of the baseline's (the real-node test
tests/realnode/test_canary_agreement.py saw 7 s of it while the judge's Pod started). A RequestMirror filter
only loses the copies meanwhile, so the route does not wait for it. Once mirrored, the route stays so: a judge
that loses its Pod later is covered by Traefik's `providers.kubernetescrd.allowEmptyServices` (the
TraefikService is kept, the baseline serves, the copies fail; README, The gateway), not by this module.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from kubestill.api.judge import JudgeSettings
from kubestill.api.names import judge_name
from kubestill.api.v1alpha1.canaryrollout import BackendRef, CanaryRolloutSpec, ShadowMirror
from kubestill.api.v1alpha1.common import Task
from kubestill.builders.judge import build_judge_deployment, build_judge_service
from kubestill.clients.kube import ApiError, KubeClient
from kubestill.logic.canary import RouteView
from kubestill.runtime import Key
from kubestill.settings import Settings

from .children import apply_child

log = logging.getLogger("kubestill.canary")

JUDGE_NOT_READY = "JudgeNotReady"  # RouteView reason: the handler looks again after JUDGE_POLL, not a backoff
JUDGE_POLL = 1.0  # seconds


def service_url(backend: BackendRef, namespace: str) -> str:
    """http://<service>.<namespace>.svc:<port>: a Service by its cluster DNS name.

    >>> service_url(BackendRef(name="teacher", port=8000), "ml")
    'http://teacher.ml.svc:8000'
    """
    return f"http://{backend.name}.{namespace}.svc:{backend.port}"


def judge_settings(spec: CanaryRolloutSpec, namespace: str, candidate: BackendRef, task: Task) -> JudgeSettings:
    """What the rollout's judge compares: baseline and candidate Services, the task, the bound on the teacher."""
    agreement = spec.analysis.agreement if spec.analysis is not None else None
    assert agreement is not None
    return JudgeSettings(task=task, baseline=service_url(spec.baseline, namespace),
                         candidate=service_url(candidate, namespace), sample=100.0,
                         max_rps=agreement.max_baseline_rps, cosine_threshold=agreement.cosine_threshold)


def deployment_ready(deployment: Mapping[str, Any] | None) -> bool:
    """Whether the Deployment (None: absent) has a ready Pod (`status.readyReplicas` >= 1), so its Service has an
    endpoint a gateway can mirror to.

    >>> [deployment_ready(d) for d in (None, {}, {"status": {"replicas": 1}}, {"status": {"readyReplicas": 1}})]
    [False, False, False, True]
    """
    return int(((deployment or {}).get("status") or {}).get("readyReplicas") or 0) >= 1


class JudgeSync:
    """Applies each rollout's judge, remembering what it applied (a digest) so a steady state writes nothing."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._applied: dict[Key, str] = {}
        # The candidate StudentModel's task, read once per rollout (and operator process): this runs on every
        # reconcile that writes the route.
        self._tasks: dict[Key, Task] = {}
        # Rollouts whose judge was seen with a ready Pod: from then on a steady state reads nothing.
        self._ready: set[Key] = set()

    def forget(self, key: Key) -> None:
        self._applied.pop(key, None)
        self._tasks.pop(key, None)
        self._ready.discard(key)

    async def _task(self, api: KubeClient, key: Key, spec: CanaryRolloutSpec) -> Task | None:
        agreement = spec.analysis.agreement if spec.analysis is not None else None
        if agreement is not None and agreement.task is not None:
            return Task(agreement.task)
        if key in self._tasks:
            return self._tasks[key]
        name = spec.candidate.student_model
        sm = await api.get("kubestill.io/v1alpha1", "StudentModel", key[0], name) if name else None
        task = ((sm or {}).get("spec") or {}).get("task")
        if task not in {t.value for t in Task}:
            return None
        self._tasks[key] = Task(task)
        return self._tasks[key]

    def manifests(self, rollout: Mapping[str, Any], spec: CanaryRolloutSpec, candidate: BackendRef,
                  task: Task) -> list[dict[str, Any]]:
        """The judge's Deployment and Service for `rollout` (its manifest, with metadata.uid)."""
        s = self.settings
        judge = judge_settings(spec, rollout["metadata"]["namespace"], candidate, task)
        deployment = build_judge_deployment(
            rollout, judge, image=s.judge_image, pull_policy=s.image_pull_policy, pull_secrets=s.image_pull_secrets,
            pod_security=s.trainer_pod_security_context, security=s.trainer_security_context,
            extra_labels=s.extra_labels)
        return [deployment, build_judge_service(rollout, s.extra_labels)]

    async def ensure(self, api: KubeClient, key: Key, rollout: Mapping[str, Any], spec: CanaryRolloutSpec,
                     candidate: BackendRef) -> RouteView | None:
        """Apply the judge unless what it should say was applied already; None when it is in place (through a
        TraefikService: with a ready Pod), else a RouteView saying why the route may not mirror to it yet
        (JUDGE_NOT_READY while its first Pod starts)."""
        task = await self._task(api, key, spec)
        if task is None:
            return RouteView(False, "JudgeTaskUnknown", f"StudentModel {spec.candidate.student_model} has no "
                             "spec.task readable yet; set spec.analysis.agreement.task")
        bodies = self.manifests(rollout, spec, candidate, task)
        digest = hashlib.sha256(json.dumps(bodies, sort_keys=True).encode()).hexdigest()
        if self._applied.get(key) != digest:
            try:
                for body in bodies:
                    await apply_child(api, body)
            except ApiError as err:
                return RouteView(False, "JudgeWriteFailed", f"cannot write the judge {judge_name(key[1])}: {err}")
            self._applied[key] = digest
            log.info("%s/%s: judge %s applied (%s, %s)", *key, judge_name(key[1]), task, candidate.name)
        if spec.shadow is None or spec.shadow.mirror != ShadowMirror.TRAEFIK_SERVICE:
            return None
        return await self._readiness(api, key)

    async def _readiness(self, api: KubeClient, key: Key) -> RouteView | None:
        """None once the judge's Deployment has had a ready Pod, else JUDGE_NOT_READY (or why it cannot tell)."""
        if key in self._ready:
            return None
        name = judge_name(key[1])
        try:
            deployment = await api.get("apps/v1", "Deployment", key[0], name)
        except ApiError as err:
            return RouteView(False, "JudgeReadFailed", f"cannot read the judge's Deployment {name}: {err}")
        if not deployment_ready(deployment):
            return RouteView(False, JUDGE_NOT_READY, f"the judge {name} has no ready Pod yet: the route mirrors "
                             "to it once it has (a gateway drops a mirror without endpoints, Traefik with the route)")
        self._ready.add(key)
        log.info("%s/%s: judge %s ready", *key, name)
        return None
