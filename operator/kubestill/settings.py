"""Operator configuration, read once from the environment (the Helm chart sets these variables).

Kept out of handlers so tests and the CLI can build a Settings without touching os.environ.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from kubestill.api.v1alpha1._base import parse_duration

DEFAULT_TRAINER_IMAGE = "kubestill-trainer:0.1.0"  # the chart's operator.trainerImage
# kubestill's serving image (serving-image/Dockerfile): tritonserver with the python backend and everything the
# exported model.py imports. A stock Triton image cannot load a student (no kubestill, no torch).
DEFAULT_TRITON_IMAGE = "kubestill-serving:0.1.0"
# The agreement judge of a CanaryRollout (`kubestill judge`) and the serving check of a StudentModel (`kubestill
# servecheck`) run from the operator's own image (the chart passes the operator's image); they need no torch.
DEFAULT_JUDGE_IMAGE = "kubestill-operator:0.1.0"


@dataclass(frozen=True)
class Settings:
    """What the operator needs to know that is not in any custom resource."""

    trainer_image: str = DEFAULT_TRAINER_IMAGE
    triton_image: str = DEFAULT_TRITON_IMAGE
    judge_image: str = DEFAULT_JUDGE_IMAGE
    # The serving image for StudentModels that ask for GPUs (built with onnxruntime-gpu); empty: triton_image.
    triton_gpu_image: str = ""
    # Empty: watch the whole cluster. Otherwise only these namespaces.
    namespaces: tuple[str, ...] = ()
    # kopf peering object name for leader election between replicas; empty: standalone (one replica).
    peering: str = ""
    # Pull policy of the Jobs and Deployments the operator creates (IfNotPresent suits pinned tags).
    image_pull_policy: str = "IfNotPresent"
    # Image pull secrets added to every Pod the operator creates.
    image_pull_secrets: tuple[str, ...] = ()
    # Port of the operator's own Prometheus /metrics (0: off).
    metrics_port: int = 0
    # Extra labels put on every child object (e.g. a team or cost centre).
    extra_labels: Mapping[str, str] = field(default_factory=dict)
    # ServiceAccount of stage Jobs whose spec names none (the chart's trainer account, allowed to write the
    # report ConfigMap); empty: the namespace's default account.
    trainer_service_account: str = ""
    # Security contexts of the stage Jobs' Pods and trainer containers (the chart sets its restricted ones:
    # non-root, read-only root filesystem, no privilege escalation); empty: none.
    trainer_pod_security_context: Mapping[str, Any] = field(default_factory=dict)
    trainer_security_context: Mapping[str, Any] = field(default_factory=dict)
    # How long a deleted CanaryRollout waits for its HTTPRoute to be restored before it is released regardless
    # (with a Warning Event saying what was left): a route that cannot be written never blocks a delete for good.
    route_restore_timeout: timedelta = timedelta(minutes=5)
    # At most this many reconciles run at once across all kinds (see runtime/reconciler.py for the measurement).
    max_concurrent_reconciles: int = 256


def _json_object(name: str, value: str) -> dict[str, Any]:
    if not value.strip():
        return {}
    parsed = json.loads(value)
    if not isinstance(parsed, dict):
        raise ValueError(f"{name}: expected a JSON object, got {value[:80]!r}")
    return parsed


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _labels(value: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in _csv(value):
        key, sep, val = part.partition("=")
        if not sep:
            raise ValueError(f"KUBESTILL_EXTRA_LABELS: {part!r} is not key=value")
        out[key.strip()] = val.strip()
    return out


def _duration(env: Mapping[str, str], name: str, default: str) -> timedelta:
    try:
        return parse_duration(env.get(name) or default)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from KUBESTILL_* variables; unset ones keep their defaults."""
    env = os.environ if env is None else env
    return Settings(
        trainer_image=env.get("KUBESTILL_TRAINER_IMAGE") or DEFAULT_TRAINER_IMAGE,
        triton_image=env.get("KUBESTILL_TRITON_IMAGE") or DEFAULT_TRITON_IMAGE,
        judge_image=env.get("KUBESTILL_JUDGE_IMAGE") or DEFAULT_JUDGE_IMAGE,
        triton_gpu_image=env.get("KUBESTILL_TRITON_GPU_IMAGE", ""),
        namespaces=_csv(env.get("KUBESTILL_NAMESPACES", "")),
        peering=env.get("KUBESTILL_PEERING", ""),
        image_pull_policy=env.get("KUBESTILL_IMAGE_PULL_POLICY") or "IfNotPresent",
        image_pull_secrets=_csv(env.get("KUBESTILL_IMAGE_PULL_SECRETS", "")),
        metrics_port=int(env.get("KUBESTILL_METRICS_PORT") or 0),
        extra_labels=_labels(env.get("KUBESTILL_EXTRA_LABELS", "")),
        trainer_service_account=env.get("KUBESTILL_TRAINER_SERVICE_ACCOUNT", ""),
        trainer_pod_security_context=_json_object("KUBESTILL_TRAINER_POD_SECURITY_CONTEXT",
                                                  env.get("KUBESTILL_TRAINER_POD_SECURITY_CONTEXT", "")),
        trainer_security_context=_json_object("KUBESTILL_TRAINER_SECURITY_CONTEXT",
                                              env.get("KUBESTILL_TRAINER_SECURITY_CONTEXT", "")),
        route_restore_timeout=_duration(env, "KUBESTILL_ROUTE_RESTORE_TIMEOUT", "5m"),
        max_concurrent_reconciles=int(env.get("KUBESTILL_MAX_CONCURRENT_RECONCILES") or 256),
    )
