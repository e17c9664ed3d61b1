"""The agreement queries the operator builds from the judge's series, and the counts read back from them."""

from __future__ import annotations

import pytest

from kubestill.api.v1alpha1.canary_agreement import AgreementSpec
from kubestill.logic.agreement_queries import (
    JudgeScope,
    StepCounts,
    agreement_metrics,
    agreement_rate_query,
    mean_cosine_query,
    min_segment_rate_query,
    step_count_queries,
    step_counts,
)
from kubestill.logic.analysis import QueryResult

ML = JudgeScope.of("ml", "sentiment")
SEL = 'namespace="ml",service="sentiment-judge"'


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # A student that never agreed has no result="agree" series: 0 agreements, not no data.
        (agreement_rate_query(ML, 300),
         f'(sum(increase(kubestill_judge_samples_total{{{SEL},result="agree"}}[300s])) or vector(0)) / '
         f"sum(increase(kubestill_judge_samples_total{{{SEL}}}[300s]))"),
        # The window is cut to the step's age by the caller; fractions of a second go, never below 1s.
        (agreement_rate_query(ML, 0.4),
         f'(sum(increase(kubestill_judge_samples_total{{{SEL},result="agree"}}[1s])) or vector(0)) / '
         f"sum(increase(kubestill_judge_samples_total{{{SEL}}}[1s]))"),
        (mean_cosine_query(ML, 90.9),
         f"sum(increase(kubestill_judge_cosine_sum{{{SEL}}}[90s])) / "
         f"sum(increase(kubestill_judge_cosine_count{{{SEL}}}[90s]))"),
        # A segment without agreements is 0 (not left out of the min).
        (min_segment_rate_query(ML, 60),
         f'min((sum by (segment)(increase(kubestill_judge_samples_total{{{SEL},result="agree"}}[60s])) or 0 * '
         f"sum by (segment)(increase(kubestill_judge_samples_total{{{SEL}}}[60s]))) / "
         f"sum by (segment)(increase(kubestill_judge_samples_total{{{SEL}}}[60s])))"),
        # A label value cannot close the selector early.
        (agreement_rate_query(JudgeScope("ns", 'x"} or vector(1) #'), 60),
         '(sum(increase(kubestill_judge_samples_total{namespace="ns",service="x\\"} or vector(1) #",'
         'result="agree"}[60s])) or vector(0)) / sum(increase(kubestill_judge_samples_total{namespace="ns",'
         'service="x\\"} or vector(1) #"}[60s]))'),
    ],
    ids=["rate", "rate-sub-second", "mean-cosine", "min-segment", "escaped"],
)
def test_queries(query: str, expected: str) -> None:
    assert query == expected


@pytest.mark.parametrize(
    ("agreement", "names", "floors"),
    [
        ({"minRate": 0.95}, ["agreement-rate"], [0.95]),
        ({"minRate": 0.9, "task": "embedding", "minMeanCosine": 0.97},
         ["agreement-rate", "agreement-mean-cosine"], [0.9, 0.97]),
        ({"minRate": 0.9, "perSegmentFloor": 0.8}, ["agreement-rate", "agreement-min-segment"], [0.9, 0.8]),
    ],
)
def test_agreement_metrics_are_floors(agreement: dict[str, object], names: list[str], floors: list[float]) -> None:
    metrics = agreement_metrics(AgreementSpec.model_validate(agreement), ML, 300)
    assert [m.name for m in metrics] == names
    assert [m.min for m in metrics] == floors
    assert all(m.max is None and "[300s]" in m.query for m in metrics)


def test_with_the_sequential_test_the_rate_is_measured_and_the_sprt_judges_it() -> None:
    agreement = AgreementSpec.model_validate({"minRate": 0.9, "perSegmentFloor": 0.8})
    metrics = agreement_metrics(agreement, ML, 300, sequential=True)
    assert [(m.name, m.min) for m in metrics] == [("agreement-rate", 0.0), ("agreement-min-segment", 0.8)]


def test_step_count_queries_cover_every_pairs_cell() -> None:
    queries = step_count_queries(ML, 1234.5)
    assert sorted(queries) == ["agree", "pairs:failed:failed", "pairs:failed:ok", "pairs:ok:failed", "pairs:ok:ok",
                               "samples"]
    assert queries["pairs:ok:failed"] == (
        f'sum(increase(kubestill_judge_pairs_total{{{SEL},baseline="ok",candidate="failed"}}[1234s]))')
    assert all("[1234s]" in q for q in queries.values())


def _results(agree: float | None, samples: float | None, *cells: float | None) -> dict[str, QueryResult]:
    out = {"agree": QueryResult(agree), "samples": QueryResult(samples)}
    for key, value in zip(("ok:ok", "ok:failed", "failed:ok", "failed:failed"), cells, strict=False):
        out[f"pairs:{key}"] = QueryResult(value)
    return out


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        (_results(1130.6, 1240.2, 1200.0, 30.4, 10.0, 0.0), StepCounts(1131, 1240, 1200, 30, 10, 0)),
        # increase() extrapolates each series on its own: agreements never exceed samples.
        (_results(100.7, 100.2, 100.0), StepCounts(100, 100, 100)),
        (_results(0.0, 0.0, 0.0, 0.0, 0.0, 0.0), StepCounts(0, 0)),
        (_results(None, None), "no agreement counts yet"),
        (_results(5.0, None), "no agreement counts yet"),
        ({"agree": QueryResult(error="timeout"), "samples": QueryResult(3.0)}, "error: agree: timeout"),
    ],
    ids=["worked", "capped", "zero", "no-data", "half", "error"],
)
def test_step_counts(results: dict[str, QueryResult], expected: StepCounts | str) -> None:
    assert step_counts(results) == expected


def test_error_rates_are_over_judged_requests() -> None:
    counts = StepCounts(90, 100, both_ok=94, candidate_only=4, baseline_only=1, both_failed=1)
    assert counts.judged == 100
    assert counts.candidate_error_rate == pytest.approx(0.05)
    assert counts.baseline_error_rate == pytest.approx(0.02)
    assert StepCounts(0, 0).candidate_error_rate is None
