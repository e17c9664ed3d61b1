"""The judge's Prometheus series: what it judged and how, per task and segment, and apart from it everything it
could not compare. These counters are the inputs of the canary's agreement analysis and sequential tests:
`agreement_sprt(agree, agree + disagree, ...)` reads kubestill_judge_samples_total, and `error_odds_sprt` the
discordant kubestill_judge_pairs_total (baseline="ok", candidate="failed" against the reverse).

Each judge has its own registry (one judge process per rollout; tests start several in one process).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from kubestill.api.v1alpha1.common import Task

from .compare import Sample
from .limits import BoundedLabels

# Scores per task: name, help, buckets. Cosine buckets are dense near 1, where a good student's answers are.
_SCORES: dict[Task, tuple[str, str, tuple[float, ...]]] = {
    Task.EMBEDDING: ("kubestill_judge_cosine", "Cosine of the candidate's embedding to the baseline's",
                     (0.0, 0.5, 0.7, 0.8, 0.85, 0.9, 0.925, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999, 1.0)),
    Task.RERANKING: ("kubestill_judge_rank_correlation", "Kendall's tau-b between the two sides' passage scores",
                     (-0.5, 0.0, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)),
    Task.GENERATION: ("kubestill_judge_rouge_l", "ROUGE-L F1 of the candidate's text to the baseline's",
                      (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)),
}

SIDES = ("baseline", "candidate")


class JudgeMetrics:
    """The series of one judge, registered in `registry`."""

    def __init__(self, task: Task, registry: CollectorRegistry, max_classes: int = 100) -> None:
        self.task = task
        self.registry = registry
        self._classes = BoundedLabels(max_classes)
        self.requests = Counter(
            "kubestill_judge_requests", "Mirrored requests received, by what the judge did with them: judged, "
            "unsampled, rate_limited (over --max-rps), busy (over --max-in-flight), ignored (not a POST)",
            ["outcome"], registry=registry)
        self.samples = Counter(
            "kubestill_judge_samples", "Items compared (a row, a ranking, a choice), by agreement",
            ["task", "segment", "result"], registry=registry)
        self.class_samples = Counter(
            "kubestill_judge_class_samples", "Classification rows compared, by the baseline's class",
            ["segment", "label", "result"], registry=registry)
        self.incomparable = Counter(
            "kubestill_judge_incomparable", "Pairs of answers that could not be compared, by reason",
            ["task", "segment", "reason"], registry=registry)
        self.failures = Counter(
            "kubestill_judge_failures", "Requests a side did not answer usefully: timeout, connection, status "
            "(not 2xx), unreadable (neither JSON nor an event stream of JSON)", ["side", "reason"], registry=registry)
        self.pairs = Counter(
            "kubestill_judge_pairs", "Judged requests by whether each side answered (ok) or failed",
            ["baseline", "candidate"], registry=registry)
        self.latency = Histogram(
            "kubestill_judge_backend_latency_seconds", "Time to each side's answer", ["side"], registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
        score = _SCORES.get(task)
        self.score = (Histogram(score[0], score[1], ["task", "segment"], buckets=score[2], registry=registry)
                      if score else None)
        for outcome in ("judged", "unsampled", "rate_limited", "busy", "ignored"):
            self.requests.labels(outcome)  # present at 0 from the start: no data is not zero
        for baseline in ("ok", "failed"):
            for candidate in ("ok", "failed"):
                self.pairs.labels(baseline, candidate)
        self._segments: set[str] = set()
        self._at_zero("")  # requests that carry no segment: most traffic

    def _at_zero(self, segment: str) -> None:
        """Both results' series (and the score histogram's) of `segment`, present at 0 before its first sample.
        The canary's queries take `increase` of these series, and a series Prometheus has scraped only once has
        no increase at all: created on its first sample, the agree series of a student that disagrees at first
        (or the disagree series of one that agrees at first) would hide its first counts from the sequential test
        (seen on the real node: an SPRT read 0 agreements in 28 samples where the judge had counted 9)."""
        if segment in self._segments:
            return
        self._segments.add(segment)
        for result in ("agree", "disagree"):
            self.samples.labels(self.task.value, segment, result)
        if self.score is not None:
            self.score.labels(self.task.value, segment)

    def observe(self, segment: str, samples: list[Sample]) -> None:
        # A segment first seen here starts at 0 now: what it counts before Prometheus' next scrape of it is still
        # missed by increase (at most one scrape interval of that segment's samples).
        self._at_zero(segment)
        for sample in samples:
            result = "agree" if sample.agree else "disagree"
            self.samples.labels(self.task.value, segment, result).inc()
            if sample.label is not None:
                self.class_samples.labels(segment, self._classes.get(sample.label), result).inc()
            if self.score is not None and sample.score is not None:
                self.score.labels(self.task.value, segment).observe(sample.score)
