"""How much the judge asks of the baseline: a sampled share of the mirrored requests, and at most `max_rps`
of them per second. Requests over either bound are counted and dropped, never queued: a queue would turn a
traffic burst into a delayed burst on the teacher. Pure: the clock and the random source are passed in.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    """A token bucket (RFC 2697's "committed" bucket, without colours): `rate` tokens per second, at most
    `burst` saved up; take() spends one when there is one. `now` is a monotonic clock in seconds.

    >>> t = [0.0]
    >>> bucket = TokenBucket(rate=2.0, burst=2.0, now=lambda: t[0])
    >>> [bucket.take() for _ in range(3)]
    [True, True, False]
    >>> t[0] = 0.5; bucket.take(), bucket.take()
    (True, False)
    """

    rate: float
    burst: float
    now: Callable[[], float]
    _tokens: float = field(init=False)
    _last: float = field(init=False)

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ValueError(f"max_rps must be > 0, got {self.rate}")
        if self.burst < 1:
            raise ValueError(f"burst must be >= 1, got {self.burst}")
        self._tokens = self.burst
        self._last = self.now()

    def take(self) -> bool:
        current = self.now()
        self._tokens = min(self.burst, self._tokens + (current - self._last) * self.rate)
        self._last = current
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


@dataclass
class Sampler:
    """Keeps `percent` of the requests, each independently (a Bernoulli draw from `rng`)."""

    percent: float
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        if not 0.0 < self.percent <= 100.0:
            raise ValueError(f"sample must be a percentage in (0, 100], got {self.percent}")

    def keep(self) -> bool:
        return self.percent >= 100.0 or self.rng.random() * 100.0 < self.percent


class BoundedLabels:
    """At most `limit` distinct values of one metric label (segments, classes); later new values read as
    `overflow`, so a field carrying user IDs cannot create a million series.

    >>> labels = BoundedLabels(limit=2)
    >>> [labels.get(v) for v in ("eu", "us", "eu", "asia")]
    ['eu', 'us', 'eu', 'other']
    """

    def __init__(self, limit: int, overflow: str = "other") -> None:
        if limit < 1:
            raise ValueError(f"the label limit must be >= 1, got {limit}")
        self.limit, self.overflow = limit, overflow
        self._seen: set[str] = set()

    def get(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) < self.limit:
            self._seen.add(value)
            return value
        return self.overflow
