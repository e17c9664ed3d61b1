"""Analysis assessment: thresholds, the no-data policy (never success), round verdicts, alert matching."""

from __future__ import annotations

import math

import pytest

from kubestill.api.v1alpha1.canaryrollout import AlertMatcher, AnalysisMetric, AnalysisSpec, NoDataPolicy
from kubestill.logic.analysis import (
    ALERTS_METRIC,
    QueryResult,
    assess_metric,
    assess_round,
    matching_alerts,
    render_query,
)

from .helpers import T0

BOUNDED = AnalysisMetric(name="m", query="q", min=0.5, max=2.0)
MAX_ONLY = AnalysisMetric(name="m", query="q", max=0.01)
MIN_ONLY = AnalysisMetric(name="m", query="q", min=0.9)


@pytest.mark.parametrize(
    ("metric", "result", "policy", "expected"),
    [
        (BOUNDED, QueryResult(1.0), NoDataPolicy.INCONCLUSIVE, "Successful"),
        (BOUNDED, QueryResult(0.5), NoDataPolicy.INCONCLUSIVE, "Successful"),  # bounds are inclusive
        (BOUNDED, QueryResult(2.0), NoDataPolicy.INCONCLUSIVE, "Successful"),
        (BOUNDED, QueryResult(0.49), NoDataPolicy.INCONCLUSIVE, "Failed"),
        (BOUNDED, QueryResult(2.01), NoDataPolicy.INCONCLUSIVE, "Failed"),
        (MAX_ONLY, QueryResult(-5.0), NoDataPolicy.INCONCLUSIVE, "Successful"),
        (MIN_ONLY, QueryResult(1e9), NoDataPolicy.INCONCLUSIVE, "Successful"),
        (MIN_ONLY, QueryResult(0.2), NoDataPolicy.FAIL, "Failed"),
        # No data is never a success: inconclusive or failed, as the policy says.
        (MAX_ONLY, QueryResult(None), NoDataPolicy.INCONCLUSIVE, "Inconclusive"),
        (MAX_ONLY, QueryResult(None), NoDataPolicy.FAIL, "Failed"),
        (MAX_ONLY, QueryResult(math.nan), NoDataPolicy.INCONCLUSIVE, "Inconclusive"),
        (MAX_ONLY, QueryResult(math.nan), NoDataPolicy.FAIL, "Failed"),
        # Errors (Prometheus unreachable) likewise.
        (MAX_ONLY, QueryResult(error="connection refused"), NoDataPolicy.INCONCLUSIVE, "Error"),
        (MAX_ONLY, QueryResult(error="connection refused"), NoDataPolicy.FAIL, "Failed"),
    ],
)
def test_assess_metric(metric: AnalysisMetric, result: QueryResult, policy: NoDataPolicy, expected: str) -> None:
    assert assess_metric(metric, result, policy, 0, T0).result == expected


def _analysis(policy: str = "Inconclusive") -> AnalysisSpec:
    return AnalysisSpec.model_validate(
        {
            "prometheusUrl": "http://p:9090",
            "noData": policy,
            "metrics": [{"name": "errors", "query": "e", "max": 0.01}, {"name": "p99", "query": "l", "max": 0.5}],
        }
    )


@pytest.mark.parametrize(
    ("results", "alerts_error", "verdict"),
    [
        ({"errors": QueryResult(0.0), "p99": QueryResult(0.1)}, None, "Successful"),
        ({"errors": QueryResult(0.2), "p99": QueryResult(0.1)}, None, "Failed"),
        ({"errors": QueryResult(0.2), "p99": QueryResult(None)}, None, "Failed"),  # failed beats inconclusive
        ({"errors": QueryResult(0.0), "p99": QueryResult(None)}, None, "Inconclusive"),
        ({"errors": QueryResult(0.0)}, None, "Inconclusive"),  # a metric with no result at all is no data
        ({"errors": QueryResult(0.0), "p99": QueryResult(0.1)}, "refused", "Inconclusive"),  # alerts unknown
        ({"errors": QueryResult(error="x"), "p99": QueryResult(error="x")}, "x", "Inconclusive"),
    ],
)
def test_assess_round(results: dict[str, QueryResult], alerts_error: str | None, verdict: str) -> None:
    round_ = assess_round(_analysis(), results, 2, T0, alerts_error)
    assert round_.verdict == verdict
    assert all(m.step == 2 and m.at == T0 for m in round_.measurements)
    assert (ALERTS_METRIC in {m.metric for m in round_.measurements}) == (alerts_error is not None)


def test_round_without_metrics_gates_on_time_and_alerts_only() -> None:
    empty = AnalysisSpec.model_validate({"prometheusUrl": "http://p:9090"})
    assert assess_round(empty, {}, 0, T0).verdict == "Successful"
    assert assess_round(empty, {}, 0, T0, alerts_error="timeout").verdict == "Inconclusive"


def test_no_data_fail_policy_fails_the_round() -> None:
    assert assess_round(_analysis("Fail"), {"errors": QueryResult(0.0)}, 0, T0).verdict == "Failed"


def test_summary_names_what_was_not_successful() -> None:
    round_ = assess_round(_analysis(), {"errors": QueryResult(0.5), "p99": QueryResult(0.1)}, 0, T0)
    assert round_.summary() == "errors: 0.5 > max 0.01"


def test_render_query() -> None:
    q = 'rate(x{service="{{candidate}}",ns="{{namespace}}"}[1m]) / rate(x{service="{{baseline}}"}[1m])'
    assert render_query(q, "student", "teacher", "prod") == (
        'rate(x{service="student",ns="prod"}[1m]) / rate(x{service="teacher"}[1m])'
    )


FIRING = [
    {"alertname": "HighErrors", "alertstate": "firing", "service": "student", "severity": "page"},
    {"alertname": "Slow", "alertstate": "firing", "service": "teacher"},
]


@pytest.mark.parametrize(
    ("matchers", "expected"),
    [
        ([{"name": "HighErrors"}], ['HighErrors{service="student",severity="page"}']),
        ([{"name": "Nope"}], []),
        ([{"labels": {"service": "{{candidate}}"}}], ['HighErrors{service="student",severity="page"}']),
        ([{"name": "Slow", "labels": {"service": "{{candidate}}"}}], []),
        ([{"labels": {"severity": "page"}}, {"name": "Slow"}], ['HighErrors{service="student",severity="page"}',
                                                               'Slow{service="teacher"}']),
        ([], []),
    ],
)
def test_matching_alerts(matchers: list[dict[str, object]], expected: list[str]) -> None:
    parsed = [AlertMatcher.model_validate(m) for m in matchers]
    assert matching_alerts(parsed, FIRING, {"{{candidate}}": "student"}) == expected
