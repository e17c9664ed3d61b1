"""The serving check's contract: what the operator's Job asks `kubestill servecheck` to do (ServeCheckRequest,
one JSON environment variable) and what it answers in its termination message (ServeCheckResult, one JSON
object). Both sides import these models, so a renamed field cannot break the check silently. Pure.

The termination message is the kubelet's channel for it: at most 4096 bytes per container (Kubernetes'
`terminationMessagePath` limit), so the result carries figures and one short message, never the texts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from .v1alpha1.common import Task

REQUEST_ENV = "KUBESTILL_SERVECHECK_REQUEST"
TERMINATION_LIMIT = 4096
MESSAGE_LIMIT = 1024


class _Contract(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class ServeCheckRequest(_Contract):
    """One check: `concurrency` workers send one row per request to `model_name` at `url` (Triton's HTTP/REST
    base URL) for `warmup_seconds` unmeasured, then `duration_seconds` measured."""

    url: str = Field(description="Triton HTTP base URL, e.g. http://sentiment-triton.ml.svc:8000.")
    model_name: str = Field(description="Model name in Triton's repository.")
    task: Task = Field(description="Decides the request's input tensors (kubestill.api.triton.TENSORS).")
    concurrency: int = Field(ge=1, description="Requests in flight at once.")
    duration_seconds: float = Field(gt=0, description="Measured load, s.")
    warmup_seconds: float = Field(ge=0, description="Unmeasured load before it, s.")
    texts: list[str] = Field(default_factory=list, description="Input texts; empty: the built-in sample.")
    ready_timeout_seconds: float = Field(default=60.0, gt=0, description="How long to wait for the model to be "
                                         "ready (the Service may route to a Pod still starting), s.")

    def to_env(self) -> dict[str, str]:
        return {REQUEST_ENV: self.model_dump_json(by_alias=True)}

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ServeCheckRequest:
        """Raises ValueError naming REQUEST_ENV when it is missing or not a request."""
        text = env.get(REQUEST_ENV)
        if not text:
            raise ValueError(f"{REQUEST_ENV} is not set (the operator's serving-check Job sets it)")
        try:
            return cls.model_validate_json(text)
        except ValidationError as err:
            raise ValueError(f"{REQUEST_ENV}: {err}".replace("\n", " ")) from None


class ServeCheckResult(_Contract):
    """What the check measured (ok), or why it could not (not ok, `message`). Latencies in ms of round trip as
    the client sees it; percentiles by numpy's linear interpolation (as perf_analyzer reports them)."""

    ok: bool = Field(description="The load ran and at least one request was answered.")
    message: str = Field(default="", description="Why not ok, or a note (e.g. some requests failed).")
    p50_ms: float = Field(default=0.0, ge=0, description="Median latency, ms.")
    p95_ms: float = Field(default=0.0, ge=0, description="95th percentile latency, ms.")
    p99_ms: float = Field(default=0.0, ge=0, description="99th percentile latency, ms.")
    throughput_rps: float = Field(default=0.0, ge=0, description="Answered requests per second.")
    concurrency: int = Field(default=1, ge=1, description="Requests in flight at once.")
    requests: int = Field(default=0, ge=0, description="Answered requests (measured load).")
    errors: int = Field(default=0, ge=0, description="Failed requests (measured load).")
    wall_seconds: float = Field(default=0.0, ge=0, description="Wall time of the measured load, s.")

    def to_text(self) -> str:
        """One JSON object, under the kubelet's 4 KiB limit (the message is cut to MESSAGE_LIMIT characters).

        >>> len(ServeCheckResult(ok=False, message="x" * 9000).to_text()) < TERMINATION_LIMIT
        True
        """
        return self.model_copy(update={"message": self.message[:MESSAGE_LIMIT]}).model_dump_json(by_alias=True)


def parse_serve_check_result(text: str) -> ServeCheckResult | None:
    """The result in a termination message (the JSON object may follow log lines, when the kubelet fell back
    to the log tail); None when there is none.

    >>> parse_serve_check_result('starting\\n{"ok": true, "p95Ms": 4.5, "requests": 10}').p95_ms
    4.5
    >>> parse_serve_check_result("Traceback ...") is None
    True
    """
    start = text.find("{")
    while start != -1:
        try:
            return ServeCheckResult.model_validate(json.loads(text[start:]))
        except (ValueError, ValidationError):
            start = text.find("{", start + 1)
    return None
