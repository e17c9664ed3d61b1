"""The Reconciler: one run at a time per key, bursts coalesced, failures retried with backoff."""

from __future__ import annotations

import asyncio

import pytest

from kubestill.runtime import Key, Reconciler

A: Key = ("ns", "a")
B: Key = ("ns", "b")


class Recorder:
    """A reconcile function that blocks until released, recording each call."""

    def __init__(self, result: float | None = None, fail: int = 0) -> None:
        self.calls: list[Key] = []
        self.running: set[Key] = set()
        self.overlap = False
        self.gate = asyncio.Event()
        self.result = result
        self.fail = fail

    async def __call__(self, key: Key) -> float | None:
        if key in self.running:
            self.overlap = True
        self.running.add(key)
        self.calls.append(key)
        try:
            await self.gate.wait()
        finally:
            self.running.discard(key)
        if self.fail:
            self.fail -= 1
            raise RuntimeError("API server said no")
        return self.result


@pytest.mark.parametrize(("events_during_run", "expected_runs"), [(0, 1), (1, 2), (5, 2)])
def test_events_during_a_run_coalesce_into_one_more(events_during_run: int, expected_runs: int) -> None:
    async def scenario() -> Recorder:
        fn = Recorder()
        r = Reconciler("Test", fn)
        first = asyncio.create_task(r.run(A))
        await asyncio.sleep(0)
        others = [asyncio.create_task(r.run(A)) for _ in range(events_during_run)]
        await asyncio.sleep(0)
        fn.gate.set()
        await asyncio.gather(first, *others)
        return fn

    fn = asyncio.run(scenario())
    assert fn.calls == [A] * expected_runs
    assert not fn.overlap


def test_different_keys_run_concurrently() -> None:
    async def scenario() -> Recorder:
        fn = Recorder()
        r = Reconciler("Test", fn)
        tasks = [asyncio.create_task(r.run(k)) for k in (A, B)]
        await asyncio.sleep(0)
        assert fn.running == {A, B}
        fn.gate.set()
        await asyncio.gather(*tasks)
        return fn

    assert sorted(asyncio.run(scenario()).calls) == [A, B]


@pytest.mark.parametrize(("fail", "result", "scheduled"), [(1, None, True), (0, 5.0, True), (0, None, False)])
def test_failure_or_requeue_schedules_another_run(fail: int, result: float | None, scheduled: bool) -> None:
    async def scenario() -> tuple[bool, int]:
        fn = Recorder(result=result, fail=fail)
        fn.gate.set()
        r = Reconciler("Test", fn)
        await r.run(A)
        pending = A in r._scheduled
        retries = r._retries.get(A, 0)
        r.forget(A)
        return pending, retries

    pending, retries = asyncio.run(scenario())
    assert pending is scheduled
    assert retries == fail


def test_forget_drops_a_pending_rerun() -> None:
    async def scenario() -> Recorder:
        fn = Recorder()
        r = Reconciler("Test", fn)
        first = asyncio.create_task(r.run(A))
        await asyncio.sleep(0)
        await r.run(A)  # coalesced: marks a rerun
        r.forget(A)  # the object was deleted meanwhile
        fn.gate.set()
        await first
        return fn

    assert asyncio.run(scenario()).calls == [A]
