"""The agreement judge's settings: the contract between the operator, which deploys a judge per CanaryRollout
with these as KUBESTILL_JUDGE_* variables (builders.judge), and `kubestill judge`, which reads them back (or the
same flags). One model on both sides, so a renamed setting cannot silently fall back to a default. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

from .v1alpha1.common import Task

ENV_PREFIX = "KUBESTILL_JUDGE_"
MIRROR_PORT = 8080  # where the gateway mirrors requests to
METRICS_PORT = 9090  # /metrics and /healthz


def env_name(setting: str) -> str:
    """The variable of a setting or flag: env_name("max-rps") == "KUBESTILL_JUDGE_MAX_RPS"."""
    return ENV_PREFIX + setting.replace("-", "_").upper()


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

    def to_env(self) -> dict[str, str]:
        """Every setting as KUBESTILL_JUDGE_<NAME>: what the judge's Deployment sets.

        >>> env = JudgeSettings(Task.EMBEDDING, "http://t:8000", "http://s:8000", max_rps=2.5).to_env()
        >>> env["KUBESTILL_JUDGE_TASK"], env["KUBESTILL_JUDGE_MAX_RPS"]
        ('embedding', '2.5')
        """
        return {env_name(f.name): str(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> JudgeSettings:
        """The settings in `env` (KUBESTILL_JUDGE_*; defaults for those not set). Raises ValueError naming the
        variable when one is missing or not a number where a number is needed."""
        values: dict[str, object] = {}
        for f in fields(cls):
            name = env_name(f.name)
            if name not in env:
                continue
            kind = {"Task": Task, "float": float, "int": int}.get(str(f.type), str)
            try:
                values[f.name] = kind(env[name])
            except ValueError as exc:
                why = f"one of {', '.join(t.value for t in Task)}" if kind is Task else str(exc)
                raise ValueError(f"{name}={env[name]!r}: {why}") from exc
        missing = [env_name(n) for n in ("task", "baseline", "candidate") if n not in values]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        return cls(**values)  # type: ignore[arg-type]
