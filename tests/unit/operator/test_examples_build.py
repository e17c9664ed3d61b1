"""Every example DistillationJob and StudentModel builds valid children (what the operator would apply)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kubestill.api.v1alpha1 import STAGES, DistillationJobSpec
from kubestill.api.v1alpha1.studentmodel import StudentModelSpec
from kubestill.builders.job import build_stage_job
from kubestill.builders.triton import build_triton_config_map, build_triton_deployment, config_hash

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def _docs(kind: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == kind:
                doc["metadata"].update(namespace="ex", uid="uid-ex")
                out.append((path.name, doc))
    return out


@pytest.mark.parametrize(("name", "doc"), _docs("DistillationJob"), ids=lambda v: v if isinstance(v, str) else "")
def test_example_jobs_build(name: str, doc: dict[str, Any]) -> None:
    spec = DistillationJobSpec.model_validate(doc["spec"])
    for stage in STAGES:
        job = build_stage_job(doc, spec, stage.value, default_image="trainer:x")
        pod = job["spec"]["template"]["spec"]
        mounted = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        claims = {u.split("/")[2] for u in (spec.teacher.model_uri, spec.student.base_model_uri, spec.data.uri,
                                             spec.output.artifact_uri) if u and u.startswith("pvc://")}
        assert {f"/mnt/kubestill/pvc/{c}" for c in claims} <= mounted
        gpus = getattr(spec.resources, stage.value).gpus
        limits = pod["containers"][0].get("resources", {}).get("limits", {})
        assert limits.get("nvidia.com/gpu") == (str(gpus) if gpus else None)


@pytest.mark.parametrize(("name", "doc"), _docs("StudentModel"), ids=lambda v: v if isinstance(v, str) else "")
def test_example_students_build(name: str, doc: dict[str, Any]) -> None:
    spec = StudentModelSpec.model_validate(doc["spec"])
    config = build_triton_config_map(doc, spec)
    dep = build_triton_deployment(doc, spec, default_image="triton:x", config_digest=config_hash(config))
    assert dep["spec"]["replicas"] == spec.serving.replicas
    assert f"max_batch_size: {spec.serving.max_batch_size}" in config["data"]["config.pbtxt"]
