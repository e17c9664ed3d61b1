"""Kubernetes Events on our objects, so `kubectl describe` tells the story of each transition."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
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
# delays the next Job (under a 1,000-object burst they trail the Jobs by a few seconds); references are kept
# until each task ends (asyncio holds only weak ones).
EVENT_CONCURRENCY = 2
_pending: set[asyncio.Task[None]] = set()
_slots: asyncio.Semaphore | None = None
log = logging.getLogger("kubestill.events")


def emit(client: KubeClient, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    """Post an Event in the background; a failure is logged, never raised (Events are best effort)."""
    global _slots
    if _slots is None:
        _slots = asyncio.Semaphore(EVENT_CONCURRENCY)
    slots = _slots

    async def post() -> None:
        async with slots:
            try:
                await post_event(client, obj, type_, reason, message)
            except Exception as err:  # best effort by design
                log.debug("event %s not posted: %s", reason, err)

    task = asyncio.get_running_loop().create_task(post())
    _pending.add(task)
    task.add_done_callback(_pending.discard)
