"""Status writes off the reconcile's critical path: coalesced per object, a few at a time, retried.

Under a burst (a thousand DistillationJobs applied at once) the API server is the bottleneck, and a status
write costs it more than creating the Job (it decodes, patches, re-validates and re-encodes the whole custom
resource: 30% of its CPU in bench/operator_scale.py). Kubernetes' own Job controller batches its status
writes for the same reason. Here a reconcile records the status it wants and moves on; this lane writes the
newest wanted status of each object, with at most `concurrency` writes in flight, so creating children keeps
most of the API server while a burst lasts and statuses follow within seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from .keys import Key

log = logging.getLogger("kubestill.status")


class StatusLane:
    """One pending write per key (a newer submit replaces an older one); `concurrency` writes at a time."""

    def __init__(self, kind: str, concurrency: int = 4, max_backoff: float = 30.0,
                 yield_to: Callable[[], bool] | None = None, max_yield: float = 5.0) -> None:
        self.kind = kind
        self.concurrency = concurrency
        self.max_backoff = max_backoff
        # While yield_to() is true (children being created), writes wait, up to max_yield seconds each.
        self.yield_to = yield_to
        self.max_yield = max_yield
        self._pending: dict[Key, Callable[[], Awaitable[None]]] = {}
        self._draining: dict[Key, asyncio.Task[None]] = {}
        self._slots: asyncio.Semaphore | None = None

    def submit(self, key: Key, write: Callable[[], Awaitable[None]]) -> None:
        """Write soon; a later submit for the same key before this one ran replaces it."""
        self._pending[key] = write
        if key not in self._draining:
            self._draining[key] = asyncio.get_running_loop().create_task(self._drain(key))

    def pending(self, key: Key) -> bool:
        return key in self._pending

    def forget(self, key: Key) -> None:
        """The object is gone: drop what was not written yet."""
        self._pending.pop(key, None)

    async def idle(self) -> None:
        """Until every submitted write has run (tests and shutdown)."""
        while self._draining:
            await asyncio.gather(*list(self._draining.values()), return_exceptions=True)

    async def _yield(self) -> None:
        if self.yield_to is None:
            return
        deadline = asyncio.get_running_loop().time() + self.max_yield
        while self.yield_to() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)

    async def _drain(self, key: Key) -> None:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.concurrency)
        attempt = 0
        try:
            while key in self._pending:
                await self._yield()
                async with self._slots:
                    write = self._pending.pop(key, None)
                    if write is None:
                        return
                    try:
                        await write()
                        attempt = 0
                        continue
                    except Exception as err:  # retried below: a status must not be lost to a transient error
                        attempt += 1
                        self._pending.setdefault(key, write)  # unless a newer one arrived meanwhile
                        delay = min(2.0**attempt, self.max_backoff)
                        log.warning("%s %s/%s: status write failed (%s), retry in %.0fs", self.kind, *key, err,
                                    delay)
                await asyncio.sleep(delay)
        finally:
            self._draining.pop(key, None)
