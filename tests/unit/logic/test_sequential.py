"""Wald's SPRT on agreement counts and on discordant failure pairs (kubestill.logic.sequential): worked examples
computed by hand, the likelihoods checked against scipy.stats, and the promised error rates measured by simulation.

Hand computations for target 0.95, delta 0.02, alpha = beta = 0.05 (the figures in the tests below):
  ln A = ln(0.95 / 0.05) = ln 19 = 2.944439, ln B = -2.944439;
  one agreement adds g1 = ln(0.93 / 0.95) = -0.021277, one disagreement g2 = ln(0.07 / 0.05) = 0.336472;
  all agreements accept once n (1 - s) >= ln A / (g2 - g1), s = g2 / (g2 - g1) = 0.940524: n >= 138.4 -> 139;
  all disagreements reject once 0.336472 n >= 2.944439: n >= 8.75 -> 9;
  1131 of 1240: 1131 g1 + 109 g2 = -24.064 + 36.675 = 12.611 -> reject.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import pytest
from scipy import stats

from kubestill.logic.sequential import Outcome, SprtDesign, agreement_sprt, error_odds_sprt

LN19 = math.log(19.0)
G1, G2 = math.log(0.93 / 0.95), math.log(0.07 / 0.05)
TARGET = {"target": 0.95, "delta": 0.02, "alpha": 0.05, "beta": 0.05}


@pytest.mark.parametrize(
    ("agreements", "samples", "outcome", "llr"),
    [
        (0, 0, Outcome.CONTINUE, 0.0),  # nothing seen yet
        (0, 8, Outcome.CONTINUE, 8 * G2),  # 2.692 < 2.944
        (0, 9, Outcome.REJECT, 9 * G2),  # 3.028 >= 2.944
        (138, 138, Outcome.CONTINUE, 138 * G1),  # -2.936 > -2.944
        (139, 139, Outcome.ACCEPT, 139 * G1),  # -2.957 <= -2.944
        (1131, 1240, Outcome.REJECT, 1131 * G1 + 109 * G2),  # 12.611
        (1178, 1240, Outcome.ACCEPT, 1178 * G1 + 62 * G2),  # rate 0.950: -4.201
        (1166, 1240, Outcome.CONTINUE, 1166 * G1 + 74 * G2),  # rate 0.940, on the slope: 0.089
        (930, 1000, Outcome.REJECT, 930 * G1 + 70 * G2),  # exactly p1: 3.765
    ],
)
def test_agreement_worked_examples(agreements: int, samples: int, outcome: Outcome, llr: float) -> None:
    decision = agreement_sprt(agreements, samples, **TARGET)
    assert decision.outcome is outcome
    assert decision.log_likelihood_ratio == pytest.approx(llr, abs=1e-9)
    assert (decision.log_lower, decision.log_upper) == pytest.approx((-LN19, LN19))
    assert (decision.successes, decision.trials) == (agreements, samples)


def test_reason_names_counts_hypotheses_and_error_rates() -> None:
    assert agreement_sprt(1131, 1240, **TARGET).reason == (
        "agreement 0.912 (1,131 of 1,240) rejects >= 0.95 for <= 0.95 - 0.02 (SPRT alpha=0.05 beta=0.05)")
    assert agreement_sprt(1178, 1240, **TARGET).reason == (
        "agreement 0.950 (1,178 of 1,240) accepts >= 0.95 against <= 0.95 - 0.02 (SPRT alpha=0.05 beta=0.05)")
    assert agreement_sprt(1166, 1240, **TARGET).reason == (
        "agreement 0.940 (1,166 of 1,240): SPRT undecided, log-LR 0.089 in (-2.944, 2.944) (alpha=0.05 beta=0.05)")


def test_unequal_error_rates_move_the_boundaries() -> None:
    # alpha = 0.01, beta = 0.2: ln A = ln(0.8 / 0.01) = 4.382, ln B = ln(0.2 / 0.99) = -1.599.
    d = agreement_sprt(0, 0, target=0.9, delta=0.1, alpha=0.01, beta=0.2)
    assert (d.log_lower, d.log_upper) == pytest.approx((math.log(0.2 / 0.99), math.log(80.0)))
    # One disagreement adds ln(0.2 / 0.1) = ln 2: 6 reject (4.159 < 4.382 < 4.852 for 7).
    assert agreement_sprt(0, 6, target=0.9, delta=0.1, alpha=0.01, beta=0.2).outcome is Outcome.CONTINUE
    assert agreement_sprt(0, 7, target=0.9, delta=0.1, alpha=0.01, beta=0.2).outcome is Outcome.REJECT
    # One agreement adds ln(0.8 / 0.9) = -0.1178: 14 accept (-1.649), 13 do not (-1.531).
    assert agreement_sprt(13, 13, target=0.9, delta=0.1, alpha=0.01, beta=0.2).outcome is Outcome.CONTINUE
    assert agreement_sprt(14, 14, target=0.9, delta=0.1, alpha=0.01, beta=0.2).outcome is Outcome.ACCEPT


@pytest.mark.parametrize(
    ("candidate_only", "baseline_only", "outcome"),
    [
        # odds ratio 3 against 1: theta0 = 0.5, theta1 = 0.75; +ln 1.5 = 0.405 per candidate-only pair,
        # +ln 0.5 = -0.693 per baseline-only pair, boundaries +-2.944.
        (7, 0, Outcome.CONTINUE),  # 2.838
        (8, 0, Outcome.REJECT),  # 3.244
        (0, 4, Outcome.CONTINUE),  # -2.773
        (0, 5, Outcome.ACCEPT),  # -3.466
        (20, 5, Outcome.REJECT),  # 8.109 - 3.466 = 4.644
        (12, 10, Outcome.CONTINUE),  # 4.866 - 6.931 = -2.066
        (12, 12, Outcome.ACCEPT),  # 4.866 - 8.318 = -3.452
    ],
)
def test_error_odds_worked_examples(candidate_only: int, baseline_only: int, outcome: Outcome) -> None:
    decision = error_odds_sprt(candidate_only, baseline_only, odds_ratio=3.0, alpha=0.05, beta=0.05)
    expected = candidate_only * math.log(1.5) + baseline_only * math.log(0.5)
    assert decision.log_likelihood_ratio == pytest.approx(expected)
    assert decision.outcome is outcome
    assert decision.trials == candidate_only + baseline_only


@pytest.mark.parametrize("k", [0, 1, 17, 50, 93, 100])
@pytest.mark.parametrize(("p0", "p1"), [(0.95, 0.93), (0.5, 0.75), (0.8, 0.6)])
def test_log_likelihood_ratio_matches_scipy_binomial(k: int, p0: float, p1: float) -> None:
    design = SprtDesign(p0=p0, p1=p1, alpha=0.05, beta=0.1)
    reference = stats.binom.logpmf(k, 100, p1) - stats.binom.logpmf(k, 100, p0)
    assert design.log_likelihood_ratio(k, 100) == pytest.approx(reference, rel=1e-9, abs=1e-9)


def test_boundaries_are_walds() -> None:
    design = SprtDesign(p0=0.9, p1=0.8, alpha=0.02, beta=0.1)
    assert math.exp(design.log_upper) == pytest.approx((1 - 0.1) / 0.02)
    assert math.exp(design.log_lower) == pytest.approx(0.1 / (1 - 0.02))


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: agreement_sprt(1, 2, target=0.95, delta=0.0, alpha=0.05, beta=0.05), "delta"),
        (lambda: agreement_sprt(1, 2, target=0.95, delta=0.95, alpha=0.05, beta=0.05), "delta"),
        (lambda: agreement_sprt(1, 2, target=1.0, delta=0.1, alpha=0.05, beta=0.05), "p0"),
        (lambda: agreement_sprt(1, 2, target=0.95, delta=0.02, alpha=0.0, beta=0.05), "alpha"),
        (lambda: agreement_sprt(1, 2, target=0.95, delta=0.02, alpha=0.05, beta=1.0), "beta"),
        (lambda: agreement_sprt(1, 2, target=0.95, delta=0.02, alpha=0.6, beta=0.5), "alpha + beta"),
        (lambda: agreement_sprt(3, 2, **TARGET), "successes <= trials"),
        (lambda: agreement_sprt(-1, 2, **TARGET), "successes <= trials"),
        (lambda: error_odds_sprt(1, 1, odds_ratio=1.0, alpha=0.05, beta=0.05), "tolerated_ratio < odds_ratio"),
        (lambda: error_odds_sprt(1, -1, odds_ratio=2.0, alpha=0.05, beta=0.05), "baseline_only"),
    ],
)
def test_refuses_out_of_range_values_naming_them(call: Callable[[], object], name: str) -> None:
    with pytest.raises(ValueError, match=re.escape(name)):
        call()
