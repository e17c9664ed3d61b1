"""The watch cache of one kind: what the controller knows of each object without asking the API server.

kopf's in-memory indexes stay the source (kept current from kopf's watches, passed to every event handler).
On top, the cache keeps the body our own last status write returned: newer than the index until our write's
watch event arrives, and the way to recognise that event as our echo. A kind without a body index (the
CanaryRollout, which keeps whole bodies) has its watched bodies kept here too.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from typing import Any

from .keys import Key, first_indexed, newer


class WatchCache:
    """Latest known bodies of one kind, by (namespace, name)."""

    def __init__(self, body_index: str | None, index_names: Collection[str] = ()) -> None:
        # Name of the kopf index holding this kind's bodies (None: bodies come from watch events).
        self.body_index = body_index
        self.index_names = tuple({*index_names, *((body_index,) if body_index else ())})
        self.indexes: dict[str, Any] = {}
        self._bodies: dict[Key, dict[str, Any]] = {}

    def refresh(self, kwargs: Mapping[str, Any]) -> None:
        """kopf passes its indexes by name to every handler (with the body, logger, memo ...): keep this
        kind's ones. They are live objects kopf keeps current, so each is taken once."""
        if len(self.indexes) == len(self.index_names):
            return
        for name in self.index_names:
            if name in kwargs:
                self.indexes[name] = kwargs[name]

    def observe(self, key: Key, body: Mapping[str, Any]) -> None:
        """A watch event's body, for kinds without a body index (kept unless ours is newer)."""
        if self.body_index is None:
            self._bodies[key] = newer(dict(body), self._bodies.get(key)) or dict(body)

    def remember(self, key: Key, body: dict[str, Any]) -> None:
        """A body our own write returned or read (or, for a kind without an index, a decision kept in memory
        at the same resourceVersion): kept unless the one held is newer."""
        self._bodies[key] = newer(body, self._bodies.get(key)) or body

    def latest(self, key: Key) -> dict[str, Any] | None:
        """The newest version we know: the indexed one, or the one our last write returned."""
        if self.body_index is None:
            return self._bodies.get(key)
        return newer(self.one(self.body_index, key), self._bodies.get(key))

    def is_echo(self, key: Key, body: Mapping[str, Any]) -> bool:
        """The watch event of a version we already know (our own status write, or a repeat)."""
        known = self._bodies.get(key)
        return known is not None and known["metadata"].get("resourceVersion") == \
            body["metadata"].get("resourceVersion")

    def one(self, index_name: str, key: Key) -> Any:
        """The first value an index holds for `key`, or None."""
        return first_indexed(self.indexes, index_name, key)

    def all(self, index_name: str, key: Key) -> Collection[Any]:
        """Every value an index holds for `key` (empty when none)."""
        store = self.indexes.get(index_name)
        if store is None or key not in store:
            return ()
        return tuple(store[key])

    def known(self) -> Iterator[tuple[Key, dict[str, Any]]]:
        """The bodies this cache holds itself (a kind without a body index: all of them)."""
        return iter(list(self._bodies.items()))

    @property
    def bodies(self) -> dict[Key, dict[str, Any]]:
        """The bodies this cache holds, for I/O helpers that update them as they write (the canary finalizer)."""
        return self._bodies

    def forget(self, key: Key) -> None:
        self._bodies.pop(key, None)

