"""ConfigMaps of a DistillationJob: the config every stage reads, and the report channel. Pure."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from kubestill.api.names import CONFIG_KEY, DJ_LABEL, REPORT_LABEL, config_map_name, report_map_name

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


def build_config_map(dj: Mapping[str, Any], extra_labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """`<dj>-config` with config.yaml, mounted read-only at /etc/kubestill in every stage Job.

    It is rewritten before each stage starts, so a spec edit reaches the stages that have not started.
    """
    name = dj["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": child_metadata(config_map_name(name), dj, {DJ_LABEL: name}, extra_labels),
        # JSON is YAML too (the trainer reads either), and serialising it costs ~1% of PyYAML's pure-Python
        # emitter, which dominated the operator's CPU when 1,000 jobs arrived at once.
        "data": {CONFIG_KEY: json.dumps(stage_config(dj), indent=1)},
    }


def build_report_map(dj: Mapping[str, Any], extra_labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """`<dj>-report`, created empty; the trainer merge-patches progress.json and metrics.json into it."""
    name = dj["metadata"]["name"]
    metadata = child_metadata(report_map_name(name), dj, {DJ_LABEL: name, REPORT_LABEL: "true"},
                              extra_labels)
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": {}}
