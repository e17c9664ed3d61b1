"""The operator's own Prometheus metrics about CanaryRollouts (served on /metrics by the operator).

Per-rollout series carry `namespace` and `name`; they are removed when the rollout is deleted, so a
thousand short-lived rollouts do not leave a thousand stale series behind.
"""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge, Histogram

PHASES = ("Pending", "Progressing", "Paused", "Promoted", "RolledBack", "Failed")

WEIGHT = Gauge(
    "kubestill_canary_weight_percent", "Candidate share of traffic in the HTTPRoute", ["namespace", "name"]
)
STEP = Gauge("kubestill_canary_step", "Current step index (-1: before the first, or shadow)", ["namespace", "name"])
PHASE = Gauge("kubestill_canary_phase", "1 for the rollout's current phase", ["namespace", "name", "phase"])
ANALYSIS_VALUE = Gauge(
    "kubestill_canary_analysis_value", "Latest value of each analysis metric", ["namespace", "name", "metric"]
)
MEASUREMENTS = Counter(
    "kubestill_canary_measurements_total", "Analysis measurements by result", ["namespace", "name", "result"]
)
ROLLBACKS = Counter("kubestill_canary_rollbacks_total", "Rollbacks performed", ["namespace", "name"])
PROMOTIONS = Counter("kubestill_canary_promotions_total", "Promotions performed", ["namespace", "name"])
RECONCILE_SECONDS = Histogram(
    "kubestill_canary_reconcile_duration_seconds",
    "Time of one CanaryRollout evaluation (queries, decision, status and route writes)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


def observe_state(namespace: str, name: str, phase: str, step: int, weight: int) -> None:
    WEIGHT.labels(namespace, name).set(weight)
    STEP.labels(namespace, name).set(step)
    for p in PHASES:
        PHASE.labels(namespace, name, p).set(1 if p == phase else 0)


def observe_measurement(namespace: str, name: str, metric: str, value: float | None, result: str) -> None:
    if value is not None:
        ANALYSIS_VALUE.labels(namespace, name, metric).set(value)
    MEASUREMENTS.labels(namespace, name, result).inc()


def count_transition(namespace: str, name: str, action: str) -> None:
    if action == "Rollback":
        ROLLBACKS.labels(namespace, name).inc()
    elif action == "Promote":
        PROMOTIONS.labels(namespace, name).inc()


def forget(namespace: str, name: str, metrics: list[str]) -> None:
    """Drop the per-rollout series of a deleted rollout."""
    for gauge in (WEIGHT, STEP):
        _remove(gauge, namespace, name)
    for p in PHASES:
        _remove(PHASE, namespace, name, p)
    for metric in metrics:
        _remove(ANALYSIS_VALUE, namespace, name, metric)
    for counter in (ROLLBACKS, PROMOTIONS):
        _remove(counter, namespace, name)
    for result in ("Successful", "Failed", "Inconclusive", "Error"):
        _remove(MEASUREMENTS, namespace, name, result)


def _remove(metric: Gauge | Counter, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)
