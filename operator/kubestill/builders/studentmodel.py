"""The StudentModel a DistillationJob publishes when its gates pass. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubestill.api import gates
from kubestill.api.names import DJ_LABEL
from kubestill.api.report import EvaluationReport, load_report
from kubestill.api.v1alpha1 import API_VERSION
from kubestill.api.v1alpha1.distillationjob import DistillationJobSpec
from kubestill.api.v1alpha1.studentmodel import ModelFormat, StudentModelSpec

from .meta import child_metadata, join_uri


def build_student_model(
    dj: Mapping[str, Any],
    spec: DistillationJobSpec,
    metrics: EvaluationReport | Mapping[str, Any],
    extra_labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """StudentModel `<spec.output.studentModelName>` owned by the job: artifact `<artifactUri>/export`,
    labels from metrics.json, the student's measured metrics plus qualityRatio, speedup and its in-process latency
    (latencyP50Ms, latencyP95Ms, latencyP99Ms), the job's serving spec and serving check. `metrics`: the report, or
    metrics.json parsed as JSON (raises kubestill.api.report.ReportError when it is not a report; the gates, which
    read it first, have failed the job on that already)."""
    name = dj["metadata"]["name"]
    report = metrics if isinstance(metrics, EvaluationReport) else load_report(metrics)
    copied = {k: v for k, v in report.student.items() if v is not None}
    ratio = gates.quality_ratio(report.student.get(report.primary_metric), report.teacher.get(report.primary_metric))
    for key, value in (("qualityRatio", ratio), ("speedup", report.speedup)):
        if value is not None:
            copied[key] = value
    # The evaluate stage's in-process latency, so the serving check shows it beside the served one
    # (logic.served.IN_PROCESS_KEYS reads these names).
    latency = report.latency.student
    if latency is not None:
        copied.update({"latencyP50Ms": latency.p50, "latencyP95Ms": latency.p95, "latencyP99Ms": latency.p99})
    student = StudentModelSpec(
        artifact_uri=join_uri(spec.output.artifact_uri, "export"),
        format=ModelFormat.QUANTIZED if spec.student.quantization is not None else ModelFormat.HF,
        task=spec.task,
        labels=list(report.labels),
        metrics=copied,
        source_job=name,
        serving=spec.output.serving,
        serving_check=spec.output.serving_check,
        storage_secret_ref=spec.storage_secret_ref,  # the artifact is read with the job's S3 Secret
    )
    return {
        "apiVersion": API_VERSION,
        "kind": "StudentModel",
        "metadata": child_metadata(spec.output.student_model_name, dj, {DJ_LABEL: name}, extra_labels),
        "spec": student.to_wire(),
    }
