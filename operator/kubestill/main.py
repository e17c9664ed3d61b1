"""Everything the operator reacts to, one thin decorator each; the work lives in handlers/.

The start-up handler builds the controllers (handlers/operator.py) into kopf's memo; every other handler
reaches its kind's controller there (`_ops(memo)`). Run with `kopf run -m kubestill.main` (or
`kubestill operator`).
"""

from __future__ import annotations

from typing import Any

import kopf

from kubestill.api.names import DJ_LABEL, MANAGED_BY, MANAGER, REPORT_LABEL, SM_LABEL
from kubestill.handlers import canaryrollout as canary
from kubestill.handlers import distillationjob as dj
from kubestill.handlers import lifecycle, serving_check
from kubestill.handlers import studentmodel as sm
from kubestill.handlers.operator import Operator

GROUP, VERSION = "kubestill.io", "v1alpha1"
OURS = {MANAGED_BY: MANAGER}
# Index functions are `async def` on purpose: kopf runs plain `def` handlers in a thread pool, and under a
# burst of watch events that queue (not the work) dominated the time from apply to first Job.


def _ops(memo: Any) -> Operator:
    return lifecycle.controllers(memo)


# --- Operator -------------------------------------------------------------------------------------------


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Peering, metrics server and kopf tuning from KUBESTILL_* variables; the controllers, built once."""
    lifecycle.start(settings, memo)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    """Shutdown: stop what the controllers started."""
    await lifecycle.stop(memo)


@kopf.on.login()
def login(memo: kopf.Memo, settings: kopf.OperatorSettings, **kwargs: Any) -> kopf.ConnectionInfo:
    """Service account in a Pod, else $KUBECONFIG; our API client shares these credentials."""
    return lifecycle.login(memo, settings, **kwargs)


# --- DistillationJob ------------------------------------------------------------------------------------


@kopf.index(GROUP, VERSION, "distillationjobs")
async def dj_bodies(body: kopf.Body, **_: Any) -> Any:
    """DistillationJobs by (namespace, name), so child events find their owner without an API read."""
    return dj.index_dj(body)


@kopf.index("batch", "v1", "jobs", labels={**OURS, DJ_LABEL: kopf.PRESENT})
async def stage_jobs(body: kopf.Body, **_: Any) -> Any:
    """Stage Jobs by owning DistillationJob: (stage, state)."""
    return dj.index_job(body)


@kopf.index("", "v1", "configmaps", labels={**OURS, REPORT_LABEL: "true"})
async def reports(body: kopf.Body, **_: Any) -> Any:
    """Report ConfigMaps (progress.json, metrics.json written by the trainer) by DistillationJob."""
    return dj.index_report(body)


@kopf.on.event(GROUP, VERSION, "distillationjobs")
async def distillationjob_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """Any change of a DistillationJob (and the initial listing): reconcile it."""
    await _ops(memo).distillation_jobs.on_event(type, body, kwargs)


@kopf.on.event("batch", "v1", "jobs", labels={**OURS, DJ_LABEL: kopf.PRESENT})
async def stage_job_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """A stage Job changed: reconcile its DistillationJob."""
    await _ops(memo).distillation_jobs.on_child_event(type, body, kwargs)


@kopf.on.event("", "v1", "configmaps", labels={**OURS, REPORT_LABEL: "true"})
async def report_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """The trainer reported progress or metrics: reconcile its DistillationJob."""
    await _ops(memo).distillation_jobs.on_child_event(type, body, kwargs)

# --- StudentModel ---------------------------------------------------------------------------------------


@kopf.index(GROUP, VERSION, "studentmodels")
async def sm_bodies(body: kopf.Body, **_: Any) -> Any:
    """StudentModels by (namespace, name)."""
    return sm.index_sm(body)


@kopf.index("apps", "v1", "deployments", labels={**OURS, SM_LABEL: kopf.PRESENT})
async def triton_deployments(body: kopf.Body, **_: Any) -> Any:
    """Triton Deployments by StudentModel: replicas and readiness."""
    return sm.index_deployment(body)


@kopf.index("batch", "v1", "jobs", labels={**OURS, SM_LABEL: kopf.PRESENT})
async def artifact_checks(body: kopf.Body, **_: Any) -> Any:
    """Storage check Jobs of s3:// artifacts by StudentModel."""
    return sm.index_check_job(body)


@kopf.index("batch", "v1", "jobs", labels={**OURS, SM_LABEL: kopf.PRESENT})
async def served_checks(body: kopf.Body, **_: Any) -> Any:
    """Serving check Jobs (served latency once Ready) by StudentModel."""
    return serving_check.index_served_job(body)


@kopf.on.event(GROUP, VERSION, "studentmodels")
async def studentmodel_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """Any change of a StudentModel: render and apply its Triton objects, report readiness."""
    await _ops(memo).student_models.on_event(type, body, kwargs)


@kopf.on.event("apps", "v1", "deployments", labels={**OURS, SM_LABEL: kopf.PRESENT})
async def triton_deployment_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """A Triton Deployment changed: update its StudentModel's status."""
    await _ops(memo).student_models.on_child_event(type, body, kwargs)


@kopf.on.event("batch", "v1", "jobs", labels={**OURS, SM_LABEL: kopf.PRESENT})
async def artifact_check_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """A Job of a StudentModel changed (an artifact's storage check, a serving check): reconcile it."""
    await _ops(memo).student_models.on_child_event(type, body, kwargs)


# --- CanaryRollout --------------------------------------------------------------------------------------


@kopf.index(GROUP, VERSION, "canaryrollouts")
async def canary_claims(body: kopf.Body, **_: Any) -> Any:
    """Each rollout's claim on its route rule, so two rollouts never weight the same rule."""
    return canary.index_claim(body)


@kopf.on.event(GROUP, VERSION, "studentmodels")
async def candidate_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A StudentModel changed or went away: the rollouts of it decide now."""
    ops = _ops(memo)
    ops.canary.on_candidate_event(ops.canary_rollouts, type, body)


@kopf.on.event(GROUP, VERSION, "canaryrollouts")
async def canaryrollout_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """Any change of a CanaryRollout (and the initial listing): measure, decide, set the route's weights."""
    ops = _ops(memo)
    await ops.canary.on_event(ops.canary_rollouts, type, body, kwargs)
