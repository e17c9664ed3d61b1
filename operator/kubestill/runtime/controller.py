"""`Controller`: one kind's plumbing, the same for every kind.

A controller turns kopf's watch events into reconciles of one object at a time (reconciler.py), knows each
object without API reads (cache.py), remembers the children it just created (expectations.py) and writes
statuses under the kind's policy (status.py). The kind supplies only its `Kind`: how one object is
reconciled, as observe (reads) -> a pure, typed `decide` in logic/ -> apply (writes).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping
from typing import Any, Generic, TypeVar

from kubestill.api.v1alpha1._base import KubeModel
from kubestill.clients.kube import KubeClient

from .cache import WatchCache
from .expectations import DEFAULT_TTL_SECONDS, Expectations, InFlight
from .keys import Key, key_of, owner_key
from .reconciler import Reconciler, ReconcileSlots
from .status import StatusPolicy, StatusWriter

SpecT = TypeVar("SpecT", bound=KubeModel)
StatusT = TypeVar("StatusT", bound=KubeModel)


class Kind(ABC, Generic[SpecT, StatusT]):
    """What a kind brings to its controller: the reconcile of one object, and what to drop when it goes."""

    @abstractmethod
    async def reconcile(self, ctl: Controller[SpecT, StatusT], key: Key, body: dict[str, Any]) -> float | None:
        """Move the object `body` (the newest known version of `key`) forward; seconds until it should be
        looked at again, or None (the next watch event will do). An exception is retried with backoff."""

    def forget(self, key: Key) -> None:
        """The object was deleted: drop whatever the kind keeps about it."""

    def child_seen(self, ctl: Controller[SpecT, StatusT], owner: Key, body: Mapping[str, Any]) -> bool:
        """A child's ADDED event: True when it only meets an expectation and needs no reconcile."""
        return False


class Controller(Generic[SpecT, StatusT]):
    """One kind's watch cache, reconciler, expectations and status writer.

    `api` returns the operator's Kubernetes client (built at kopf's login, after start-up: hence a function);
    `slots` bounds concurrent reconciles operator-wide (one ReconcileSlots shared by every controller).
    """

    def __init__(
        self,
        kind: str,
        spec_model: type[SpecT],
        status_model: type[StatusT],
        handler: Kind[SpecT, StatusT],
        *,
        api: Callable[[], KubeClient],
        api_version: str,
        plural: str,
        policy: StatusPolicy,
        body_index: str | None,
        index_names: Collection[str] = (),
        owner_label: str | None = None,
        slots: ReconcileSlots | None = None,
        expectation_seconds: float = DEFAULT_TTL_SECONDS,
    ) -> None:
        self.kind = kind
        self.spec_model = spec_model
        self.status_model = status_model
        self.handler = handler
        self.api = api
        self.owner_label = owner_label
        self.cache = WatchCache(body_index, index_names)
        self.expectations = Expectations(expectation_seconds)
        self.creating = InFlight()
        self.status: StatusWriter[StatusT] = StatusWriter(
            kind, api_version, plural, status_model, policy, self.cache, api, yield_to=self.creating.busy)
        self.reconciler = Reconciler(kind, self._reconcile, slots)

    # --- watch events -> reconciles ---------------------------------------------------------------------

    async def on_event(self, event_type: str | None, body: Mapping[str, Any], kwargs: Mapping[str, Any]) -> None:
        """A watch event of an object of this kind (None: kopf's initial listing): reconcile it, unless it is
        the echo of our own status write, whose reconcile already acted on everything it shows."""
        self.cache.refresh(kwargs)
        key = key_of(body)
        if event_type == "DELETED":
            self.forget(key)
            return
        if self.cache.is_echo(key, body):
            return
        self.cache.observe(key, body)
        await self.reconciler.run(key)

    async def on_child_event(self, event_type: str | None, body: Mapping[str, Any],
                             kwargs: Mapping[str, Any]) -> None:
        """A child (found by its owner label) changed: reconcile its owner, unless the event only shows a
        child we expected."""
        self.cache.refresh(kwargs)
        owner = owner_key(body, self.owner_label) if self.owner_label else None
        if owner is None or event_type is None:
            return
        if event_type == "ADDED" and self.handler.child_seen(self, owner, body):
            return
        await self.reconciler.run(owner)

    def requeue(self, key: Key, delay: float) -> None:
        """Reconcile `key` again after `delay` seconds."""
        self.reconciler.requeue(key, delay)

    def forget(self, key: Key) -> None:
        """The object is gone: drop everything kept about it."""
        self.handler.forget(key)  # first: it may still read the cache
        self.reconciler.forget(key)
        self.status.forget(key)
        self.expectations.forget(key)
        self.cache.forget(key)

    async def _reconcile(self, key: Key) -> float | None:
        body = self.cache.latest(key)
        if body is None:
            return None
        return await self.handler.reconcile(self, key, body)

    # --- helpers for the kinds ---------------------------------------------------------------------------

    def spec_of(self, body: Mapping[str, Any]) -> SpecT:
        """The Spec model of a body (pydantic.ValidationError when the stored spec does not fit)."""
        return self.spec_model.model_validate(body.get("spec") or {})
