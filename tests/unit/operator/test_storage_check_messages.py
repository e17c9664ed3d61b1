"""The storage and serving checks remember finished check Jobs' termination messages (a finished Job never changes:
its Pods are listed once, FinishedJobMessages), and forget the least recently used beyond its capacity, so check
Jobs of deleted owners do not pile up in a long-running operator."""

from __future__ import annotations

import asyncio
from typing import Any

from kubestill.handlers.storage_check import StorageChecks
from kubestill.settings import Settings


class PodLister:
    """Lists one failed Pod per Job, whose termination message names the Job; counts the lists."""

    def __init__(self) -> None:
        self.lists: list[str] = []

    async def list(self, api_version: str, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        self.lists.append(selector)
        job = selector.split("=", 1)[1]
        terminated = {"exitCode": 3, "message": f"{job}: AccessDenied"}
        return [{"status": {"containerStatuses": [{"state": {"terminated": terminated}}]}}]


def test_messages_are_listed_once_and_bounded() -> None:
    checks = StorageChecks(Settings())
    checks.messages.capacity = 2
    api = PodLister()

    async def message(job: str) -> str:
        return await checks.messages.get(api, "ns", job)  # type: ignore[arg-type]

    async def scenario() -> list[str]:
        return [await message(j) for j in ("a", "b", "a", "c", "a", "b")]

    got = asyncio.run(scenario())
    assert got == [f"exit code 3: {j}: AccessDenied" for j in ("a", "b", "a", "c", "a", "b")]
    # a, b listed; a remembered; c evicts b (a was used more recently); a remembered; b listed again.
    assert api.lists == [f"batch.kubernetes.io/job-name={j}" for j in ("a", "b", "c", "b")]
    assert len(checks.messages) == 2
