"""Kubernetes Events on our objects, so `kubectl describe` tells the story of each transition."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from .kube import KubeClient


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def post_event(client: KubeClient, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    """A core/v1 Event about `obj` (reported by component kubestill-operator)."""
    meta = obj["metadata"]
    now = _now()
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": obj["apiVersion"],
            "kind": obj["kind"],
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": "kubestill-operator"},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    await client.create(body)


# Events are posted off the reconcile's critical path, two at a time, so a burst of transitions never
# delays the next Job (under a 1,000-object burst they trail the Jobs by a few seconds).
EVENT_CONCURRENCY = 2
log = logging.getLogger("kubestill.events")


class EventRecorder:
    """Posts Events in the background (Kubernetes' EventRecorder, best effort): at most EVENT_CONCURRENCY at a
    time, a failure logged at debug level, never raised. `api` gives the current client. One per operator."""

    def __init__(self, api: Callable[[], KubeClient], concurrency: int = EVENT_CONCURRENCY) -> None:
        self.api = api
        self.concurrency = concurrency
        self._slots: asyncio.Semaphore | None = None  # made on first use, inside kopf's event loop
        self._pending: set[asyncio.Task[None]] = set()  # asyncio keeps only weak references to tasks

    def emit(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Queue one Event about `obj`; returns at once. Must be called from the event loop."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.concurrency)
        slots, client = self._slots, self.api()

        async def post() -> None:
            async with slots:
                try:
                    await post_event(client, obj, type_, reason, message)
                except Exception as err:  # best effort by design
                    log.debug("event %s not posted: %s", reason, err)

        task = asyncio.get_running_loop().create_task(post())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait for the Events queued so far (at shutdown, and in tests)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
