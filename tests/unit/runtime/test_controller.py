"""The runtime's Controller with a fake client: echo skip, coalescing, expectations, each status policy,
conflicts and retries. A toy kind (Widget) keeps the kinds' own logic out of it."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest
from pydantic import Field

from kubestill.api.v1alpha1 import API_VERSION, KubeModel
from kubestill.runtime import (
    Coalesced,
    Conditional,
    Controller,
    Expectations,
    Immediate,
    Key,
    Kind,
    StatusPolicy,
    status_patch,
)

from .fake_kube import FakeKube

KEY: Key = ("ns", "w")
PATH = f"/apis/{API_VERSION}/namespaces/ns/widgets/w"


class WidgetSpec(KubeModel):
    size: int = Field(default=1, description="Size.")


class WidgetStatus(KubeModel):
    seen: int = Field(default=0, description="Size seen.")
    note: str | None = Field(default=None, description="A note.")


class Widgets(Kind[WidgetSpec, WidgetStatus]):
    """Status `seen` = spec.size; records each reconcile; can block until released."""

    def __init__(self) -> None:
        self.calls: list[Key] = []
        self.gate: asyncio.Event | None = None
        self.forgotten: list[Key] = []

    async def reconcile(self, ctl: Controller[WidgetSpec, WidgetStatus], key: Key, body: dict[str, Any]) -> None:
        self.calls.append(key)
        if self.gate is not None:
            await self.gate.wait()
        status = ctl.status.parse(body)
        await ctl.status.write(key, body, status, status.model_copy(update={"seen": ctl.spec_of(body).size}))

    def forget(self, key: Key) -> None:
        self.forgotten.append(key)


def widget(size: int = 3, rv: str = "1", status: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "Widget", "metadata": {"namespace": "ns", "name": "w",
            "resourceVersion": rv, "generation": 1}, "spec": {"size": size}, "status": dict(status or {})}


def make(policy: StatusPolicy, api: FakeKube, kind: Widgets | None = None) -> Controller[WidgetSpec, WidgetStatus]:
    """A controller whose bodies come from watch events (no kopf index)."""
    return Controller("Widget", WidgetSpec, WidgetStatus, kind or Widgets(), api=lambda: api,  # type: ignore[arg-type,return-value]
                      api_version=API_VERSION, plural="widgets", policy=policy, body_index=None)


def test_the_echo_of_our_own_status_write_is_skipped() -> None:
    async def scenario() -> tuple[list[Key], int]:
        api = FakeKube()
        written = api.put(PATH, widget())
        kind = Widgets()
        ctl = make(Immediate(), api, kind)
        await ctl.on_event("ADDED", written, {})
        echo = api.objects[PATH]  # what the watch now delivers: our write
        await ctl.on_event("MODIFIED", echo, {})
        await ctl.on_event("MODIFIED", {**echo, "metadata": {**echo["metadata"], "resourceVersion": "999"}}, {})
        return kind.calls, len(api.writes())

    calls, patches = asyncio.run(scenario())
    assert calls == [KEY, KEY]  # the ADDED and the later change; not the echo
    assert patches == 1  # the second reconcile found the status already right


def test_events_during_a_reconcile_coalesce_into_one_more() -> None:
    async def scenario() -> list[Key]:
        api = FakeKube()
        body = api.put(PATH, widget())
        kind = Widgets()
        kind.gate = asyncio.Event()
        ctl = make(Immediate(), api, kind)
        first = asyncio.create_task(ctl.on_event("ADDED", body, {}))
        await asyncio.sleep(0)
        for rv in ("2", "3", "4"):
            await ctl.on_event("MODIFIED", {**body, "metadata": {**body["metadata"], "resourceVersion": rv}}, {})
        kind.gate.set()
        await first
        return kind.calls

    assert asyncio.run(scenario()) == [KEY, KEY]


def test_delete_forgets_everything_and_tells_the_kind() -> None:
    async def scenario() -> tuple[list[Key], Any, frozenset[str]]:
        api = FakeKube()
        body = api.put(PATH, widget())
        kind = Widgets()
        ctl = make(Immediate(), api, kind)
        await ctl.on_event("ADDED", body, {})
        ctl.expectations.expect(KEY, "child")
        await ctl.on_event("DELETED", body, {})
        return kind.forgotten, ctl.cache.latest(KEY), ctl.expectations.pending(KEY, ())

    forgotten, latest, pending = asyncio.run(scenario())
    assert forgotten == [KEY] and latest is None and pending == frozenset()


def test_conditional_writes_carry_the_resource_version_and_a_conflict_rereads() -> None:
    async def scenario() -> tuple[Any, Any, list[tuple[str, str, Any]]]:
        api = FakeKube()
        stale = api.put(PATH, widget())
        api.put(PATH, widget(size=5))  # changed by someone else since `stale` was read
        ctl = make(Conditional(), api)
        new = WidgetStatus(seen=3)
        result = await ctl.status.write(KEY, stale, None, new)
        return result, ctl.cache.latest(KEY), api.requests

    result, latest, requests = asyncio.run(scenario())
    assert result is None  # decide again on fresh data
    assert latest is not None and latest["spec"]["size"] == 5
    assert requests[0][0] == "PATCH" and requests[0][2]["metadata"] == {"resourceVersion": "101"}
    assert requests[1][0] == "GET"


def test_conditional_write_succeeds_on_a_current_body() -> None:
    async def scenario() -> tuple[Any, Any]:
        api = FakeKube()
        body = api.put(PATH, widget(status={"seen": 1, "note": "old"}))
        ctl = make(Conditional(), api)
        result = await ctl.status.write(KEY, body, None, WidgetStatus(seen=3))
        return result, api.objects[PATH]["status"]

    result, stored = asyncio.run(scenario())
    assert result is not None and result["status"] == {"seen": 3}
    assert stored == {"seen": 3}  # the cleared note went away: unset fields are sent as null


@pytest.mark.parametrize("policy", [Immediate(), Conditional(), Coalesced()])
def test_an_unchanged_status_is_never_written(policy: StatusPolicy) -> None:
    async def scenario() -> int:
        api = FakeKube()
        body = api.put(PATH, widget(status={"seen": 3}))
        ctl = make(policy, api)
        await ctl.status.write(KEY, body, None, WidgetStatus(seen=3))
        await ctl.status.idle()
        return len(api.writes())

    assert asyncio.run(scenario()) == 0


def test_a_gone_object_is_not_an_error() -> None:
    async def scenario() -> Any:
        api = FakeKube()
        ctl = make(Immediate(), api)
        return await ctl.status.write(KEY, widget(), None, WidgetStatus(seen=3))

    assert asyncio.run(scenario()) is None


def test_coalesced_writes_only_the_newest_status_and_reconciles_start_from_it() -> None:
    async def scenario() -> tuple[WidgetStatus | None, list[Any], WidgetStatus | None]:
        api = FakeKube()
        body = api.put(PATH, widget())
        ctl = make(Coalesced(), api)
        ctl.cache.remember(KEY, body)
        for seen in (1, 2, 3):
            await ctl.status.write(KEY, body, None, WidgetStatus(seen=seen))
        queued = ctl.status.desired(KEY)
        await ctl.status.idle()
        return queued, [r[2]["status"]["seen"] for r in api.writes()], ctl.status.desired(KEY)

    queued, written, after = asyncio.run(scenario())
    assert queued == WidgetStatus(seen=3)
    assert written == [3]
    assert after is None


def test_coalesced_writes_wait_while_children_are_created_and_retry_failures() -> None:
    async def scenario() -> tuple[int, int, Any]:
        api = FakeKube()
        body = api.put(PATH, widget())
        api.fail[("PATCH", PATH + "/status")] = [500]
        ctl = make(Coalesced(max_backoff=0.01), api)
        ctl.cache.remember(KEY, body)
        with ctl.creating:
            await ctl.status.write(KEY, body, None, WidgetStatus(seen=3))
            await asyncio.sleep(0.2)
            during = len(api.writes())
        await ctl.status.idle()
        return during, len(api.writes()), api.objects[PATH]["status"]

    during, attempts, stored = asyncio.run(scenario())
    assert during == 0
    assert attempts == 2  # one failure (500), then written
    assert stored == {"seen": 3}


def test_a_failed_reconcile_is_retried_with_backoff() -> None:
    class Flaky(Widgets):
        async def reconcile(self, ctl: Controller[WidgetSpec, WidgetStatus], key: Key,
                            body: dict[str, Any]) -> None:
            self.calls.append(key)
            if len(self.calls) == 1:
                raise RuntimeError("API server said no")

    async def scenario() -> list[Key]:
        api = FakeKube()
        kind = Flaky()
        ctl = make(Immediate(), api, kind)
        ctl.reconciler.requeue = lambda key, delay: asyncio.get_running_loop().call_later(  # type: ignore[method-assign,assignment,return-value]
            0.01, lambda: asyncio.ensure_future(ctl.reconciler.run(key)))
        await ctl.on_event("ADDED", api.put(PATH, widget()), {})
        await asyncio.sleep(0.1)
        return kind.calls

    assert asyncio.run(scenario()) == [KEY, KEY]


def test_child_events_reach_the_owner_unless_only_an_expectation_is_met() -> None:
    class Parent(Widgets):
        def child_seen(self, ctl: Controller[WidgetSpec, WidgetStatus], owner: Key, body: Mapping[str, Any]) -> bool:
            return ctl.expectations.observed(owner, body["metadata"]["name"])

    async def scenario() -> list[Key]:
        api = FakeKube()
        kind = Parent()
        ctl = Controller("Widget", WidgetSpec, WidgetStatus, kind, api=lambda: api,  # type: ignore[arg-type,return-value]
                         api_version=API_VERSION, plural="widgets", policy=Immediate(), body_index=None,
                         owner_label="example.io/widget")
        await ctl.on_event("ADDED", api.put(PATH, widget()), {})
        kind.calls.clear()
        child = {"metadata": {"namespace": "ns", "name": "w-child", "labels": {"example.io/widget": "w"}}}
        ctl.expectations.expect(KEY, "w-child")
        await ctl.on_child_event("ADDED", child, {})  # the expected child: nothing to do
        await ctl.on_child_event("MODIFIED", child, {})  # a change of it: reconcile the owner
        await ctl.on_child_event("ADDED", {"metadata": {"namespace": "ns", "name": "x"}}, {})  # no owner label
        return kind.calls

    assert asyncio.run(scenario()) == [KEY]


def test_indexes_are_taken_from_the_handler_kwargs_by_name() -> None:
    api = FakeKube()
    ctl = Controller("Widget", WidgetSpec, WidgetStatus, Widgets(), api=lambda: api,  # type: ignore[arg-type,return-value]
                     api_version=API_VERSION, plural="widgets", policy=Immediate(), body_index="widgets",
                     index_names=("children",))
    body = widget()
    ctl.cache.refresh({"widgets": {KEY: [body]}, "children": {KEY: ["a", "b"]}, "body": body, "logger": None})
    assert ctl.cache.latest(KEY) == body
    assert ctl.cache.all("children", KEY) == ("a", "b")
    assert set(ctl.cache.indexes) == {"widgets", "children"}


# --- expectations ------------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("seen", "elapsed", "pending"),
    [
        ((), 10.0, {"label"}),  # created, not yet seen: still expected
        (("label",), 10.0, set()),  # seen: met
        ((), 31.0, set()),  # never seen within the deadline: create again
    ],
)
def test_expectations(seen: tuple[str, ...], elapsed: float, pending: set[str]) -> None:
    clock = Clock()
    exp = Expectations(ttl=30.0, clock=clock)
    exp.expect(KEY, "label")
    clock.now = elapsed
    assert exp.pending(KEY, seen) == pending


def test_an_observed_expectation_is_met_once() -> None:
    exp = Expectations()
    exp.expect(KEY, "label")
    assert exp.observed(KEY, "label") is True
    assert exp.observed(KEY, "label") is False
    assert exp.observed(KEY, "train") is False


# --- the patch --------------------------------------------------------------------------------------------


def test_status_patch_nulls_what_went_away() -> None:
    old = {"seen": 1, "note": "x", "kopf": {"progress": {}}}
    assert status_patch(old, WidgetStatus(seen=2), nulls=True) == {"seen": 2, "note": None, "kopf": None}
    assert status_patch(old, WidgetStatus(seen=2), nulls=False) == {"seen": 2, "note": None, "kopf": None}
    assert status_patch({}, WidgetStatus(seen=2), nulls=True) == {"seen": 2, "note": None}
    assert status_patch({}, WidgetStatus(seen=2), nulls=False) == {"seen": 2}  # only what is set
