"""One CanaryRollout analysis round against Prometheus (blocking: the handler runs it in a worker thread): the
user's metrics, the agreement floors and the step's sequential test on the judge's counts, then the firing
alerts. The queries and the judgement are pure (logic/analysis, logic/agreement_queries, logic/canary_sequential);
this module only asks Prometheus."""

from __future__ import annotations

from datetime import datetime

from kubestill.api.v1alpha1._base import parse_duration
from kubestill.api.v1alpha1.canaryrollout import AnalysisMetric, CanaryRolloutSpec, CanaryRolloutStatus
from kubestill.clients.prometheus import Prometheus, PrometheusError
from kubestill.logic.agreement_queries import JudgeScope, StepCounts, agreement_metrics, step_count_queries, step_counts
from kubestill.logic.analysis import (
    AnalysisRound,
    QueryResult,
    StepVerdict,
    assess_round,
    matching_alerts,
    render_query,
)
from kubestill.logic.canary_sequential import step_verdict
from kubestill.runtime import Key


def _ask(prom: Prometheus, url: str, query: str, at: datetime) -> QueryResult:
    try:
        return QueryResult(value=prom.query_value(url, query, at))
    except PrometheusError as err:
        return QueryResult(error=str(err))


def _agreement(spec: CanaryRolloutSpec, status: CanaryRolloutStatus, key: Key,
               now: datetime) -> tuple[list[AnalysisMetric], dict[str, str]]:
    """The agreement floors (over min(window, step age)) and the step-count queries (over the step's age)."""
    analysis = spec.analysis
    if analysis is None or analysis.agreement is None or status.step_started_at is None:
        return [], {}
    scope = JudgeScope.of(*key)
    age = (now - status.step_started_at).total_seconds()
    window = min(parse_duration(analysis.agreement.window).total_seconds(), age)
    floors = agreement_metrics(analysis.agreement, scope, window, sequential=analysis.sequential is not None)
    counts = step_count_queries(scope, age) if analysis.sequential is not None else {}
    return floors, counts


def _sequential(spec: CanaryRolloutSpec, counts: StepCounts | str, step: int, now: datetime) -> StepVerdict | None:
    analysis = spec.analysis
    if analysis is None or analysis.agreement is None or analysis.sequential is None or isinstance(counts, str):
        return None  # no counts yet (or Prometheus failed): the agreement floors' no-data rules speak for it
    return step_verdict(analysis.agreement, analysis.sequential, counts, step, now)


def measure(prom: Prometheus, spec: CanaryRolloutSpec, status: CanaryRolloutStatus, key: Key, candidate: str,
            now: datetime) -> tuple[AnalysisRound, list[str]]:
    """One analysis round of rollout `key` at `now` and the rollback alerts firing."""
    analysis = spec.analysis
    assert analysis is not None
    url, namespace = analysis.prometheus_url, key[0]
    # Every query of the round is evaluated at `now`: the sequential test's agreements and samples are two
    # queries, and unpinned a scrape between them counted a disagreement that never happened (an identical
    # candidate read 156 of 157).
    results = {m.name: _ask(prom, url, render_query(m.query, candidate, spec.baseline.name, namespace), now)
               for m in analysis.metrics}
    floors, count_queries = _agreement(spec, status, key, now)
    results.update({m.name: _ask(prom, url, m.query, now) for m in floors})
    counts = step_counts({k: _ask(prom, url, q, now) for k, q in count_queries.items()}) if count_queries else None
    alerts: list[str] = []
    alerts_error = None
    if spec.rollback_alerts:
        try:
            firing = prom.firing_alerts(url)
        except PrometheusError as err:
            alerts_error = str(err)
        else:
            subs = {"{{candidate}}": candidate, "{{baseline}}": spec.baseline.name, "{{namespace}}": namespace}
            alerts = matching_alerts(spec.rollback_alerts, firing, subs)
    round_ = assess_round(analysis, results, status.current_step, now, alerts_error, floors)
    if counts is not None:
        verdict = _sequential(spec, counts, status.current_step, now)
        if verdict is not None:
            round_ = AnalysisRound(round_.at, round_.step, round_.verdict, round_.measurements, verdict)
    return round_, alerts
