"""A CanaryRollout's live agreement analysis: what the judge measures and bounds (`analysis.agreement`), the
sequential test on its counts (`analysis.sequential`), and the test's state in status (`status.sequential`).

Agreement is per compared item, as the judge counts it (kubestill.judge.metrics): classification and reranking
top-1 equal, embedding cosine >= `cosineThreshold`, generation exact match. The sequential test is Wald's SPRT
(kubestill.logic.sequential): H0 agreement >= minRate against H1 agreement <= minRate - delta, false-rollback rate
alpha, missed-regression rate beta.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import Field

from ._base import Duration, KubeModel, Rule, duration_rule
from .common import Task

# The window the agreement rate is measured over: at least a minute (a few scrapes of the judge, so a rate
# exists), at most a day (a longer look back averages over traffic the step never saw).
MIN_AGREEMENT_WINDOW = timedelta(minutes=1)
MAX_AGREEMENT_WINDOW = timedelta(days=1)
# Same bounds as a step's pause (canaryrollout.MIN_PAUSE / MAX_PAUSE): minPause is a part of one.
MIN_SEQUENTIAL_PAUSE = timedelta(seconds=1)
MAX_SEQUENTIAL_PAUSE = timedelta(days=30)


class AgreementSpec(KubeModel):
    """Compare the candidate's answers with the baseline's on a sampled share of live requests.

    The operator deploys a judge (`<rollout>-judge`) that the route mirrors `samplePercent` % of requests to,
    during the shadow step and every weighted step; the judge asks both sides and Prometheus scrapes its counts.
    """

    rules = (
        duration_rule("window", MIN_AGREEMENT_WINDOW, MAX_AGREEMENT_WINDOW),
        Rule(
            cel="!has(self.minMeanCosine) || !has(self.task) || self.task == 'embedding'",
            message="minMeanCosine applies to the embedding task only",
            check=lambda a: a.min_mean_cosine is None or a.task is None or a.task == Task.EMBEDDING,
            field="minMeanCosine",
        ),
    )

    min_rate: float = Field(
        ge=0.0, le=1.0, description="Agreement rate floor, 0..1: a lower rate over the window fails the round."
    )
    task: Task | None = Field(
        default=None, description="What the judge compares (how it reads the answers); default: the candidate "
        "StudentModel's task (required when the candidate is a Service)."
    )
    cosine_threshold: float = Field(
        default=0.9, ge=-1.0, le=1.0, description="Embedding: an item agrees when its cosine to the baseline's "
        "vector is at least this."
    )
    min_mean_cosine: float | None = Field(
        default=None, ge=-1.0, le=1.0, description="Embedding: floor of the mean cosine over the window."
    )
    per_segment_floor: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Floor of the lowest per-segment agreement rate (segments from "
        "the X-Kubestill-Segment header or a `segment` field of the request body)."
    )
    sample_percent: int = Field(
        default=10, ge=1, le=100, description="Share of requests mirrored to the judge, in percent."
    )
    max_baseline_rps: float = Field(
        default=10.0, gt=0.0, le=10000.0, description="Most requests per second the judge sends the baseline "
        "(the teacher); mirrored requests above it are counted as rate_limited, never compared."
    )
    window: Duration = Field(
        default="5m", description="Look-back of the agreement rate, 1m to 1d; never further back than the "
        "current step's start."
    )


class SequentialSpec(KubeModel):
    """Wald's sequential probability ratio test per step on the agreement counts since the step started, and a
    sequential test of the candidate's error rate against the baseline's on the same judged requests."""

    rules = (
        duration_rule("minPause", MIN_SEQUENTIAL_PAUSE, MAX_SEQUENTIAL_PAUSE),
        Rule(
            cel="self.alpha + self.beta < 1.0",
            message="alpha + beta must be below 1",
            check=lambda s: s.alpha + s.beta < 1.0,
            field="beta",
        ),
    )

    delta: float = Field(
        default=0.02, gt=0.0, lt=1.0, description="Tolerated drop: H1 is agreement <= minRate - delta."
    )
    alpha: float = Field(
        default=0.05, gt=0.0, le=0.5, description="False-rollback rate: rolling back a student that meets minRate."
    )
    beta: float = Field(
        default=0.05, gt=0.0, le=0.5, description="Missed-regression rate: accepting a student at or below "
        "minRate - delta."
    )
    error_odds_ratio: float = Field(
        default=3.0, gt=1.0, le=1000.0, description="The candidate's odds of failing a request, relative to the "
        "baseline's, that the error test must catch (H1); H0 is 'no worse than the baseline'."
    )
    min_pause: Duration | None = Field(
        default=None, description="A step may not end early before this (1s to 30d); empty: as soon as the "
        "test accepts."
    )


class SequentialStatus(KubeModel):
    """The current step's sequential test, as last evaluated."""

    step: int = Field(description="Step index (-1: shadow).")
    outcome: str = Field(description="Continue, Accept or Reject.")
    agreements: int = Field(ge=0, description="Agreeing items since the step started.")
    samples: int = Field(ge=0, description="Compared items since the step started.")
    candidate_error_rate: float | None = Field(
        default=None, description="Share of judged requests the candidate failed; empty before the first."
    )
    baseline_error_rate: float | None = Field(
        default=None, description="Share of judged requests the baseline failed; empty before the first."
    )
    at: datetime = Field(description="When it was evaluated.")
    reason: str = Field(default="", description="The decision in one line, with its counts and error rates.")
