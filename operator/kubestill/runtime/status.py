"""The one status writer, with an explicit policy per kind.

Every kind writes its status the same way: a merge patch of the status subresource carrying the whole Status
model (unset fields as nulls, so cleared fields go away), skipped when the model equals what the server has,
with the body the API server returns remembered as the newest version (and its watch event then recognised as
our echo, cache.py). What differs is when and under what condition the write happens:

- `Coalesced` (DistillationJob): off the reconcile's critical path, in a lane (status_lane.py) that writes the
  newest wanted status per object a few at a time and waits while children are being created. Under a burst
  the API server is the bottleneck and a status write costs it more than creating a Job.
- `Conditional` (CanaryRollout): at once, conditioned on the resourceVersion the decision was made on; a
  conflict (409) reads the object again and says so, so the decision is made again on fresh data and no step
  is ever taken twice.
- `Immediate` (StudentModel): at once, unconditioned; its status follows only from what it observes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from pydantic import ValidationError

from kubestill.api.v1alpha1._base import KubeModel
from kubestill.clients.kube import ApiError, KubeClient

from .cache import WatchCache
from .keys import Key
from .status_lane import StatusLane

StatusT = TypeVar("StatusT", bound=KubeModel)
log = logging.getLogger("kubestill.status")
KOPF_FIELD = "kopf"


@dataclass(frozen=True)
class Coalesced:
    """Written later by a lane: the newest wanted status per object, `concurrency` writes at a time, waiting
    up to `max_yield` seconds while children are being created, retried with backoff up to `max_backoff`."""

    concurrency: int = 4
    max_backoff: float = 30.0
    max_yield: float = 5.0


@dataclass(frozen=True)
class Conditional:
    """Written at once, only if the object still has the resourceVersion the decision was made on."""


@dataclass(frozen=True)
class Immediate:
    """Written at once over whatever the server has."""


StatusPolicy = Coalesced | Conditional | Immediate


def status_patch(old: Mapping[str, Any], new: KubeModel, nulls: bool) -> dict[str, Any]:
    """The merge patch that makes a stored status `old` (wire dict) equal `new`.

    `nulls`: every field of the model, unset ones as null (a Conditional write, made against exactly the
    version it read). Otherwise only what is set (no nulls, no empty maps or lists, as the API server would
    store none of them), so the stored object and the write stay as small as the status: at a 1,000-object
    burst the API server's cost per status write is what p99 feels. Either way, a key `old` has that the patch
    does not set (kopf's own, a field cleared) is nulled.
    """
    if nulls:
        patch: dict[str, Any] = new.model_dump(by_alias=True, mode="json")
    else:
        patch = {k: v for k, v in new.to_wire().items() if v != {} and v != []}
    for gone in set(old) - set(patch):
        patch[gone] = None
    return patch


class StatusWriter(Generic[StatusT]):
    """Writes one kind's Status models under its policy. `api` gives the client (built at kopf's login)."""

    def __init__(self, kind: str, api_version: str, plural: str, status_model: type[StatusT], policy: StatusPolicy,
                 cache: WatchCache, api: Callable[[], KubeClient], yield_to: Callable[[], bool] | None = None) -> None:
        self.kind = kind
        self.api_version = api_version
        self.plural = plural
        self.status_model = status_model
        self.policy = policy
        self.cache = cache
        self.api = api
        # The status a reconcile decided on that the lane has not written yet: what the next reconcile starts from.
        # Kept in its wire form: under a 1,000-object burst all of them wait at once, and a DistillationJobStatus
        # model takes 4.8 KB against 2.0 KB for its wire dict (tracemalloc), which showed in the peak RSS.
        self._desired: dict[Key, dict[str, Any]] = {}
        self.lane: StatusLane | None = None
        if isinstance(policy, Coalesced):
            self.lane = StatusLane(kind, policy.concurrency, policy.max_backoff, yield_to, policy.max_yield)

    def parse(self, body: Mapping[str, Any]) -> StatusT:
        """The Status model of a body (ValidationError when the stored status does not fit the model). kopf's
        own bookkeeping (status.kopf, written by kopf versions with progress storage) is not ours: ignored,
        and nulled by the next write."""
        raw = body.get("status") or {}
        if KOPF_FIELD in raw:
            raw = {k: v for k, v in raw.items() if k != KOPF_FIELD}
        return self.status_model.model_validate(raw)

    def desired(self, key: Key) -> StatusT | None:
        """The status decided for `key` and not written yet (Coalesced policy), else None."""
        wire = self._desired.get(key)
        return None if wire is None else self.status_model.model_validate(wire)

    async def write(self, key: Key, body: Mapping[str, Any], current: StatusT | None,
                    new: StatusT) -> dict[str, Any] | None:
        """Make `new` the status of `key`. `current`: the status `body` holds (None: parse it).

        Returns the body as it now stands (the one written, or `body` when nothing had to be written or the
        write was queued); None when the object is gone (404) or, under Conditional, changed since `body`
        was read (409: the cache then holds the fresh object). Other API errors propagate: the reconcile is
        retried with backoff."""
        if current is None:
            current = self._parse_or_none(body)
        if current == new:
            self._desired.pop(key, None)
            return dict(body)
        if self.lane is not None:
            self._desired[key] = new.to_wire()
            self.lane.submit(key, lambda: self._write_desired(key))
            return dict(body)
        conditional = isinstance(self.policy, Conditional)
        try:
            return await self._patch(key, body, new, conditional)
        except ApiError as err:
            if err.status == 409 and conditional:
                await self._refresh(key)
                return None
            if err.status == 404:
                return None
            raise

    def forget(self, key: Key) -> None:
        """The object is gone: drop what was not written yet."""
        self._desired.pop(key, None)
        if self.lane is not None:
            self.lane.forget(key)

    async def idle(self) -> None:
        """Until every queued write has run (tests and shutdown)."""
        if self.lane is not None:
            await self.lane.idle()

    def _parse_or_none(self, body: Mapping[str, Any]) -> StatusT | None:
        try:
            return self.parse(body)
        except ValidationError:
            return None  # e.g. written by a newer version: never equal, so it is replaced

    async def _patch(self, key: Key, body: Mapping[str, Any], new: StatusT, conditional: bool) -> dict[str, Any]:
        patch: dict[str, Any] = {"status": status_patch(body.get("status") or {}, new, nulls=conditional)}
        meta = body["metadata"]
        if conditional and meta.get("resourceVersion"):
            patch["metadata"] = {"resourceVersion": meta["resourceVersion"]}
        written = await self.api().request("PATCH", self._path(key, "/status"), body=patch,
                                           content_type="application/merge-patch+json")
        # Keep the body as we know it (a kopf index keeps a slim one), with the server's version and status.
        latest = {**body, "metadata": {**meta, **{k: written["metadata"].get(k) for k in (
            "resourceVersion", "generation")}}, "status": written.get("status") or {}}
        self.cache.remember(key, latest)
        return latest

    def _path(self, key: Key, subresource: str = "") -> str:
        return f"/apis/{self.api_version}/namespaces/{quote(key[0])}/{self.plural}/{quote(key[1])}{subresource}"

    async def _refresh(self, key: Key) -> None:
        """After a conflict: the object as the server has it now, into the cache (gone: nothing to do)."""
        try:
            fresh = await self.api().request("GET", self._path(key))
        except ApiError as err:
            if err.status == 404:
                return
            raise
        self.cache.remember(key, fresh)

    async def _write_desired(self, key: Key) -> None:
        """The lane's write: the newest wanted status of `key` over the newest body (404: the object is gone)."""
        wire, body = self._desired.get(key), self.cache.latest(key)
        if wire is None or body is None:
            return
        new = self.status_model.model_validate(wire)
        if self._parse_or_none(body) != new:
            try:
                await self._patch(key, body, new, conditional=False)
            except ApiError as err:
                if err.status != 404:
                    raise
        if self._desired.get(key) is wire:  # not replaced while we wrote
            del self._desired[key]
