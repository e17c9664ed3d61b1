"""The operator's controllers, built once at start-up by main.py and reached by every handler through kopf's
`memo` (see kubestill/runtime/__init__.py for why): one Controller per kind, sharing the client, the
settings, the bound on concurrent reconciles and the storage checks."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from kubestill.api.names import DJ_LABEL, SM_LABEL
from kubestill.api.v1alpha1 import API_VERSION
from kubestill.api.v1alpha1 import canaryrollout as cr_api
from kubestill.api.v1alpha1 import distillationjob as dj_api
from kubestill.api.v1alpha1 import studentmodel as sm_api
from kubestill.clients.events import EventRecorder
from kubestill.clients.kube import Connection
from kubestill.clients.prometheus import Prometheus
from kubestill.runtime import Coalesced, Conditional, Controller, Immediate, ReconcileSlots
from kubestill.settings import Settings

from . import canary_route_sync
from . import distillationjob as dj
from . import studentmodel as sm
from .canaryrollout import PROMETHEUS_THREADS, CanaryController, CanaryRollouts
from .storage_check import StorageChecks

MEMO_KEY = "kubestill"


@dataclass
class Operator:
    """Everything the handlers share, built by `build`; `close` at shutdown. The only state the operator keeps
    between events lives here (and in kopf's indexes): the connection kopf's login fills in, the Event
    recorder, the Prometheus clients, the controllers."""

    settings: Settings
    connection: Connection
    events: EventRecorder
    prometheus: Prometheus
    distillation_jobs: dj.DJController
    student_models: sm.SMController
    canary_rollouts: CanaryController
    canary: CanaryRollouts
    prometheus_pool: ThreadPoolExecutor

    async def close(self) -> None:
        """Stop the Prometheus query threads (started on first use, never at import), post the Events still
        queued, close the API session."""
        self.prometheus_pool.shutdown(wait=False, cancel_futures=True)
        await self.events.drain()
        await self.connection.close()


def build(settings: Settings, connection: Connection | None = None) -> Operator:
    """One controller per kind, sharing `connection` (a new one by default: kopf's login fills it in after
    start-up; tests pass one already logged in)."""
    api = connection or Connection()
    events = EventRecorder(api)
    prometheus = Prometheus()
    slots = ReconcileSlots(settings.max_concurrent_reconciles)
    checks = StorageChecks(settings)
    pool = ThreadPoolExecutor(max_workers=PROMETHEUS_THREADS, thread_name_prefix="kubestill-prometheus")
    canary = CanaryRollouts(settings, pool, prometheus)
    return Operator(
        settings=settings,
        connection=api,
        events=events,
        prometheus=prometheus,
        distillation_jobs=Controller(
            dj_api.KIND, dj_api.DistillationJobSpec, dj_api.DistillationJobStatus,
            dj.DistillationJobs(settings, checks, events), api=api, api_version=API_VERSION, plural=dj_api.PLURAL,
            policy=Coalesced(), body_index=dj.BODIES, index_names=(dj.STAGE_JOBS, dj.REPORTS), owner_label=DJ_LABEL,
            slots=slots, expectation_seconds=dj.EXPECTATION_SECONDS),
        student_models=Controller(
            sm_api.KIND, sm_api.StudentModelSpec, sm_api.StudentModelStatus, sm.StudentModels(settings, checks, events),
            api=api, api_version=API_VERSION, plural=sm_api.PLURAL, policy=Immediate(), body_index=sm.BODIES,
            index_names=(sm.DEPLOYMENTS, sm.CHECK_JOBS, sm.SERVED_JOBS), owner_label=SM_LABEL, slots=slots),
        canary_rollouts=Controller(
            cr_api.KIND, cr_api.CanaryRolloutSpec, cr_api.CanaryRolloutStatus, canary, api=api,
            api_version=API_VERSION, plural=cr_api.PLURAL, policy=Conditional(), body_index=None,
            index_names=(canary_route_sync.CLAIMS_INDEX,), slots=slots),
        canary=canary,
        prometheus_pool=pool,
    )
