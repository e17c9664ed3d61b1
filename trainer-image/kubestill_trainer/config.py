"""Reading the job config: a whole DistillationJob manifest or a bare spec, YAML or JSON, parsed with the
same `kubestill.api.v1alpha1` models the CRD is generated from. Errors name the field as written."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from kubestill.api.v1alpha1 import DistillationJob, DistillationJobSpec


class ConfigError(Exception):
    """The config cannot be used; the message names the offending field (exit code 2)."""


# Cross-field rules of the API raise "field: message" (see kubestill.api.v1alpha1._base.Rule).
_RULE_FIELD = re.compile(r"^([A-Za-z0-9_.]+): (.*)$", re.DOTALL)


def _field_path(prefix: str, loc: tuple[int | str, ...]) -> str:
    return ".".join(p for p in [prefix, *(str(x) for x in loc)] if p) or "config"


def format_validation_error(error: ValidationError, prefix: str) -> str:
    """One line per problem: `spec.loss.terms.0.temperature: Input should be greater than 0`."""
    lines = []
    for item in error.errors():
        msg = str(item["msg"]).removeprefix("Value error, ")
        loc = tuple(item["loc"])
        if match := _RULE_FIELD.match(msg):
            loc, msg = (*loc, match.group(1)), match.group(2)
        lines.append(f"{_field_path(prefix, loc)}: {msg}")
    return "; ".join(lines)


def parse_spec(document: Any) -> tuple[DistillationJobSpec, dict[str, Any]]:
    """The spec and the metadata ({} for a bare spec) of a parsed YAML/JSON document."""
    if not isinstance(document, dict):
        raise ConfigError("config: expected a mapping (a DistillationJob manifest or its spec)")
    if "spec" in document or "kind" in document:
        kind = document.get("kind")
        if kind != "DistillationJob":
            raise ConfigError(f"kind: expected DistillationJob, got {kind!r}")
        try:
            job = DistillationJob.model_validate(document)
        except ValidationError as e:
            raise ConfigError(format_validation_error(e, "")) from None  # locs start with "spec"
        return job.spec, dict(job.metadata)
    try:
        return DistillationJobSpec.model_validate(document), {}
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, "spec")) from None


def load_config(path: Path) -> tuple[DistillationJobSpec, dict[str, Any]]:
    """Read and parse a config file (YAML is a superset of JSON, but JSON files get JSON's errors)."""
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"--config {path}: {e.strerror}") from None
    try:
        document = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"--config {path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {e}") from None
    return parse_spec(document)
