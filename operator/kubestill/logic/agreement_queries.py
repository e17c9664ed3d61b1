"""PromQL for a CanaryRollout's agreement analysis, built from the judge's series (kubestill.judge.metrics).

Pure: names and windows in, query text out. The judge of rollout `r` in namespace `ns` is the Service
`<r>-judge` (api.names.judge_name); Prometheus gives the series it scrapes from the judge's Pod the labels
`namespace` and `service` (the Pod's app.kubernetes.io/instance label, which is the judge's name: the
kubernetes-pods scrape job of the Prometheus chart with a labelmap, and dev/prometheus.py, do this; a
ServiceMonitor sets `service` to the Service name, the same value). Those two labels scope every query to this
rollout's judge.

The judge keeps both results' series of a segment at 0 from the segment's first request on (kubestill.judge.
metrics: a series scraped once has no increase). Where an `agree` series is missing all the same (a segment's
first scrape, another judge), every numerator falls back to 0 where the denominator has data (`or vector(0)`,
or per segment `or 0 * <denominator>`), so a student that never agreed reads as rate 0, never as no data.

Two kinds of query:
- rates for the analysis round (`agreement_metrics`): agreement rate, mean cosine, lowest per-segment rate, each
  a ratio of `increase` over the window, so an empty window is 0/0 = NaN, which the analysis reads as no data
  (never a success);
- counts since the step started for the sequential test (`step_count_queries`): `increase` over the step's age.
  `increase` extrapolates to the window's edges, so its counts are real numbers near the true ones; they are
  rounded (`step_counts`). A judge restarted mid-step loses nothing: `increase` adds across counter resets.

Worked example (rollout `sentiment` in `ml`, window 5m):

>>> print(agreement_rate_query(JudgeScope("ml", "sentiment-judge"), 300))
(sum(increase(kubestill_judge_samples_total{namespace="ml",service="sentiment-judge",result="agree"}[300s])) \
or vector(0)) / sum(increase(kubestill_judge_samples_total{namespace="ml",service="sentiment-judge"}[300s]))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kubestill.api.names import judge_name
from kubestill.api.v1alpha1.canary_agreement import AgreementSpec
from kubestill.api.v1alpha1.canaryrollout import AnalysisMetric

from .analysis import QueryResult

SAMPLES = "kubestill_judge_samples_total"
PAIRS = "kubestill_judge_pairs_total"
COSINE = "kubestill_judge_cosine"

# Names of the agreement measurements in status, Events and the operator's /metrics.
RATE_METRIC = "agreement-rate"
MEAN_COSINE_METRIC = "agreement-mean-cosine"
SEGMENT_METRIC = "agreement-min-segment"
AGREEMENT_METRICS = (RATE_METRIC, MEAN_COSINE_METRIC, SEGMENT_METRIC)

# The four cells of the judge's pairs counter: (baseline, candidate), each "ok" or "failed".
CELLS = (("ok", "ok"), ("ok", "failed"), ("failed", "ok"), ("failed", "failed"))


@dataclass(frozen=True)
class JudgeScope:
    """Where a rollout's judge is: its namespace and its Service's name (the `service` label of its series)."""

    namespace: str
    service: str

    @classmethod
    def of(cls, namespace: str, rollout: str) -> JudgeScope:
        return cls(namespace, judge_name(rollout))

    def selector(self, **labels: str) -> str:
        """`{namespace="ns",service="judge",k="v"...}`: label values escaped as PromQL strings."""
        pairs = {"namespace": self.namespace, "service": self.service, **labels}
        return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs.items()) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _range(seconds: float) -> str:
    """A PromQL range of whole seconds, at least 1s."""
    return f"[{max(1, int(seconds))}s]"


def _increase(series: str, scope: JudgeScope, seconds: float, by: str = "", **labels: str) -> str:
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping}(increase({series}{scope.selector(**labels)}{_range(seconds)}))"


def agreement_rate_query(scope: JudgeScope, window_s: float) -> str:
    """Agreeing items / compared items over the last `window_s` seconds, all tasks and segments together."""
    agree = _increase(SAMPLES, scope, window_s, result="agree")
    return f"({agree} or vector(0)) / {_increase(SAMPLES, scope, window_s)}"


def mean_cosine_query(scope: JudgeScope, window_s: float) -> str:
    """Embedding: mean cosine to the baseline's vector over the window (histogram sum / count).

    >>> mean_cosine_query(JudgeScope("ml", "e-judge"), 60).count("[60s]")
    2
    """
    return (f"{_increase(COSINE + '_sum', scope, window_s)} / "
            f"{_increase(COSINE + '_count', scope, window_s)}")


def min_segment_rate_query(scope: JudgeScope, window_s: float) -> str:
    """The lowest per-segment agreement rate over the window (a segment with no comparisons has none; one with
    comparisons but no agreement has 0)."""
    total = _increase(SAMPLES, scope, window_s, "segment")
    return f"min(({_increase(SAMPLES, scope, window_s, 'segment', result='agree')} or 0 * {total}) / {total})"


def agreement_metrics(agreement: AgreementSpec, scope: JudgeScope, window_s: float, *,
                      sequential: bool = False) -> list[AnalysisMetric]:
    """The agreement floors as analysis metrics, judged with the user's (same noData policy, same round):
    agreement-rate >= minRate, and when set agreement-mean-cosine >= minMeanCosine and agreement-min-segment
    >= perSegmentFloor. `window_s`: the look-back, the caller's min(window, step age).

    With `sequential`, the SPRT judges the agreement rate (logic/canary_sequential.py) and agreement-rate is only
    measured (floor 0: shown in status and metrics, and still no data is never a success): a per-round
    `rate >= minRate` check beside it would roll back on one noisy window with no error control, so the
    rollout's false-rollback rate would no longer be the test's alpha (bench/sequential.py: a 200-sample
    window at 0.95 - delta/2 rolls back 20 % of students at the target). The mean-cosine and per-segment floors
    are not what the SPRT tests, so they stay judged per round.

    >>> [m.min for m in agreement_metrics(AgreementSpec(min_rate=0.95), JudgeScope("ns", "j"), 60)]
    [0.95]
    >>> [m.min for m in agreement_metrics(AgreementSpec(min_rate=0.95), JudgeScope("ns", "j"), 60, sequential=True)]
    [0.0]
    """
    floor = 0.0 if sequential else agreement.min_rate
    found = [AnalysisMetric(name=RATE_METRIC, query=agreement_rate_query(scope, window_s), min=floor)]
    if agreement.min_mean_cosine is not None:
        found.append(AnalysisMetric(name=MEAN_COSINE_METRIC, query=mean_cosine_query(scope, window_s),
                                    min=agreement.min_mean_cosine))
    if agreement.per_segment_floor is not None:
        found.append(AnalysisMetric(name=SEGMENT_METRIC, query=min_segment_rate_query(scope, window_s),
                                    min=agreement.per_segment_floor))
    return found


def step_count_queries(scope: JudgeScope, age_s: float) -> dict[str, str]:
    """Queries of the counts since the step started `age_s` seconds ago, by key: `agree`, `samples`, and
    `pairs:<baseline>:<candidate>` for each cell of the pairs counter."""
    queries = {"agree": f"{_increase(SAMPLES, scope, age_s, result='agree')} or vector(0)",
               "samples": _increase(SAMPLES, scope, age_s)}
    for baseline, candidate in CELLS:
        queries[f"pairs:{baseline}:{candidate}"] = _increase(PAIRS, scope, age_s, baseline=baseline,
                                                             candidate=candidate)
    return queries


@dataclass(frozen=True)
class StepCounts:
    """What the judge counted since the step started: agreeing and compared items, and judged requests by
    whether each side answered. Error rates are over all judged requests."""

    agreements: int
    samples: int
    both_ok: int = 0
    candidate_only: int = 0  # the candidate failed, the baseline answered
    baseline_only: int = 0  # the baseline failed, the candidate answered
    both_failed: int = 0

    @property
    def judged(self) -> int:
        return self.both_ok + self.candidate_only + self.baseline_only + self.both_failed

    @property
    def candidate_error_rate(self) -> float | None:
        return (self.candidate_only + self.both_failed) / self.judged if self.judged else None

    @property
    def baseline_error_rate(self) -> float | None:
        return (self.baseline_only + self.both_failed) / self.judged if self.judged else None


def step_counts(results: Mapping[str, QueryResult]) -> StepCounts | str:
    """The counts from the answers to `step_count_queries`, or why there are none (an error, or no data for
    the agreement counts). A pairs cell with no data counts 0 (the judge exports every cell from the start, so
    it is absent only before the first scrape, when `samples` has no data either). Counts are rounded, and
    agreements capped at samples (two `increase`s extrapolate separately).

    >>> step_counts({"agree": QueryResult(1130.6), "samples": QueryResult(1240.2),
    ...              "pairs:ok:failed": QueryResult(3.0)})
    StepCounts(agreements=1131, samples=1240, both_ok=0, candidate_only=3, baseline_only=0, both_failed=0)
    >>> step_counts({"agree": QueryResult(), "samples": QueryResult()})
    'no agreement counts yet'
    """
    errors = [f"{key}: {r.error}" for key, r in results.items() if r.error is not None]
    if errors:
        return "error: " + "; ".join(errors)
    agree, samples = results.get("agree", QueryResult()).value, results.get("samples", QueryResult()).value
    if agree is None or samples is None:
        return "no agreement counts yet"

    def count(key: str) -> int:
        value = results.get(key, QueryResult()).value
        return max(0, round(value)) if value is not None else 0

    n = max(0, round(samples))
    cells = [count(f"pairs:{b}:{c}") for b, c in CELLS]
    return StepCounts(min(max(0, round(agree)), n), n, *cells)
