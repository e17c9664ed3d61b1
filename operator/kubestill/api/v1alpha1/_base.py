"""Shared building blocks of the v1alpha1 API: the model base, conditions, durations, object metadata.

Every model forbids unknown fields and uses camelCase aliases, so a manifest parsed here reads exactly like
the YAML a user wrote, and a typo is an error naming the field instead of being dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel, to_snake

GROUP = "kubestill.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "kubestill"

# Kubernetes-style durations with a day unit, because canary pauses are measured in days: "90s", "1h30m", "2d".
# Units in canonical order (d, h, m, s, ms), each at most once and with at most 5 digits. The order lets CEL count
# the leading days itself (its duration() is Go's time.ParseDuration, which has no day unit); the digit limit keeps
# every value inside Go's ~292-year Duration, so a bounds rule can never fail to evaluate.
DURATION_PATTERN = r"^([0-9]{1,5}d)?([0-9]{1,5}h)?([0-9]{1,5}m)?([0-9]{1,5}s)?([0-9]{1,5}ms)?$"
DURATION_MAX_LENGTH = 32  # longest match is 31; stated so the API server can bound the CEL cost
_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

# What a storage URI may start with; anything else is rejected before any work is scheduled.
# pkg:// names a model or corpus shipped inside an installed Python package (offline demos and tests);
# s3:// a bucket (with a valid S3 bucket name) and an optional key prefix.
URI_PATTERN = r"^((file|pvc|pkg)://.+|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?)$"
DNS1123_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def parse_duration(value: str) -> timedelta:
    """Parse a duration such as "1h30m" or "2d" (the pattern is enforced by the CRD schema too)."""
    if not value or not re.fullmatch(DURATION_PATTERN, value):
        raise ValueError(
            f"invalid duration {value!r}: use numbers of at most 5 digits with units in the order d, h, m, s, ms, "
            "e.g. '90s', '1h30m', '2d'"
        )
    seconds = sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(value))
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """The shortest duration string for a timedelta, rounded down to whole seconds: 93784s -> "1d2h3m4s"."""
    total = int(delta.total_seconds())
    if total <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, total = divmod(total, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


Duration = Annotated[
    str, Field(pattern=DURATION_PATTERN, min_length=2, max_length=DURATION_MAX_LENGTH, examples=["30s", "6h", "2d"])
]
ArtifactURI = Annotated[str, Field(pattern=URI_PATTERN, max_length=2048)]
ResourceName = Annotated[str, Field(pattern=DNS1123_PATTERN, min_length=1, max_length=63)]


@dataclass(frozen=True)
class Rule:
    """A cross-field rule, stated once and enforced twice: as a CEL x-kubernetes-validations rule by the
    API server, and by the same check in Python when the trainer or the CLI parses a spec.

    `cel` sees the object as `self` (wire names); `check` sees the parsed model. `field` names the offending
    field relative to the object (wire name), so both errors point at the same place.
    """

    cel: str
    message: str
    # None for a transition rule (CEL `oldSelf`): only the API server holds the stored object to compare with.
    check: Callable[[Any], bool] | None
    field: str | None = None
    # The message naming the offending value: a CEL string expression for the API server (messageExpression;
    # `message` stays the fallback should it fail to evaluate) and the same text from the parsed model in Python.
    message_expression: str | None = None
    explain: Callable[[Any], str] | None = None

    def to_crd(self) -> dict[str, str]:
        out = {"rule": self.cel, "message": self.message}
        if self.message_expression:
            out["messageExpression"] = self.message_expression
        if self.field:
            out["fieldPath"] = "." + self.field
        return out


def _cel_milliseconds(expr: str) -> str:
    """CEL for the length in milliseconds of the duration string `expr` (matching DURATION_PATTERN): the days
    counted by hand, the rest by duration() ("2d3h" -> 2 * 86400000 + duration("3h0s")). Integer arithmetic
    because string(int) has no size bound, which puts a rule over the API server's cost budget."""
    return (
        f"({expr}.contains('d') ? int({expr}.split('d')[0]) * 86400000 + "
        f"duration({expr}.split('d')[1] + '0s').getMilliseconds() : duration({expr}).getMilliseconds())"
    )


def duration_rule(field: str, low: timedelta, high: timedelta) -> Rule:
    """A rule keeping the duration `field` (wire name, on this model) within [low, high]; unset passes.

    A value the pattern rejects is left to the pattern's error (the API server evaluates the rules even then),
    so the rule never fails to evaluate."""
    attr = to_snake(field)
    value = f"self.{field}"
    low_ms, high_ms = (int(b / timedelta(milliseconds=1)) for b in (low, high))
    # `[x].all(ms, ...)` names the value once (cel.bind is missing from older API servers).
    within = f"[{_cel_milliseconds(value)}].all(ms, ms >= {low_ms} && ms <= {high_ms})"

    def check(model: Any) -> bool:
        text = getattr(model, attr)
        return text is None or low <= parse_duration(text) <= high

    return Rule(
        cel=f"!has({value}) || !{value}.matches(r'{DURATION_PATTERN}') || {within}",
        message=f"{field} must be between {format_duration(low)} and {format_duration(high)}",
        check=check,
        field=field,
    )


class KubeModel(BaseModel):
    """Base of every API object: camelCase on the wire, unknown fields rejected, `rules` enforced."""

    rules: ClassVar[tuple[Rule, ...]] = ()

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=True,
        validate_default=True,
    )

    @model_validator(mode="after")
    def _enforce_rules(self) -> Self:
        for rule in type(self).rules:
            if rule.check is not None and not rule.check(self):
                where = f"{rule.field}: " if rule.field else ""
                raise ValueError(f"{where}{rule.explain(self) if rule.explain else rule.message}")
        return self

    def to_wire(self) -> dict[str, Any]:
        """The object as Kubernetes stores it: camelCase keys, unset optional fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def nested(model: type[BaseModel], description: str) -> Any:
    """A sub-object that defaults to all of its own defaults. The CRD spells the whole default out (not `{}`),
    so the API server stores the same values the Python side uses and CEL rules can rely on them (the API server
    checks a default against the rules without filling in its nested defaults first)."""
    wire = model().model_dump(by_alias=True, exclude_none=True, mode="json")
    return Field(default_factory=model, description=description, json_schema_extra={"default": wire})


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(KubeModel):
    """A Kubernetes-style condition, as in metav1.Condition."""

    type: str = Field(description="Kind of condition, e.g. Ready, Progressing, Degraded, GatePassed.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(description="One CamelCase word a program can match on, e.g. StageFailed.")
    message: str = Field(default="", description="What happened and what to do about it, for humans.")
    last_transition_time: datetime | None = Field(
        default=None, description="When status last changed (RFC 3339)."
    )
    observed_generation: int | None = Field(
        default=None, description="metadata.generation of the spec this condition was computed from."
    )


class ObjectReference(KubeModel):
    """A reference to another object in the same namespace."""

    name: ResourceName = Field(description="Name of the object.")


class SecretKeyRef(KubeModel):
    """A key inside a Secret in the same namespace."""

    name: ResourceName = Field(description="Name of the Secret.")
    key: str = Field(min_length=1, description="Key inside the Secret whose value is used.")


class RootModel(KubeModel):
    """Fields every custom resource has; subclasses add typed spec and status."""

    api_version: str = Field(default=API_VERSION, description="Always kubestill.io/v1alpha1.")
    kind: str = Field(description="The kind of the object.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Standard object metadata.")
