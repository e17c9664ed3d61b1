"""Expectations for created children, as Kubernetes' own controllers keep them (ControllerExpectations).

Under a burst a created child's watch event can trail the next reconcile of its owner; without a note of what
was just created, that reconcile would POST the child again (a 409, but API-server work). A child expected and
not seen is treated as pending until its deadline, after which an unseen child is created again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Container

from .keys import Key

DEFAULT_TTL_SECONDS = 30.0


class Expectations:
    """Children created but not yet observed: owner key -> child name -> deadline (clock seconds)."""

    def __init__(self, ttl: float = DEFAULT_TTL_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._expected: dict[Key, dict[str, float]] = {}

    def expect(self, key: Key, child: str) -> None:
        """`child` of `key` was just created: until seen, or `ttl` seconds, it counts as pending."""
        self._expected.setdefault(key, {})[child] = self.clock() + self.ttl

    def observed(self, key: Key, child: str) -> bool:
        """The watch showed `child` of `key`: True when it was expected (the expectation is met and dropped)."""
        pending = self._expected.get(key)
        if pending is None or child not in pending:
            return False
        del pending[child]
        if not pending:
            del self._expected[key]
        return True

    def pending(self, key: Key, seen: Container[str]) -> frozenset[str]:
        """Children of `key` still expected: drops those in `seen` and those past their deadline."""
        now = self.clock()
        live = {child: t for child, t in self._expected.get(key, {}).items() if child not in seen and t > now}
        if live:
            self._expected[key] = live
        else:
            self._expected.pop(key, None)
        return frozenset(live)

    def forget(self, key: Key) -> None:
        self._expected.pop(key, None)


class InFlight:
    """How many child creations are in flight right now (status writes yield to them, see status.py)."""

    def __init__(self) -> None:
        self.count = 0

    def busy(self) -> bool:
        return self.count > 0

    def __enter__(self) -> InFlight:
        self.count += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.count -= 1
