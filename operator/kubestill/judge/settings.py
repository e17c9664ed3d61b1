"""The judge's settings, from flags or KUBESTILL_JUDGE_* variables (the Deployment sets the latter)."""

from __future__ import annotations

from dataclasses import dataclass

from kubestill.api.v1alpha1.common import Task


@dataclass(frozen=True)
class JudgeSettings:
    """What one judge compares and how hard it may push.

    `baseline` and `candidate` are base URLs (http://host:port); the mirrored request's path and query are
    appended, so a v2 `/v2/models/<name>/infer` or an OpenAI `/v1/chat/completions` goes to the same path on
    both. `sample` (a percentage) in (0, 100], `max_rps` > 0 (baseline requests per second, a burst of one
    second's worth), `timeout` > 0 seconds per side, `max_in_flight` >= 1 comparisons at once. Raises
    ValueError naming the setting (as its flag, with underscores)."""

    task: Task
    baseline: str
    candidate: str
    sample: float = 100.0
    max_rps: float = 10.0
    timeout: float = 10.0
    max_in_flight: int = 64
    segment_header: str = "X-Kubestill-Segment"
    segment_field: str = "segment"
    max_segments: int = 20
    cosine_threshold: float = 0.9

    def __post_init__(self) -> None:
        for name in ("baseline", "candidate"):
            url = getattr(self, name)
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{name} must be an http(s):// URL, got {url!r}")
        checks = {
            "sample": 0.0 < self.sample <= 100.0,
            "max_rps": self.max_rps > 0.0,
            "timeout": self.timeout > 0.0,
            "max_in_flight": self.max_in_flight >= 1,
            "max_segments": self.max_segments >= 1,
            "cosine_threshold": -1.0 <= self.cosine_threshold <= 1.0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"{name} out of range: {getattr(self, name)}")
