"""The error rates the SPRTs promise, measured by simulation with a fixed seed (a few seconds).

Streams of Bernoulli samples are looked at every LOOK samples, as the operator would at each reconcile, and the
decision (SprtDesign.outcome, which agreement_sprt and error_odds_sprt return; their mapping of target, delta and
odds ratios onto p0 and p1 is pinned by the worked examples in test_sequential.py) is taken on the cumulative
counts until it is not Continue. Wald's bounds (alpha' <=
alpha / (1 - beta), beta' <= beta / (1 - alpha)) hold for any such thinning of the looks; the tests allow three
standard errors of sampling on top of alpha and beta. A naive rule run through the same harness (a one-sided
z-test at level alpha at every look) is shown to exceed alpha, so the harness can see a broken test.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pytest

from kubestill.logic.sequential import Outcome, SprtDesign, agreement_sprt, error_odds_sprt
from kubestill.logic.sequential_design import average_sample_number

IntArray = npt.NDArray[np.int64]

STREAMS = 2000
LOOK = 10  # samples between two looks
LOOKS = 1000  # 10,000 samples at most per stream; at these designs fewer than 0.5% stay undecided
ALPHA = BETA = 0.05
TARGET, DELTA = 0.95, 0.02


@dataclass(frozen=True)
class Tally:
    rejected: int
    accepted: int
    undecided: int
    mean_samples: float

    def share(self, count: int) -> float:
        return count / STREAMS


def run_streams(decide: Callable[[int, int], Outcome], successes_per_look: IntArray) -> Tally:
    """Feed each row (one stream: successes in each look of LOOK samples) to `decide(successes, trials)`."""
    cumulative = np.cumsum(successes_per_look, axis=1)
    rejected = accepted = 0
    samples = []
    for row in cumulative:
        for look, successes in enumerate(row.tolist(), start=1):
            outcome = decide(successes, look * LOOK)
            if outcome is not Outcome.CONTINUE:
                rejected += outcome is Outcome.REJECT
                accepted += outcome is Outcome.ACCEPT
                samples.append(look * LOOK)
                break
    return Tally(rejected, accepted, STREAMS - rejected - accepted, float(np.mean(samples)))


def three_se(rate: float) -> float:
    return 3.0 * math.sqrt(rate * (1.0 - rate) / STREAMS)


AGREEMENT = SprtDesign(p0=TARGET, p1=TARGET - DELTA, alpha=ALPHA, beta=BETA)
agreement = AGREEMENT.outcome
# Odds ratio 3 against 1 on discordant pairs: theta0 = 1/2, theta1 = 3/4.
ERROR_ODDS = SprtDesign(p0=0.5, p1=0.75, alpha=ALPHA, beta=BETA)


def test_the_simulated_designs_are_the_front_ends() -> None:
    for successes, trials in [(0, 9), (139, 139), (1131, 1240), (1166, 1240)]:
        assert agreement(successes, trials) is agreement_sprt(
            successes, trials, target=TARGET, delta=DELTA, alpha=ALPHA, beta=BETA).outcome
    for only_c, only_b in [(8, 0), (7, 0), (0, 5), (12, 10)]:
        assert ERROR_ODDS.outcome(only_c, only_c + only_b) is error_odds_sprt(
            only_c, only_b, odds_ratio=3.0, alpha=ALPHA, beta=BETA).outcome


def bernoulli_looks(rate: float, seed: int) -> IntArray:
    return np.random.default_rng(seed).binomial(LOOK, rate, size=(STREAMS, LOOKS))


def test_false_rollback_rate_on_an_aa_stream_is_at_most_alpha() -> None:
    tally = run_streams(agreement, bernoulli_looks(TARGET, seed=1))
    assert tally.undecided <= 0.005 * STREAMS
    assert tally.share(tally.rejected) <= ALPHA + three_se(ALPHA)
    # Wald's ASN (782 at p0) neglects the overshoot and the looks every 10 samples: the measured mean is a
    # little larger, never smaller by more than sampling error.
    asn = average_sample_number(AGREEMENT, TARGET)
    assert 0.9 * asn <= tally.mean_samples <= 1.3 * asn


def test_missed_regression_rate_at_target_minus_delta_is_at_most_beta() -> None:
    tally = run_streams(agreement, bernoulli_looks(TARGET - DELTA, seed=2))
    assert tally.undecided <= 0.005 * STREAMS
    assert tally.share(tally.accepted) <= BETA + three_se(BETA)


def test_a_clear_regression_is_rolled_back_quickly() -> None:
    tally = run_streams(agreement, bernoulli_looks(0.80, seed=3))
    assert tally.rejected == STREAMS
    # Wald's ASN at 0.80 is about ln 19 / E[z] = 2.944 / 0.0503 = 59; a look every 10 samples adds up to 10.
    assert tally.mean_samples <= average_sample_number(AGREEMENT, 0.80) + 1.5 * LOOK


def test_the_harness_catches_a_test_without_error_control() -> None:
    # "Roll back when the rate is significantly below target at level alpha", checked at every look, on the same
    # A/A streams: repeated significance testing (Armitage, McPherson & Rowe 1969) rolls back far more than alpha.
    def peeking(successes: int, trials: int) -> Outcome:
        z = (successes / trials - TARGET) / math.sqrt(TARGET * (1 - TARGET) / trials)
        return Outcome.REJECT if trials >= 100 and z < -1.645 else Outcome.CONTINUE

    tally = run_streams(peeking, bernoulli_looks(TARGET, seed=1)[:, :200])
    assert tally.share(tally.rejected) > 3 * ALPHA


def discordant_looks(p_candidate: float, p_baseline: float, seed: int) -> tuple[IntArray, IntArray]:
    """Candidate-only and baseline-only failures per look of LOOK paired requests, the two sides failing
    independently: a multinomial over (candidate only, baseline only, neither or both)."""
    only_c = p_candidate * (1 - p_baseline)
    only_b = p_baseline * (1 - p_candidate)
    counts = np.random.default_rng(seed).multinomial(LOOK, [only_c, only_b, 1 - only_c - only_b],
                                                     size=(STREAMS, LOOKS))
    return counts[..., 0], counts[..., 1]


def run_pairs(p_candidate: float, p_baseline: float, seed: int) -> Tally:
    only_c, only_b = discordant_looks(p_candidate, p_baseline, seed)
    # Encode each stream as (candidate-only so far, discordant so far) looks; decide on the counts.
    c_cum, b_cum = np.cumsum(only_c, axis=1), np.cumsum(only_b, axis=1)
    rejected = accepted = 0
    for c_row, b_row in zip(c_cum.tolist(), b_cum.tolist(), strict=True):
        for c, b in zip(c_row, b_row, strict=True):
            outcome = ERROR_ODDS.outcome(c, c + b)
            if outcome is not Outcome.CONTINUE:
                rejected += outcome is Outcome.REJECT
                accepted += outcome is Outcome.ACCEPT
                break
    return Tally(rejected, accepted, STREAMS - rejected - accepted, math.nan)


@pytest.mark.parametrize("failure_rate", [0.02, 0.2])
def test_error_odds_false_rollback_when_both_fail_alike(failure_rate: float) -> None:
    tally = run_pairs(failure_rate, failure_rate, seed=4)
    assert tally.undecided <= 0.005 * STREAMS
    assert tally.share(tally.rejected) <= ALPHA + three_se(ALPHA)


def test_error_odds_missed_regression_at_three_times_the_odds() -> None:
    # Baseline fails 2%, candidate at odds ratio 3: p_c / (1 - p_c) = 3 * 0.02 / 0.98, p_c = 0.05769.
    odds = 3 * 0.02 / 0.98
    tally = run_pairs(odds / (1 + odds), 0.02, seed=5)
    assert tally.undecided <= 0.005 * STREAMS
    assert tally.share(tally.accepted) <= BETA + three_se(BETA)
