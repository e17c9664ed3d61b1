"""The CanaryRollout kind on the runtime, with a fake client and no Prometheus (a rollout without analysis):
a new rollout writes its status first, holds the route-restore finalizer, then moves the route to the first
step and records RouteReady; a missing route holds it with RouteReady=False (one write, one Event); a 409 on
the status write re-reads and decides again, never advancing twice; a candidate StudentModel that is missing
or not Ready keeps it Pending, one that is the baseline fails it; an abort (or the candidate's deletion)
puts the route back on the baseline and ends RolledBack."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from kubestill.api.names import ROUTE_RESTORE_FINALIZER
from kubestill.clients.kube import Connection
from kubestill.handlers.canaryrollout import AGAIN
from kubestill.handlers.operator import Operator, build
from kubestill.settings import Settings

from ..runtime.fake_kube import FakeKube, _merge

KEY = ("ml", "sentiment-rollout")
CR_PATH = "/apis/kubestill.io/v1alpha1/namespaces/ml/canaryrollouts/sentiment-rollout"
STATUS_PATH = f"{CR_PATH}/status"
ROUTE_PATH = "/apis/gateway.networking.k8s.io/v1/namespaces/ml/httproutes/sentiment"
SM_PATH = "/apis/kubestill.io/v1alpha1/namespaces/ml/studentmodels/sentiment-student"
EVENTS_PATH = "/api/v1/namespaces/ml/events"
BASELINE = "sentiment-teacher"
CANDIDATE = "sentiment-student-triton"
ABORT = "kubestill.io/abort"


class RolloutKube(FakeKube):
    """FakeKube plus what the canary handler needs of a server: metadata merge patches (finalizers,
    annotations, labels) are kept, Events get a name from generateName, and a LIST answers no items."""

    async def request(self, verb: str, path: str, *, body: Any = None, params: Mapping[str, str] | None = None,
                      content_type: str = "application/json", parse: bool = True) -> dict[str, Any]:
        if verb == "LIST":
            self.requests.append((verb, path, dict(params or {})))
            return {"items": []}
        if verb == "POST" and "name" not in body["metadata"]:
            body = copy.deepcopy(body)
            body["metadata"]["name"] = f"{body['metadata']['generateName']}{len(self.requests)}"
        return await super().request(verb, path, body=body, params=params, content_type=content_type, parse=parse)

    def _patch(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        written = super()._patch(path, body)
        meta = {k: v for k, v in (body.get("metadata") or {}).items() if k != "resourceVersion"}
        if not meta:
            return written
        self.objects[path]["metadata"] = _merge(self.objects[path]["metadata"], meta)
        return copy.deepcopy(self.objects[path])


def rollout(**spec_overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "route": {"name": "sentiment"},
        "baseline": {"name": BASELINE, "port": 8000},
        "candidate": {"studentModel": "sentiment-student"},
        "steps": [{"weight": 10, "pause": "1h"}, {"weight": 50, "pause": "1h"}, {"weight": 100}],
    }
    spec.update(spec_overrides)
    return {"apiVersion": "kubestill.io/v1alpha1", "kind": "CanaryRollout",
            "metadata": {"name": KEY[1], "namespace": KEY[0], "uid": "uid-3", "generation": 1,
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": spec}


def httproute() -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "sentiment", "namespace": "ml"},
            "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [{"name": BASELINE, "port": 8000}]}]}}


def student_model(phase: str | None = "Ready", service: str | None = CANDIDATE, max_p95: float | None = None,
                  served: tuple[str, str] | None = None) -> dict[str, Any]:
    """`max_p95`: spec.servingCheck.maxP95Ms; `served`: the ServedLatency condition's (status, reason)."""
    status: dict[str, Any] = {k: v for k, v in (("phase", phase), ("serviceName", service)) if v is not None}
    spec: dict[str, Any] = {} if max_p95 is None else {"servingCheck": {"maxP95Ms": max_p95}}
    if served is not None:
        status["conditions"] = [{"type": "ServedLatency", "status": served[0], "reason": served[1],
                                 "message": "served p95 25.00 ms > maxP95Ms 20", "observedGeneration": 1}]
    return {"apiVersion": "kubestill.io/v1alpha1", "kind": "StudentModel",
            "metadata": {"name": "sentiment-student", "namespace": "ml", "generation": 1}, "spec": spec,
            "status": status}


