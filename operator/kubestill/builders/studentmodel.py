"""The StudentModel a DistillationJob publishes when its gates pass. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubestill.api.names import DJ_LABEL
from kubestill.api.v1alpha1 import API_VERSION
from kubestill.api.v1alpha1.distillationjob import DistillationJobSpec

from .meta import child_metadata, join_uri


def build_student_model(
    dj: Mapping[str, Any],
    spec: DistillationJobSpec,
    metrics: Mapping[str, Any],
    extra_labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """StudentModel `<spec.output.studentModelName>` owned by the job: artifact `<artifactUri>/export`,
    labels from metrics.json, student metrics plus qualityRatio and speedup, the job's serving spec."""
    name = dj["metadata"]["name"]
    copied = {k: float(v) for k, v in (metrics.get("student") or {}).items()
              if isinstance(v, int | float) and not isinstance(v, bool)}
    for key in ("qualityRatio", "speedup"):
        value = metrics.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            copied[key] = float(value)
    model_format = "quantized" if spec.student.quantization is not None else "hf"
    body: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "StudentModel",
        "metadata": child_metadata(spec.output.student_model_name, dj, {DJ_LABEL: name}, extra_labels),
        "spec": {
            "artifactUri": join_uri(spec.output.artifact_uri, "export"),
            "format": model_format,
            "task": spec.task,
            "labels": [str(x) for x in metrics.get("labels") or []],
            "metrics": copied,
            "sourceJob": name,
            "serving": spec.output.serving.to_wire(),
        },
    }
    if spec.storage_secret_ref is not None:  # the artifact is read with the job's S3 Secret
        body["spec"]["storageSecretRef"] = spec.storage_secret_ref.to_wire()
    return body
