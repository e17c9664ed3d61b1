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
from pydantic.alias_generators import to_camel

GROUP = "kubestill.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "kubestill"

# Kubernetes-style durations with a day unit, because canary pauses are measured in days: "90s", "1h30m", "2d".
DURATION_PATTERN = r"^([0-9]+(ms|s|m|h|d))+$"
_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

# What a storage URI may start with; anything else is rejected before any work is scheduled.
# pkg:// names a model or corpus shipped inside an installed Python package (offline demos and tests);
# s3:// a bucket (with a valid S3 bucket name) and an optional key prefix.
URI_PATTERN = r"^((file|pvc|pkg)://.+|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?)$"
DNS1123_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def parse_duration(value: str) -> timedelta:
    """Parse a duration such as "1h30m" or "2d" (the pattern is enforced by the CRD schema too)."""
    if not re.fullmatch(DURATION_PATTERN, value):
        raise ValueError(f"invalid duration {value!r}: use numbers with units ms, s, m, h, d, e.g. '90s', '2d'")
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


Duration = Annotated[str, Field(pattern=DURATION_PATTERN, examples=["30s", "6h", "2d"])]
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
    check: Callable[[Any], bool]
    field: str | None = None

    def to_crd(self) -> dict[str, str]:
        out = {"rule": self.cel, "message": self.message}
        if self.field:
            out["fieldPath"] = "." + self.field
        return out


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
            if not rule.check(self):
                where = f"{rule.field}: " if rule.field else ""
                raise ValueError(f"{where}{rule.message}")
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
