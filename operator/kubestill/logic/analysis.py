"""Analysis assessment: turn raw Prometheus answers into measurements and one verdict per round.

Pure: the clients fetch, this module judges. The rules, as in Argo Rollouts' `assessMetricStatus` but with an
explicit no-data policy:

- a value inside [min, max] is Successful, outside is Failed;
- no data (empty vector, NaN) and errors (Prometheus unreachable, bad query) are never Successful: they count
  as Inconclusive, or as Failed when the policy says `Fail`;
- a round is Failed if any measurement failed, else Inconclusive if any was not successful, else Successful.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from kubestill.api.v1alpha1.canary_agreement import SequentialStatus
from kubestill.api.v1alpha1.canaryrollout import (
    AlertMatcher,
    AnalysisMetric,
    AnalysisSpec,
    Measurement,
    MeasurementResult,
    NoDataPolicy,
)

from .sequential import Outcome

# The pseudo-metric under which a failed alert query is recorded: without the alerts we cannot tell whether
# the candidate is hurting production, so that round cannot be a success either.
ALERTS_METRIC = "rollbackAlerts"


@dataclass(frozen=True)
class QueryResult:
    """What one PromQL query gave: a number, no data (value None, error None), or an error."""

    value: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class StepVerdict:
    """A step's sequential outcome (logic/canary_sequential.step_verdict), why in one line, and what status
    records."""

    outcome: Outcome
    reason: str
    status: SequentialStatus


@dataclass(frozen=True)
class AnalysisRound:
    """All measurements of one analysis round and their combined verdict."""

    at: datetime
    step: int
    verdict: MeasurementResult
    measurements: tuple[Measurement, ...] = field(default_factory=tuple)
    # The step's sequential test on the judge's counts (analysis.sequential), when it could be evaluated.
    sequential: StepVerdict | None = None

    @property
    def failed(self) -> tuple[Measurement, ...]:
        return tuple(m for m in self.measurements if m.result == MeasurementResult.FAILED)

    def summary(self) -> str:
        """One line naming what was not successful, for status.message and Events."""
        bad = [m for m in self.measurements if m.result != MeasurementResult.SUCCESSFUL]
        if not bad:
            return "all metrics within thresholds"
        return "; ".join(f"{m.metric}: {m.message}" for m in bad)


def render_query(query: str, candidate: str, baseline: str, namespace: str) -> str:
    """Fill in {{candidate}}, {{baseline}} and {{namespace}} (Service names and the rollout's namespace)."""
    return (
        query.replace("{{candidate}}", candidate)
        .replace("{{baseline}}", baseline)
        .replace("{{namespace}}", namespace)
    )


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def assess_metric(
    metric: AnalysisMetric, result: QueryResult, no_data: NoDataPolicy, step: int, at: datetime
) -> Measurement:
    """Judge one query result against the metric's thresholds.

    >>> from datetime import UTC
    >>> m = AnalysisMetric(name="errors", query="q", max=0.01)
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> assess_metric(m, QueryResult(value=0.002), NoDataPolicy.INCONCLUSIVE, 0, t).result
    'Successful'
    >>> assess_metric(m, QueryResult(value=0.5), NoDataPolicy.INCONCLUSIVE, 0, t).message
    '0.5 > max 0.01'
    >>> assess_metric(m, QueryResult(), NoDataPolicy.FAIL, 0, t).result
    'Failed'
    """
    if result.error is not None or result.value is None or math.isnan(result.value):
        why = f"error: {result.error}" if result.error is not None else "no data"
        if result.error is not None and no_data == NoDataPolicy.INCONCLUSIVE:
            outcome = MeasurementResult.ERROR
        elif no_data == NoDataPolicy.FAIL:
            outcome = MeasurementResult.FAILED
        else:
            outcome = MeasurementResult.INCONCLUSIVE
        return Measurement(metric=metric.name, step=step, value=None, result=outcome, at=at, message=why)
    value = result.value
    if metric.min is not None and value < metric.min:
        return Measurement(
            metric=metric.name, step=step, value=value, result=MeasurementResult.FAILED, at=at,
            message=f"{_fmt(value)} < min {_fmt(metric.min)}",
        )
    if metric.max is not None and value > metric.max:
        return Measurement(
            metric=metric.name, step=step, value=value, result=MeasurementResult.FAILED, at=at,
            message=f"{_fmt(value)} > max {_fmt(metric.max)}",
        )
    return Measurement(metric=metric.name, step=step, value=value, result=MeasurementResult.SUCCESSFUL, at=at)


def combine(results: Sequence[MeasurementResult]) -> MeasurementResult:
    """Failed beats everything; anything not successful makes the round Inconclusive; empty is Successful
    (a spec without metrics gates on time and alerts only)."""
    if MeasurementResult.FAILED in results:
        return MeasurementResult.FAILED
    if any(r != MeasurementResult.SUCCESSFUL for r in results):
        return MeasurementResult.INCONCLUSIVE
    return MeasurementResult.SUCCESSFUL


def assess_round(
    analysis: AnalysisSpec,
    results: Mapping[str, QueryResult],
    step: int,
    at: datetime,
    alerts_error: str | None = None,
    extra: Sequence[AnalysisMetric] = (),
) -> AnalysisRound:
    """Judge every metric of `analysis` and the `extra` ones (the operator's own, e.g. the agreement floors of
    logic/agreement_queries; a metric missing from `results` counts as no data) and combine.

    `alerts_error` is set when the rollback-alert query itself failed: recorded as an Error measurement,
    so an unreachable Prometheus can never let a step pass.
    """
    measurements = [
        assess_metric(m, results.get(m.name, QueryResult()), analysis.no_data, step, at)
        for m in (*analysis.metrics, *extra)
    ]
    if alerts_error is not None:
        measurements.append(
            Measurement(
                metric=ALERTS_METRIC, step=step, result=MeasurementResult.ERROR, at=at,
                message=f"error: {alerts_error}",
            )
        )
    verdict = combine([m.result for m in measurements])
    return AnalysisRound(at=at, step=step, verdict=verdict, measurements=tuple(measurements))


def matching_alerts(
    matchers: Sequence[AlertMatcher],
    firing: Sequence[Mapping[str, str]],
    substitutions: Mapping[str, str] | None = None,
) -> list[str]:
    """Names (with the matched labels) of firing alerts that any matcher selects.

    A matcher selects an alert when its name (if set) equals `alertname` and every label it lists has that
    value on the alert. Label values may use {{candidate}}, {{baseline}}, {{namespace}}.

    >>> matching_alerts([AlertMatcher(name="HighErrors")], [{"alertname": "HighErrors", "service": "s"}])
    ['HighErrors{service="s"}']
    >>> matching_alerts([AlertMatcher(labels={"service": "{{candidate}}"})],
    ...                 [{"alertname": "Slow", "service": "student"}], {"{{candidate}}": "student"})
    ['Slow{service="student"}']
    """
    subs = substitutions or {}

    def fill(value: str) -> str:
        for key, replacement in subs.items():
            value = value.replace(key, replacement)
        return value

    found: list[str] = []
    for alert in firing:
        for matcher in matchers:
            if matcher.name is not None and alert.get("alertname") != matcher.name:
                continue
            if all(alert.get(k) == fill(v) for k, v in matcher.labels.items()):
                labels = ",".join(
                    f'{k}="{v}"' for k, v in sorted(alert.items()) if k not in ("alertname", "alertstate", "__name__")
                )
                found.append(f"{alert.get('alertname', '?')}{{{labels}}}")
                break
    return found