@dataclass
class World:
    """The fake API server and the operator built on it."""

    api: RolloutKube
    ops: Operator

    async def reconcile(self, observe: bool = True) -> float | None:
        """One evaluation, as a watch event would start it; `observe=False`: on what the cache already holds
        (the stored object changed and its event has not arrived yet)."""
        ctl = self.ops.canary_rollouts
        if observe:
            ctl.cache.observe(KEY, copy.deepcopy(self.api.objects[CR_PATH]))
        body = ctl.cache.latest(KEY)
        assert body is not None
        return await self.ops.canary.reconcile(ctl, KEY, body)

    def status(self) -> dict[str, Any]:
        return dict(self.api.objects[CR_PATH].get("status") or {})

    def edit(self, status: Mapping[str, Any] | None = None, annotations: Mapping[str, str] | None = None) -> None:
        """Someone else changes the stored rollout (its resourceVersion moves)."""
        body = copy.deepcopy(self.api.objects[CR_PATH])
        body["status"] = {**body.get("status", {}), **(status or {})}
        body["metadata"]["annotations"] = {**body["metadata"].get("annotations", {}), **(annotations or {})}
        self.api.put(CR_PATH, body)


def scenario(route: bool = True, sm: dict[str, Any] | None = None, **spec: Any
             ) -> Callable[[Callable[[World], Awaitable[dict[str, Any]]]], dict[str, Any]]:
    """Run `steps(world)` against a stored rollout (and its route and StudentModel, when given)."""

    def run(steps: Callable[[World], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        async def main() -> dict[str, Any]:
            api = RolloutKube()
            api.put(CR_PATH, rollout(**spec))
            if route:
                api.put(ROUTE_PATH, httproute())
            if sm is not None:
                api.put(SM_PATH, sm)
            ops = build(Settings(), Connection(api))  # type: ignore[arg-type]
            try:
                return await steps(World(api, ops))
            finally:
                await ops.close()

        return asyncio.run(main())

    return run


def weights(body: Mapping[str, Any]) -> dict[str, int | None]:
    """Backend name -> weight in the route's (only) rule."""
    return {ref["name"]: ref.get("weight") for ref in body["spec"]["rules"][0]["backendRefs"]}


def condition(status: Mapping[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status.get("conditions", []) if c["type"] == type_)


def index(requests: list[tuple[str, str, Any]], verb: str, path: str) -> int:
    """Where the first `verb path` request is (a ValueError when none was made)."""
    return next(i for i, r in enumerate(requests) if (r[0], r[1]) == (verb, path))


def bodies(requests: list[tuple[str, str, Any]], verb: str, path: str) -> list[Any]:
    """The bodies of the recorded `verb path` requests, in order (refused ones included)."""
    return [r[2] for r in requests if (r[0], r[1]) == (verb, path)]


def route_writes(api: FakeKube) -> list[dict[str, Any]]:
    return bodies(api.requests, "PATCH", ROUTE_PATH)


def status_writes(api: FakeKube) -> list[dict[str, Any]]:
    return bodies(api.requests, "PATCH", STATUS_PATH)


def event_reasons(api: FakeKube) -> list[tuple[str, str]]:
    return [(e["type"], e["reason"]) for e in bodies(api.requests, "POST", EVENTS_PATH)]


# --- (1) a new rollout with its route --------------------------------------------------------------------------


def test_a_new_rollout_writes_its_status_then_routes_the_first_step() -> None:
    async def steps(w: World) -> dict[str, Any]:
        requeue = await w.reconcile()
        return {"requeue": requeue, "requests": list(w.api.requests), "status": w.status(),
                "meta": w.api.objects[CR_PATH]["metadata"], "route": w.api.objects[ROUTE_PATH]}

    out = scenario(sm=student_model())(steps)
    reqs = out["requests"]
    writes = bodies(reqs, "PATCH", ROUTE_PATH)
    assert len(writes) == 1
    assert weights(writes[0]) == {BASELINE: 90, CANDIDATE: 10}
    assert weights(out["route"]) == {BASELINE: 90, CANDIDATE: 10}
    # Status first (the step decided), then the finalizer, then the route, then the clock and RouteReady.
    assert index(reqs, "PATCH", STATUS_PATH) < index(reqs, "PATCH", CR_PATH) < index(reqs, "PATCH", ROUTE_PATH)
    assert ROUTE_RESTORE_FINALIZER in out["meta"]["finalizers"]
    patches = bodies(reqs, "PATCH", STATUS_PATH)
    assert len(patches) == 2 and all(p["metadata"]["resourceVersion"] for p in patches)  # conditional writes
    assert patches[0]["status"]["stepStartedAt"] is None  # no clock before the route carries the step
    status = out["status"]
    assert (status["phase"], status["currentStep"], status["currentWeight"]) == ("Progressing", 0, 10)
    assert status["candidateBackend"] == {"name": CANDIDATE, "port": 8000}
    assert status["stepStartedAt"] and status["nextStepAt"]
    ready = condition(status, "RouteReady")
    assert (ready["status"], ready["reason"]) == ("True", "Ready")
    assert [h["action"] for h in status["history"]] == ["Start"]
    assert out["requeue"] == 30.0  # the 1h pause: looked at again for drift


# --- (2) the route is missing ------------------------------------------------------------------------------------


def test_a_missing_route_holds_the_rollout_with_route_not_found() -> None:
    async def steps(w: World) -> dict[str, Any]:
        out: dict[str, Any] = {"requeues": [await w.reconcile()]}
        out["first"], out["events"] = w.status(), event_reasons(w.api)
        out["requeues"].append(await w.reconcile())  # the hold's message is written once
        out["status"], out["writes"] = w.status(), len(status_writes(w.api))
        out["requeues"].append(await w.reconcile())
        out["writes_after"], out["events_after"] = len(status_writes(w.api)), event_reasons(w.api)
        out["route_writes"] = route_writes(w.api)
        return out

    out = scenario(route=False, sm=student_model())(steps)
    assert out["route_writes"] == []
    for status in (out["first"], out["status"]):
        not_found = condition(status, "RouteReady")
        assert (not_found["status"], not_found["reason"]) == ("False", "RouteNotFound")
        assert not_found["message"] == "HTTPRoute sentiment not found in namespace ml"
        assert status["currentWeight"] == 10 and status.get("stepStartedAt") is None  # decided, never clocked
    assert out["status"]["message"].startswith("waiting for the route to carry 10% to the candidate")
    assert out["events"].count(("Warning", "RouteNotFound")) == 1
    assert out["requeues"] == [5.0, 10.0, 20.0]  # backing off
    assert out["writes_after"] == out["writes"]  # the same hold is not written again
    assert out["events_after"] == out["events"]  # nor announced again


# --- (3) a conflict on the status write --------------------------------------------------------------------------


async def _at_step_over(w: World) -> None:
    """Step 0 routed and clocked, its pause already over (the next reconcile advances)."""
    await w.reconcile()
    w.edit(status={"nextStepAt": "2020-01-01T00:00:00Z"})
    w.ops.canary_rollouts.cache.observe(KEY, copy.deepcopy(w.api.objects[CR_PATH]))


@pytest.mark.parametrize(
    ("meanwhile", "phase", "step", "candidate_weight"),
    [
        # The write fails once with nothing changed: decided again, advanced once.
        ("conflict", "Progressing", 1, 50),
        # An abort landed between the read and the write: the fresh object rolls back instead.
        ("abort", "RolledBack", 0, 0),
    ],
)
def test_a_status_conflict_decides_again_on_the_fresh_object(meanwhile: str, phase: str, step: int,
                                                             candidate_weight: int) -> None:
    async def steps(w: World) -> dict[str, Any]:
        await _at_step_over(w)
        if meanwhile == "conflict":
            w.api.fail[("PATCH", STATUS_PATH)] = [409]
        else:
            w.edit(annotations={ABORT: "now"})  # the watch event has not arrived: the cache is stale
        before = len(w.api.requests)
        out: dict[str, Any] = {"requeue": await w.reconcile(observe=False)}
        out["after_conflict"] = w.api.requests[before:]
        later = len(w.api.requests)
        out["second"] = await w.reconcile(observe=False)
        out["third"] = await w.reconcile()  # one more look: nothing is taken twice
        out["status"] = w.status()
        out["writes"] = bodies(w.api.requests[later:], "PATCH", STATUS_PATH)
        out["route"] = w.api.objects[ROUTE_PATH]
        return out

    out = scenario(sm=student_model())(steps)
    assert out["requeue"] == AGAIN
    verbs = [(r[0], r[1]) for r in out["after_conflict"]]
    refused = [p["status"]["currentStep"] for p in bodies(out["after_conflict"], "PATCH", STATUS_PATH)]
    assert refused == [1]  # the stale decision (advance) was tried once, conditioned, and refused
    assert ("GET", CR_PATH) in verbs  # re-read after the 409
    assert ("PATCH", ROUTE_PATH) not in verbs  # and the route did not move on the refused decision
    status = out["status"]
    assert (status["phase"], status["currentStep"]) == (phase, step)
    assert weights(out["route"])[CANDIDATE] == candidate_weight
    assert out["writes"] and max(p["status"]["currentStep"] for p in out["writes"]) == step  # never past one advance
    actions = [h["action"] for h in status["history"]]
    assert actions == ["Start", "Advance" if meanwhile == "conflict" else "Rollback"]


# --- (4) the candidate StudentModel ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sm", "phase", "message"),
    [
        (None, "Pending", "StudentModel sentiment-student not found"),
        (student_model(phase="Pending"), "Pending", "to be Ready (phase Pending)"),
        (student_model(service=None), "Pending", "to report its Service"),
        (student_model(service=BASELINE), "Failed", "is the baseline itself"),
        (student_model(max_p95=20, served=("False", "AboveMaxP95")), "Pending",
         "served-latency gate (maxP95Ms 20): AboveMaxP95: served p95 25.00 ms > maxP95Ms 20"),
        (student_model(max_p95=20, served=("Unknown", "Measuring")), "Pending", "gate (maxP95Ms 20): Measuring"),
        (student_model(max_p95=20), "Pending", "gate (maxP95Ms 20): not measured yet"),
    ],
    ids=["missing", "not-ready", "no-service", "is-the-baseline", "served-gate-breached", "served-gate-measuring",
         "served-gate-unmeasured"],
)
def test_a_candidate_that_cannot_take_traffic(sm: dict[str, Any] | None, phase: str, message: str) -> None:
    async def steps(w: World) -> dict[str, Any]:
        requeue = await w.reconcile()
        return {"requeue": requeue, "status": w.status(), "route_writes": route_writes(w.api),
                "meta": w.api.objects[CR_PATH]["metadata"], "route": w.api.objects[ROUTE_PATH]}

    out = scenario(sm=sm)(steps)
    status = out["status"]
    assert status["phase"] == phase
    assert message in status["message"]
    assert status["currentStep"] == -1 and status["currentWeight"] == 0
    assert out["route_writes"] == []
    assert weights(out["route"]) == {BASELINE: None}  # untouched
    assert ROUTE_RESTORE_FINALIZER not in (out["meta"].get("finalizers") or [])
    if phase == "Pending":
        assert out["requeue"] == 5.0  # looked at again for the StudentModel


def test_a_candidate_within_its_served_gate_starts_the_rollout() -> None:
    out = scenario(sm=student_model(max_p95=20, served=("True", "WithinMaxP95")))(_reconciled_status)
    assert (out["phase"], out["currentWeight"]) == ("Progressing", 10)


def test_a_failed_check_without_a_gate_does_not_hold_the_rollout() -> None:
    out = scenario(sm=student_model(served=("False", "ServingCheckFailed")))(_reconciled_status)
    assert (out["phase"], out["currentWeight"]) == ("Progressing", 10)


async def _reconciled_status(w: World) -> dict[str, Any]:
    await w.reconcile()
    return w.status()


def test_a_candidate_that_becomes_ready_starts_the_rollout() -> None:
    async def steps(w: World) -> dict[str, Any]:
        await w.reconcile()
        waiting = w.status()
        w.api.put(SM_PATH, student_model())
        await w.reconcile()
        return {"waiting": waiting, "status": w.status(), "route": w.api.objects[ROUTE_PATH]}

    out = scenario(sm=student_model(phase="Pending"))(steps)
    assert out["waiting"]["phase"] == "Pending"
    assert (out["status"]["phase"], out["status"]["currentWeight"]) == ("Progressing", 10)
    assert weights(out["route"]) == {BASELINE: 90, CANDIDATE: 10}


# --- (5) abort, and the candidate deleted mid-rollout ----------------------------------------------------------------


async def _abort(w: World) -> None:
    w.edit(annotations={ABORT: "2026-01-01T12:00:00Z"})


async def _delete_candidate(w: World) -> None:
    del w.api.objects[SM_PATH]


@pytest.mark.parametrize(
    ("stop", "reason"),
    [(_abort, "aborted by user"), (_delete_candidate, "candidate StudentModel sentiment-student was deleted")],
    ids=["abort", "candidate-deleted"],
)
def test_a_stopped_rollout_puts_the_route_back_on_the_baseline(stop: Callable[[World], Awaitable[None]],
                                                                reason: str) -> None:
    async def steps(w: World) -> dict[str, Any]:
        await w.reconcile()
        routed = weights(w.api.objects[ROUTE_PATH])
        before = len(w.api.requests)
        await stop(w)
        requeue = await w.reconcile()
        return {"routed": routed, "requeue": requeue, "requests": w.api.requests[before:], "status": w.status(),
                "meta": w.api.objects[CR_PATH]["metadata"], "route": w.api.objects[ROUTE_PATH],
                "events": event_reasons(w.api)}

    out = scenario(sm=student_model())(steps)
    assert out["routed"] == {BASELINE: 90, CANDIDATE: 10}
    writes = bodies(out["requests"], "PATCH", ROUTE_PATH)
    assert len(writes) == 1 and weights(writes[0]) == {BASELINE: 100, CANDIDATE: 0}
    assert weights(out["route"]) == {BASELINE: 100, CANDIDATE: 0}
    status = out["status"]
    assert (status["phase"], status["currentWeight"]) == ("RolledBack", 0)
    assert reason in status["history"][-1]["reason"]
    assert status["routeSettledAt"]  # the route was seen back on the baseline
    assert ("Warning", "Rollback") in out["events"]
    assert ("Normal", "RouteReleased") in out["events"]
    assert ROUTE_RESTORE_FINALIZER not in (out["meta"].get("finalizers") or [])  # the route is given back
    if stop is _abort:
        assert status["handledAnnotations"] == {ABORT: "2026-01-01T12:00:00Z"}
