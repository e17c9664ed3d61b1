"""The metadata of a DistillationJob's report ConfigMap, which the trainer creates on its first report. Pure."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from kubestill.api.names import DJ_LABEL, REPORT_LABEL, report_map_name

from .meta import child_metadata


def stage_config(dj: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest the trainer parses: apiVersion, kind, name/namespace and the current spec."""
    meta = dj["metadata"]
    return {
        "apiVersion": dj["apiVersion"],
        "kind": dj["kind"],
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        "spec": dict(dj["spec"]),
    }


def config_text(dj: Mapping[str, Any]) -> str:
    """stage_config as text. JSON is YAML too (the trainer reads either), and serialising it costs ~1% of
    PyYAML's pure-Python emitter, which dominated the operator's CPU when 1,000 jobs arrived at once."""
    return json.dumps(stage_config(dj), separators=(",", ":"))


def report_metadata(dj: Mapping[str, Any], extra_labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """metadata of `<dj>-report`: owned by the DistillationJob (deleted with it) and labelled so the operator
    watches it. The trainer creates the ConfigMap with exactly this when its first merge patch finds none."""
    name = dj["metadata"]["name"]
    return child_metadata(report_map_name(name), dj, {DJ_LABEL: name, REPORT_LABEL: "true"}, extra_labels)
