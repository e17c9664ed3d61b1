"""Level-triggered reconciliation on top of kopf's watch events, one Reconciler per kind.

kopf's change-detecting handlers (on.create/on.update) store a diff-base annotation and timers add a
finalizer: an extra write per object, and objects stuck on deletion when the operator is down. The
pipeline needs neither: every reconcile recomputes the status from what exists (kopf in-memory indexes,
no API reads), so we react to raw watch events of the object and of its children, serialise reconciles of
one object with a lock, and retry a failed reconcile with backoff ourselves. (The one finalizer kubestill sets,
a CanaryRollout's `kubestill.io/route-restore`, is its own and held only while the rollout changes a route:
handlers/canary_finalizer.py.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import Counter, Histogram

from .keys import Key

# Prometheus collectors live in the process-wide registry that /metrics exports: registered once per process,
# they are the exporter's state, not the controllers'.
RECONCILES = Counter("kubestill_reconciles_total", "Reconciles run", ["kind", "result"])
RECONCILE_SECONDS = Histogram("kubestill_reconcile_seconds", "Duration of one reconcile", ["kind"])
logger = logging.getLogger("kubestill.reconciler")

# At most this many reconciles run at once across all objects (Settings.max_concurrent_reconciles, one
# ReconcileSlots shared by every kind): a safety valve for memory when thousands of objects arrive together.
# Measured (bench/operator_scale.py): 32 made p99 worse (21 -> 31 s at 1,000) since the API server, not the
# operator, is the bottleneck there; hence a high default.
DEFAULT_MAX_CONCURRENT = 256


class ReconcileSlots:
    """The operator-wide bound on concurrent reconciles; the semaphore is made in the running loop."""

    def __init__(self, limit: int = DEFAULT_MAX_CONCURRENT) -> None:
        self.limit = limit
        self._semaphore: asyncio.Semaphore | None = None

    def get(self) -> asyncio.Semaphore:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.limit)
        return self._semaphore


class Reconciler:
    """Runs `fn(key)` for a key, one at a time per key; a failure is retried with exponential backoff.

    Events that arrive while a key's reconcile is queued or running are coalesced into one more run after
    it: a burst (the object, its status echo, each child's ADDED) costs two reconciles, not one per event.
    Every run reads the newest state, so nothing an event announced is missed.
    """

    def __init__(self, kind: str, fn: Callable[[Key], Awaitable[float | None]],
                 slots: ReconcileSlots | None = None) -> None:
        self.kind = kind
        self.fn = fn
        self.slots = slots or ReconcileSlots()
        self._active: set[Key] = set()
        self._dirty: set[Key] = set()
        self._retries: dict[Key, int] = {}
        self._scheduled: dict[Key, asyncio.TimerHandle] = {}

    async def run(self, key: Key) -> None:
        if key in self._active:
            self._dirty.add(key)
            return
        self._active.add(key)
        try:
            while True:
                self._dirty.discard(key)
                async with self.slots.get():
                    await self._once(key)
                if key not in self._dirty:
                    return
        finally:
            self._active.discard(key)

    async def _once(self, key: Key) -> None:
        with RECONCILE_SECONDS.labels(kind=self.kind).time():
            try:
                requeue = await self.fn(key)
            except Exception as err:  # retried below: a transient API error must not stall the job
                RECONCILES.labels(kind=self.kind, result="error").inc()
                attempt = self._retries.get(key, 0) + 1
                self._retries[key] = attempt
                delay = min(2.0**attempt, 60.0)
                logger.warning("%s %s/%s: reconcile failed (%s), retry in %.0fs", self.kind, *key, err, delay)
                self.requeue(key, delay)
                return
        RECONCILES.labels(kind=self.kind, result="ok").inc()
        self._retries.pop(key, None)
        if requeue is not None:
            self.requeue(key, requeue)

    def requeue(self, key: Key, delay: float) -> None:
        """Run again after `delay` seconds (one pending timer per key)."""
        old = self._scheduled.pop(key, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._scheduled[key] = loop.call_later(delay, lambda: asyncio.ensure_future(self._fire(key)))

    async def _fire(self, key: Key) -> None:
        self._scheduled.pop(key, None)
        await self.run(key)

    def forget(self, key: Key) -> None:
        """The object is gone: drop its pending rerun, retries and timer."""
        timer = self._scheduled.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._retries.pop(key, None)
        self._dirty.discard(key)

