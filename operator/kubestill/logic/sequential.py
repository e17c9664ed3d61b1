"""Sequential tests on counts: decide as soon as the evidence allows, with stated error rates.

Pure functions over cumulative counts (what the judge's Prometheus counters give), returning a typed decision
with a one-line reason for status, Events and logs. Both tests are Wald's sequential probability ratio test
(SPRT) on a Bernoulli parameter (A. Wald, "Sequential Tests of Statistical Hypotheses", Ann. Math. Statist.
16(2), 1945; A. Wald, "Sequential Analysis", Wiley 1947, ch. 5 and 6):

- `agreement_sprt`: H0 "the student agrees with the teacher at rate >= target" against H1 "rate <= target -
  delta", on (agreements, samples).
- `error_odds_sprt`: H0 "the candidate fails no more often than the baseline" against H1 "its odds of failure
  are `odds_ratio` times the baseline's", on the discordant pairs of the judge's paired requests (Wald 1947
  ch. 6, "double dichotomies"; the same conditional argument as McNemar's test, Psychometrika 12, 1947).

Wald's boundaries A = (1 - beta) / alpha and B = beta / (1 - alpha) on the likelihood ratio guarantee (Wald 1945,
eq. 3.22-3.23) alpha' <= alpha / (1 - beta) and beta' <= beta / (1 - alpha), whatever the overshoot, and also
when the counts are looked at only now and then (a Prometheus scrape, a reconcile): the proof needs only that H0
is rejected when the ratio is >= A and accepted when it is <= B. Composite hypotheses (rate >= target rather
than = target) inherit the bounds because the Bernoulli family has a monotone likelihood ratio, so the operating
characteristic is monotone in the rate (Wald 1947, sec. 5.2). Assumed: the samples are independent with one
common rate while the test runs (one rollout step; a new step starts a new test).

Worked example (target 0.95, delta 0.02, alpha = beta = 0.05; A = 19, ln A = 2.944):

>>> print(agreement_sprt(1131, 1240, target=0.95, delta=0.02, alpha=0.05, beta=0.05).reason)
agreement 0.912 (1,131 of 1,240) rejects >= 0.95 for <= 0.95 - 0.02 (SPRT alpha=0.05 beta=0.05)
>>> agreement_sprt(139, 139, target=0.95, delta=0.02, alpha=0.05, beta=0.05).outcome
<Outcome.ACCEPT: 'Accept'>
>>> agreement_sprt(138, 138, target=0.95, delta=0.02, alpha=0.05, beta=0.05).outcome
<Outcome.CONTINUE: 'Continue'>
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass


class Outcome(enum.StrEnum):
    """What the test says now: keep sampling, accept H0 (the candidate is fine), or reject it (roll back)."""

    CONTINUE = "Continue"
    ACCEPT = "Accept"
    REJECT = "Reject"


@dataclass(frozen=True)
class SprtDesign:
    """A binomial SPRT of H0: p = p0 against H1: p = p1 with error rates alpha (rejecting a true H0) and beta
    (accepting a false one). Raises ValueError, naming the parameter, when a value is out of range."""

    p0: float
    p1: float
    alpha: float
    beta: float

    def __post_init__(self) -> None:
        for name in ("p0", "p1", "alpha", "beta"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {value}")
        if self.p0 == self.p1:
            raise ValueError(f"p1 must differ from p0, both are {self.p0}")
        if self.alpha + self.beta >= 1.0:
            raise ValueError(f"alpha + beta must be < 1, got {self.alpha} + {self.beta}")

    @property
    def log_upper(self) -> float:
        """ln A, A = (1 - beta) / alpha: the log-likelihood ratio at or above which H0 is rejected."""
        return math.log((1.0 - self.beta) / self.alpha)

    @property
    def log_lower(self) -> float:
        """ln B, B = beta / (1 - alpha): the log-likelihood ratio at or below which H0 is accepted."""
        return math.log(self.beta / (1.0 - self.alpha))

    @property
    def success_step(self) -> float:
        """ln(p1 / p0): what one success adds to the log-likelihood ratio."""
        return math.log(self.p1 / self.p0)

    @property
    def failure_step(self) -> float:
        """ln((1 - p1) / (1 - p0)): what one failure adds to the log-likelihood ratio."""
        return math.log((1.0 - self.p1) / (1.0 - self.p0))

    def log_likelihood_ratio(self, successes: int, trials: int) -> float:
        """ln(L1 / L0) = k ln(p1/p0) + (n - k) ln((1-p1)/(1-p0)) for k successes in n trials (the binomial
        coefficient cancels). Raises ValueError unless 0 <= successes <= trials."""
        if trials < 0 or not 0 <= successes <= trials:
            raise ValueError(f"need 0 <= successes <= trials, got {successes} of {trials}")
        return successes * self.success_step + (trials - successes) * self.failure_step

    def outcome(self, successes: int, trials: int) -> Outcome:
        llr = self.log_likelihood_ratio(successes, trials)
        if llr >= self.log_upper:
            return Outcome.REJECT
        if llr <= self.log_lower:
            return Outcome.ACCEPT
        return Outcome.CONTINUE


@dataclass(frozen=True)
class SequentialDecision:
    """One look at the counts: the outcome, the counts and statistic it rests on, and why, in one line."""

    outcome: Outcome
    successes: int
    trials: int
    log_likelihood_ratio: float
    log_lower: float
    log_upper: float
    reason: str


def agreement_sprt(agreements: int, samples: int, *, target: float, delta: float, alpha: float,
                   beta: float) -> SequentialDecision:
    """Wald's SPRT on agreement counts: H0 rate >= `target` (p0) against H1 rate <= `target - delta` (p1).

    `agreements` of `samples` compared requests agreed (cumulative within one step). `alpha` is the false-rollback
    rate (rejecting a student that meets the target), `beta` the missed-regression rate (accepting one at or
    below target - delta). REJECT means roll back, ACCEPT means the step may end early. Raises ValueError for
    delta outside (0, target) or any value SprtDesign refuses.

    Acceptance and rejection are lines in (samples, agreements) (Wald 1947, sec. 5.3): with g1 = ln(p1/p0),
    g2 = ln((1-p1)/(1-p0)), reject when agreements <= s n - ln A / (g2 - g1), accept when agreements >= s n -
    ln B / (g2 - g1), slope s = g2 / (g2 - g1).

    >>> d = agreement_sprt(0, 9, target=0.95, delta=0.02, alpha=0.05, beta=0.05)
    >>> d.outcome, round(d.log_likelihood_ratio, 3)
    (<Outcome.REJECT: 'Reject'>, 3.028)
    >>> agreement_sprt(0, 8, target=0.95, delta=0.02, alpha=0.05, beta=0.05).reason
    'agreement 0.000 (0 of 8): SPRT undecided, log-LR 2.692 in (-2.944, 2.944) (alpha=0.05 beta=0.05)'
    """
    if not 0.0 < delta < target:
        raise ValueError(f"delta must be in (0, target={target}), got {delta}")
    design = SprtDesign(p0=target, p1=target - delta, alpha=alpha, beta=beta)
    outcome = design.outcome(agreements, samples)
    llr = design.log_likelihood_ratio(agreements, samples)
    rate = agreements / samples if samples else 0.0
    counts = f"{agreements:,} of {samples:,}"
    errors = f"alpha={alpha:g} beta={beta:g}"
    if outcome is Outcome.REJECT:
        reason = (f"agreement {rate:.3f} ({counts}) rejects >= {target:g} for <= {target:g} - {delta:g} "
                  f"(SPRT {errors})")
    elif outcome is Outcome.ACCEPT:
        reason = (f"agreement {rate:.3f} ({counts}) accepts >= {target:g} against <= {target:g} - {delta:g} "
                  f"(SPRT {errors})")
    else:
        reason = _undecided("agreement", rate, counts, llr, design, errors)
    return SequentialDecision(outcome, agreements, samples, llr, design.log_lower, design.log_upper, reason)


def error_odds_sprt(candidate_only: int, baseline_only: int, *, odds_ratio: float, alpha: float, beta: float,
                    tolerated_ratio: float = 1.0) -> SequentialDecision:
    """Sequential comparison of the candidate's failure rate with the baseline's on paired requests.

    Each judged request is asked of both sides; only the discordant pairs carry information (Wald 1947, ch. 6):
    `candidate_only` pairs where the candidate failed and the baseline answered, `baseline_only` the reverse.
    Given a discordant pair, the candidate is the one that failed with probability theta = u / (1 + u), where
    u = p_c (1 - p_b) / (p_b (1 - p_c)) is the odds ratio of the two failure rates when the two sides fail
    independently of each other on a request (Wald's assumption); without that assumption theta is still the
    McNemar share P(candidate only) / P(discordant), and the test is McNemar's, done sequentially.
    H0: u <= `tolerated_ratio` (default 1: no worse than the baseline) against H1: u >= `odds_ratio`; REJECT
    means the candidate fails more often (roll back). For rare failures u is close to the ratio of the rates.
    Raises ValueError unless 0 < tolerated_ratio < odds_ratio.

    Worked example (u1 = 3: theta0 = 0.5, theta1 = 0.75, alpha = beta = 0.05, ln A = 2.944): each candidate-only
    failure adds ln 1.5 = 0.405, each baseline-only failure ln 0.5 = -0.693:

    >>> print(error_odds_sprt(8, 0, odds_ratio=3.0, alpha=0.05, beta=0.05).reason)  # doctest: +NORMALIZE_WHITESPACE
    candidate failed alone in 8 of 8 discordant pairs (theta 1.000) rejects odds ratio <= 1 for >= 3
    (SPRT alpha=0.05 beta=0.05)
    >>> error_odds_sprt(7, 0, odds_ratio=3.0, alpha=0.05, beta=0.05).outcome
    <Outcome.CONTINUE: 'Continue'>
    >>> error_odds_sprt(0, 5, odds_ratio=3.0, alpha=0.05, beta=0.05).outcome
    <Outcome.ACCEPT: 'Accept'>
    """
    if not 0.0 < tolerated_ratio < odds_ratio:
        raise ValueError(f"need 0 < tolerated_ratio < odds_ratio, got {tolerated_ratio} and {odds_ratio}")
    design = SprtDesign(p0=tolerated_ratio / (1.0 + tolerated_ratio), p1=odds_ratio / (1.0 + odds_ratio),
                        alpha=alpha, beta=beta)
    discordant = candidate_only + baseline_only
    if baseline_only < 0:
        raise ValueError(f"baseline_only must be >= 0, got {baseline_only}")
    outcome = design.outcome(candidate_only, discordant)
    llr = design.log_likelihood_ratio(candidate_only, discordant)
    theta = candidate_only / discordant if discordant else 0.0
    counts = f"{candidate_only:,} of {discordant:,}"
    errors = f"alpha={alpha:g} beta={beta:g}"
    lead = f"candidate failed alone in {counts} discordant pairs (theta {theta:.3f})"
    if outcome is Outcome.REJECT:
        reason = f"{lead} rejects odds ratio <= {tolerated_ratio:g} for >= {odds_ratio:g} (SPRT {errors})"
    elif outcome is Outcome.ACCEPT:
        reason = f"{lead} accepts odds ratio <= {tolerated_ratio:g} against >= {odds_ratio:g} (SPRT {errors})"
    else:
        reason = _undecided("candidate-only failure share", theta, counts, llr, design, errors)
    return SequentialDecision(outcome, candidate_only, discordant, llr, design.log_lower, design.log_upper, reason)


def _undecided(what: str, rate: float, counts: str, llr: float, design: SprtDesign, errors: str) -> str:
    return (f"{what} {rate:.3f} ({counts}): SPRT undecided, log-LR {llr:.3f} in "
            f"({design.log_lower:.3f}, {design.log_upper:.3f}) ({errors})")
