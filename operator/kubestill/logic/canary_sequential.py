"""A canary step's sequential decision: the judge's counts since the step started -> continue, end the step early,
or roll back at once. Pure; the tests are logic/sequential.py's (Wald's SPRT), this module applies them to a step.

Two tests on the same judged requests:
- agreement: `agreement_sprt(agreements, samples)`, H0 rate >= minRate against H1 rate <= minRate - delta;
- errors: `error_odds_sprt` on the discordant pairs (one side failed, the other answered), H0 the candidate
  fails no more often than the baseline against H1 its odds of failing are errorOddsRatio times the baseline's.

Reject if either rejects (each at alpha: the rollout's false-rollback rate is at most about 2 alpha, the union of
two tests). End early when the agreement test accepts and the error test has not rejected: the error test alone
never ends a step, because a candidate and a baseline that both never fail give it no discordant pair at all.
A step ends early only after minPause and only when it has a pause (a step held until promoted waits for the
user), and only on a round whose other metrics succeeded (logic/canary._step_over).

Worked examples (minRate 0.95, delta 0.02, alpha = beta = 0.05):

>>> from datetime import UTC
>>> agreement = AgreementSpec(min_rate=0.95)
>>> t = datetime(2026, 1, 1, tzinfo=UTC)
>>> print(step_verdict(agreement, SequentialSpec(), StepCounts(1131, 1240, 1240), 0, t).reason)
agreement 0.912 < 0.95 - 0.02 (SPRT alpha=0.05 beta=0.05, 1,240 samples); errors: candidate 0.00%, baseline 0.00%
>>> step_verdict(agreement, SequentialSpec(), StepCounts(139, 139, 139), 0, t).outcome
<Outcome.ACCEPT: 'Accept'>
"""

from __future__ import annotations

from datetime import datetime

from kubestill.api.v1alpha1._base import parse_duration
from kubestill.api.v1alpha1.canary_agreement import AgreementSpec, SequentialSpec, SequentialStatus
from kubestill.api.v1alpha1.canaryrollout import CanaryRolloutSpec, CanaryRolloutStatus

from .agreement_queries import StepCounts
from .analysis import StepVerdict
from .sequential import Outcome, SequentialDecision, agreement_sprt, error_odds_sprt


def _rate(value: float | None) -> str:
    return f"{value:.2%}" if value is not None else "n/a"


def step_verdict(agreement: AgreementSpec, sequential: SequentialSpec, counts: StepCounts, step: int,
                 at: datetime) -> StepVerdict:
    """Both tests on `counts` (since step `step` started), combined as the module says."""
    a = agreement_sprt(counts.agreements, counts.samples, target=agreement.min_rate, delta=sequential.delta,
                       alpha=sequential.alpha, beta=sequential.beta)
    e = error_odds_sprt(counts.candidate_only, counts.baseline_only, odds_ratio=sequential.error_odds_ratio,
                        alpha=sequential.alpha, beta=sequential.beta)
    errors = (f"errors: candidate {_rate(counts.candidate_error_rate)}, "
              f"baseline {_rate(counts.baseline_error_rate)}")
    outcome, reason = _combine(agreement, sequential, a, e, counts, errors)
    status = SequentialStatus(step=step, outcome=str(outcome), agreements=counts.agreements, samples=counts.samples,
                              candidate_error_rate=counts.candidate_error_rate,
                              baseline_error_rate=counts.baseline_error_rate, at=at, reason=reason)
    return StepVerdict(outcome, reason, status)


def _combine(agreement: AgreementSpec, sequential: SequentialSpec, a: SequentialDecision, e: SequentialDecision,
             counts: StepCounts, errors: str) -> tuple[Outcome, str]:
    rate = counts.agreements / counts.samples if counts.samples else 0.0
    test = f"SPRT alpha={sequential.alpha:g} beta={sequential.beta:g}, {counts.samples:,} samples"
    bound = f"{agreement.min_rate:g} - {sequential.delta:g}"
    if a.outcome is Outcome.REJECT:
        return Outcome.REJECT, f"agreement {rate:.3f} < {bound} ({test}); {errors}"
    if e.outcome is Outcome.REJECT:
        return Outcome.REJECT, f"candidate fails more often than the baseline: {e.reason}; {errors}"
    if a.outcome is Outcome.ACCEPT:
        return Outcome.ACCEPT, f"agreement {rate:.3f} >= {agreement.min_rate:g} accepted against {bound} ({test}); " \
            f"{errors}"
    return Outcome.CONTINUE, f"{a.reason}; {errors}"


def ends_early(spec: CanaryRolloutSpec, status: CanaryRolloutStatus, verdict: StepVerdict | None,
               now: datetime) -> bool:
    """Whether the sequential test ends the running step now: it accepted, the step has a pause (a step held
    until promoted waits for the user), and minPause has passed since the step started.

    >>> from datetime import UTC, timedelta
    >>> spec = CanaryRolloutSpec.model_validate({"route": {"name": "r"}, "baseline": {"name": "b", "port": 80},
    ...     "candidate": {"studentModel": "s"}, "steps": [{"weight": 10, "pause": "1h"}],
    ...     "analysis": {"prometheusUrl": "http://p", "agreement": {"minRate": 0.95},
    ...                  "sequential": {"minPause": "10m"}}})
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> status = CanaryRolloutStatus(phase="Progressing", current_step=0, current_weight=10, step_started_at=t,
    ...                              next_step_at=t + timedelta(hours=1))
    >>> v = step_verdict(spec.analysis.agreement, spec.analysis.sequential, StepCounts(139, 139), 0, t)
    >>> ends_early(spec, status, v, t + timedelta(minutes=9)), ends_early(spec, status, v, t + timedelta(minutes=10))
    (False, True)
    """
    if verdict is None or verdict.outcome is not Outcome.ACCEPT or spec.analysis is None:
        return False
    sequential = spec.analysis.sequential
    if sequential is None or status.step_started_at is None or status.next_step_at is None:
        return False
    if sequential.min_pause is None:
        return True
    return now >= status.step_started_at + parse_duration(sequential.min_pause)
