"""The candidate of a CanaryRollout, as I/O: its Service, or why it cannot be used yet or any more."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from kubestill.api.names import triton_name
from kubestill.api.v1alpha1.canaryrollout import BackendRef, CanaryRolloutSpec, CanaryRolloutStatus
from kubestill.api.v1alpha1.studentmodel import ServingCheckSpec, StudentModelPhase, StudentModelStatus
from kubestill.clients import rollouts
from kubestill.clients.kube import KubeClient
from kubestill.logic.canary import step_entered
from kubestill.logic.served import gate_wait


@dataclass(frozen=True)
class CandidateView:
    """The candidate's Service, or why it cannot be used: `waiting` (before the first step) or `gone` (the
    StudentModel was deleted after it; the Service recorded in status still lets the route be rolled back)."""

    backend: BackendRef | None
    waiting: str | None = None
    gone: str | None = None


async def resolve_candidate(
    api: KubeClient, namespace: str, spec: CanaryRolloutSpec, status: CanaryRolloutStatus
) -> CandidateView:
    """A StudentModel must be Ready, and within its served-latency gate (spec.servingCheck.maxP95Ms) when it has
    one, before the first step sends it traffic; once started, its health is the analysis' business, not a reason
    to stop acting (a rollback must still reach the route), but its disappearance is a reason to roll back."""
    if spec.candidate.service is not None:
        return CandidateView(spec.candidate.service)
    name = spec.candidate.student_model or ""
    started = step_entered(status)
    recorded = status.candidate_backend or BackendRef(name=triton_name(name), port=rollouts.TRITON_HTTP_PORT)
    sm = await api.get("kubestill.io/v1alpha1", "StudentModel", namespace, name)
    if sm is None or (sm.get("metadata") or {}).get("deletionTimestamp"):
        if started:
            return CandidateView(recorded, gone=f"candidate StudentModel {name} was deleted")
        return CandidateView(None, waiting=f"StudentModel {name} not found")
    try:
        sm_status = StudentModelStatus.model_validate(sm.get("status") or {})
    except ValidationError:  # written by something else than the operator: as if not reported yet
        sm_status = StudentModelStatus()
    if not sm_status.service_name:
        if started:
            return CandidateView(recorded)
        return CandidateView(None, waiting=f"waiting for StudentModel {name} to report its Service "
                                           "(status.serviceName)")
    if not started and sm_status.phase != StudentModelPhase.READY:
        return CandidateView(None, waiting=f"waiting for StudentModel {name} to be Ready "
                                           f"(phase {sm_status.phase})")
    if not started and (gate := _served_gate(sm, sm_status)) is not None:
        return CandidateView(None, waiting=f"StudentModel {name}: {gate}")
    return CandidateView(BackendRef(name=sm_status.service_name, port=rollouts.TRITON_HTTP_PORT))


def _served_gate(sm: dict[str, Any], status: StudentModelStatus) -> str | None:
    """Why the candidate's served-latency gate holds the rollout back (logic.served.gate_wait); a spec that does
    not parse has no gate to hold it (the StudentModel itself reports the spec as invalid)."""
    try:
        check = ServingCheckSpec.model_validate((sm.get("spec") or {}).get("servingCheck") or {})
    except ValidationError:
        return None
    return gate_wait(check, status, (sm.get("metadata") or {}).get("generation"))
