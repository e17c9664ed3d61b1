"""The CanaryRollout kind with a shadow step mirrored through Traefik (spec.shadow.mirror: TraefikService), on the
fake client of test_canary_handler.py: the TraefikService is applied before the route names it, the route gets it
in the baseline's place, the first step puts the baseline back and the TraefikService is deleted only after the
grace; a cluster without Traefik's CRDs holds the rollout with one RouteReady=False condition and the route
untouched; an abort and a delete while shadowing give the rule back."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from kubestill.api.names import ROUTE_RESTORE_FINALIZER
from kubestill.clients.kube import ApiError, Connection
from kubestill.handlers.canary_route_sync import MIRROR_POLL, MIRROR_SETTLING
from kubestill.handlers.operator import build
from kubestill.logic.shadow_mirror import MIRROR_RELEASE_GRACE
from kubestill.settings import Settings

from .test_canary_handler import (
    ABORT,
    BASELINE,
    CANDIDATE,
    CR_PATH,
    ROUTE_PATH,
    SM_PATH,
    RolloutKube,
    World,
    bodies,
    condition,
    event_reasons,
    httproute,
    index,
    rollout,
    route_writes,
    student_model,
)

TS_PATH = "/apis/traefik.io/v1alpha1/namespaces/ml/traefikservices/sentiment-rollout-shadow"
TS_REF = {"group": "traefik.io", "kind": "TraefikService", "name": "sentiment-rollout-shadow"}
SHADOW = {"percent": 50, "pause": "1h", "mirror": "TraefikService"}


class TraefikKube(RolloutKube):
    """RolloutKube plus what a server with (or, `served=False`, without) Traefik's CRDs answers for
    TraefikServices: a server-side apply creates a missing object, DELETE removes one; without the CRDs every
    TraefikService request is a 404."""

    def __init__(self, served: bool = True) -> None:
        super().__init__()
        self.served = served

    async def request(self, verb: str, path: str, *, body: Any = None, params: Mapping[str, str] | None = None,
                      content_type: str = "application/json", parse: bool = True) -> dict[str, Any]:
        if not path.startswith("/apis/traefik.io/"):
            return await super().request(verb, path, body=body, params=params, content_type=content_type,
                                         parse=parse)
        self.requests.append((verb, path, copy.deepcopy(body)))
        if not self.served or (verb in ("GET", "DELETE") and path not in self.objects):
            raise ApiError(404, "NotFound", path)
        if verb == "DELETE":
            del self.objects[path]
            return {}
        if verb == "PATCH" and content_type == "application/apply-patch+yaml":
            # The whole object is ours: the apply replaces it; its creation time is the server's, kept.
            created = (self.objects.get(path) or {}).get("metadata", {}).get("creationTimestamp") or \
                datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            return self.put(path, {**body, "metadata": {**body["metadata"], "creationTimestamp": created}})
        assert verb == "GET", (verb, path)
        return copy.deepcopy(self.objects[path])


def run(steps: Callable[[World], Awaitable[dict[str, Any]]], served: bool = True, **spec: Any) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        api = TraefikKube(served)
        api.put(CR_PATH, rollout(**{"shadow": SHADOW, **spec}))
        api.put(ROUTE_PATH, httproute())
        api.put(SM_PATH, student_model())
        ops = build(Settings(), Connection(api))  # type: ignore[arg-type]
        try:
            return await steps(World(api, ops))  # type: ignore[arg-type]
        finally:
            await ops.close()

    return asyncio.run(main())


async def settled(w: World) -> None:
    """The TraefikService made old enough for the route to name it (shadow_mirror.MIRROR_SETTLE_GRACE), and the
    rollout looked at again."""
    w.api.objects[TS_PATH]["metadata"]["creationTimestamp"] = "2020-01-01T00:00:00Z"
    await w.reconcile()


def rule_refs(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(body["spec"]["rules"][0]["backendRefs"])


def deletes(api: TraefikKube) -> list[str]:
    return [r[1] for r in api.requests if r[0] == "DELETE"]


def test_the_shadow_step_routes_through_the_traefik_service_then_the_first_step_puts_the_baseline_back() -> None:
    async def steps(w: World) -> dict[str, Any]:
        out: dict[str, Any] = {}
        out["settle_requeue"] = await w.reconcile()
        # Created just now: Traefik may not have it yet, so the route does not name it yet.
        out["settling"], out["settling_route"] = w.status(), copy.deepcopy(w.api.objects[ROUTE_PATH])
        await settled(w)
        out["shadowing"], out["ts"] = w.status(), copy.deepcopy(w.api.objects.get(TS_PATH))
        out["route"], out["requests"] = copy.deepcopy(w.api.objects[ROUTE_PATH]), list(w.api.requests)
        before = len(w.api.requests)
        await w.reconcile()  # nothing changed: nothing written
        out["again"] = [r for r in w.api.requests[before:] if r[0] in ("PATCH", "DELETE")]
        w.edit(status={"nextStepAt": "2020-01-01T00:00:00Z"})  # the shadow's pause is over
        out["requeue"] = await w.reconcile()
        out["step"], out["routed"] = w.status(), copy.deepcopy(w.api.objects[ROUTE_PATH])
        out["kept"] = TS_PATH in w.api.objects  # not deleted with the route change
        w.edit(status={"stepStartedAt": "2020-01-01T00:00:00Z", "nextStepAt": "2099-01-01T00:00:00Z"})
        await w.reconcile()  # the route has been without it for longer than the grace
        out["gone"], out["deletes"] = TS_PATH not in w.api.objects, deletes(w.api)
        await w.reconcile()
        out["deletes_after"] = deletes(w.api)
        return out

    out = run(steps)
    settling = condition(out["settling"], "RouteReady")
    assert (settling["status"], settling["reason"]) == ("False", MIRROR_SETTLING), settling
    assert not out["settling"].get("stepStartedAt")  # the shadow step's clock waits for the route
    assert rule_refs(out["settling_route"]) == rule_refs(httproute()) and out["settle_requeue"] == MIRROR_POLL
    status = out["shadowing"]
    assert (status["phase"], status["shadowing"], status["currentWeight"]) == ("Progressing", True, 0)
    assert condition(status, "RouteReady")["status"] == "True" and status["stepStartedAt"]
    ts = out["ts"]
    assert ts["spec"] == {"mirroring": {"name": BASELINE, "port": 8000,
                                        "mirrors": [{"name": CANDIDATE, "port": 8000, "percent": 50}]}}
    assert ts["metadata"]["ownerReferences"][0]["uid"] == "uid-3"
    assert ts["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "kubestill"}
    assert rule_refs(out["route"]) == [{**TS_REF, "weight": 100}, {"name": CANDIDATE, "port": 8000, "weight": 0}]
    assert "filters" not in out["route"]["spec"]["rules"][0]  # no RequestMirror filter
    reqs = out["requests"]
    assert index(reqs, "PATCH", TS_PATH) < index(reqs, "PATCH", ROUTE_PATH)  # never a route naming a missing one
    assert out["again"] == []
    assert out["requeue"] <= MIRROR_RELEASE_GRACE.total_seconds()  # looked at again when it may go
    assert (out["step"]["currentStep"], out["step"]["shadowing"]) == (0, False)
    assert rule_refs(out["routed"]) == [{"name": BASELINE, "port": 8000, "weight": 90},
                                        {"name": CANDIDATE, "port": 8000, "weight": 10}]
    assert out["kept"]
    assert out["gone"] and out["deletes"] == [TS_PATH]
    assert out["deletes_after"] == [TS_PATH]  # deleted once


def test_without_traefik_crds_the_rollout_waits_with_a_reason_and_the_route_untouched() -> None:
    async def steps(w: World) -> dict[str, Any]:
        requeues = [await w.reconcile() for _ in range(3)]
        return {"requeues": requeues, "status": w.status(), "route": w.api.objects[ROUTE_PATH],
                "route_writes": route_writes(w.api), "events": event_reasons(w.api)}

    out = run(steps, served=False)
    assert out["route_writes"] == []
    assert rule_refs(out["route"]) == [{"name": BASELINE, "port": 8000}]
    ready = condition(out["status"], "RouteReady")
    assert (ready["status"], ready["reason"]) == ("False", "TraefikServiceUnavailable")
    assert "install Traefik's CRDs" in ready["message"]
    assert out["status"]["shadowing"] and out["status"].get("stepStartedAt") is None  # the shadow never clocked
    assert out["events"].count(("Warning", "TraefikServiceUnavailable")) == 1
    assert out["requeues"] == [5.0, 10.0, 20.0]  # backing off, not a crash loop


def test_an_abort_while_shadowing_puts_the_baseline_back() -> None:
    async def steps(w: World) -> dict[str, Any]:
        await w.reconcile()
        w.edit(annotations={ABORT: "now"})
        await w.reconcile()
        return {"status": w.status(), "route": w.api.objects[ROUTE_PATH],
                "meta": w.api.objects[CR_PATH]["metadata"]}

    out = run(steps)
    assert out["status"]["phase"] == "RolledBack" and out["status"]["routeSettledAt"]
    assert rule_refs(out["route"]) == [{"name": BASELINE, "port": 8000, "weight": 100},
                                       {"name": CANDIDATE, "port": 8000, "weight": 0}]
    assert ROUTE_RESTORE_FINALIZER not in (out["meta"].get("finalizers") or [])


def test_a_delete_while_shadowing_restores_the_rule_then_releases_after_the_grace() -> None:
    async def restored_with_the_filter(w: World) -> dict[str, Any]:
        await w.reconcile()
        body = copy.deepcopy(w.api.objects[CR_PATH])
        body["metadata"]["deletionTimestamp"] = "2099-01-01T00:00:00Z"
        w.api.put(CR_PATH, body)
        await w.reconcile()
        return copy.deepcopy(w.api.objects[ROUTE_PATH])

    async def steps(w: World) -> dict[str, Any]:
        await w.reconcile()
        await settled(w)
        body = copy.deepcopy(w.api.objects[CR_PATH])
        body["metadata"]["deletionTimestamp"] = "2099-01-01T00:00:00Z"
        w.api.put(CR_PATH, body)
        first = await w.reconcile()
        out: dict[str, Any] = {"first": first, "route": copy.deepcopy(w.api.objects[ROUTE_PATH]),
                               "held": w.api.objects[CR_PATH]["metadata"].get("finalizers")}
        before = len(route_writes(w.api))
        out["second"] = await w.reconcile()
        out["writes"] = route_writes(w.api)[before:]
        out["meta"], out["events"] = w.api.objects[CR_PATH]["metadata"], event_reasons(w.api)
        return out

    out = run(steps)
    # The rule as a deleted RequestMirror shadow step leaves it: as it was, the baseline without a weight key
    # (Gateway API's default; the route record keeps "no weight key" through its annotation).
    same = run(restored_with_the_filter, shadow={"percent": 50, "pause": "1h"})
    assert rule_refs(out["route"]) == rule_refs(same) == [{"name": BASELINE, "port": 8000}]
    assert out["route"]["spec"]["rules"] == same["spec"]["rules"]
    assert out["first"] == MIRROR_RELEASE_GRACE.total_seconds()
    assert ROUTE_RESTORE_FINALIZER in out["held"]  # kept while Traefik drops the TraefikService from the route
    assert out["second"] is None and out["writes"] == []
    assert ROUTE_RESTORE_FINALIZER not in (out["meta"].get("finalizers") or [])
    assert ("Normal", "RouteRestored") in out["events"]


def test_a_request_mirror_shadow_never_touches_traefik_services() -> None:
    async def steps(w: World) -> dict[str, Any]:
        await w.reconcile()
        w.edit(status={"nextStepAt": "2020-01-01T00:00:00Z"})
        await w.reconcile()
        w.edit(status={"stepStartedAt": "2020-01-01T00:00:00Z"})
        await w.reconcile()
        return {"traefik": [r for r in w.api.requests if "/traefik.io/" in r[1]],
                "first": bodies(w.api.requests, "PATCH", ROUTE_PATH)[0]}

    out = run(steps, shadow={"percent": 50, "pause": "1h"})
    assert out["traefik"] == []
    assert out["first"]["spec"]["rules"][0]["filters"][0]["type"] == "RequestMirror"
