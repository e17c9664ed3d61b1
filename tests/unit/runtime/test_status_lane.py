"""The status lane: newest status wins per object, few writes at a time, failures retried."""

from __future__ import annotations

import asyncio

from kubestill.runtime import Key, StatusLane

A: Key = ("ns", "a")


def test_a_newer_submit_replaces_one_not_yet_written() -> None:
    async def scenario() -> list[str]:
        written: list[str] = []
        lane = StatusLane("Test")

        def write(value: str):  # type: ignore[no-untyped-def]
            async def run() -> None:
                written.append(value)
            return run

        for value in ("Pending", "Labeling", "Training"):
            lane.submit(A, write(value))
        await lane.idle()
        return written

    assert asyncio.run(scenario()) == ["Training"]


def test_at_most_concurrency_writes_in_flight() -> None:
    async def scenario() -> int:
        lane = StatusLane("Test", concurrency=3)
        in_flight, peak = 0, 0

        async def write() -> None:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.01)
            in_flight -= 1

        for i in range(20):
            lane.submit(("ns", str(i)), write)
        await lane.idle()
        return peak

    assert asyncio.run(scenario()) == 3


def test_a_failed_write_is_retried_unless_superseded() -> None:
    async def scenario() -> list[str]:
        calls: list[str] = []
        lane = StatusLane("Test", max_backoff=0.01)
        failures = iter([True, False])

        async def flaky() -> None:
            calls.append("flaky")
            if next(failures):
                raise RuntimeError("conflict")

        lane.submit(A, flaky)
        await lane.idle()
        return calls

    assert asyncio.run(scenario()) == ["flaky", "flaky"]


def test_forget_drops_the_pending_write() -> None:
    async def scenario() -> list[str]:
        written: list[str] = []
        lane = StatusLane("Test")

        async def write() -> None:
            written.append("x")

        lane.submit(A, write)
        lane.forget(A)
        await lane.idle()
        return written

    assert asyncio.run(scenario()) == []


def test_writes_wait_while_children_are_being_created() -> None:
    async def scenario() -> tuple[list[str], list[str]]:
        busy = True
        log: list[str] = []
        lane = StatusLane("Test", yield_to=lambda: busy, max_yield=5.0)

        async def write() -> None:
            log.append("status")

        lane.submit(A, write)
        await asyncio.sleep(0.2)
        before = list(log)  # still creating: nothing written
        busy = False
        await lane.idle()
        return before, log

    before, after = asyncio.run(scenario())
    assert before == [] and after == ["status"]


def test_yielding_is_bounded() -> None:
    async def scenario() -> list[str]:
        log: list[str] = []
        lane = StatusLane("Test", yield_to=lambda: True, max_yield=0.1)

        async def write() -> None:
            log.append("status")

        lane.submit(A, write)
        await asyncio.wait_for(lane.idle(), timeout=5)
        return log

    assert asyncio.run(scenario()) == ["status"]
