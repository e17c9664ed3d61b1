"""Wald's OC and ASN approximations (kubestill.logic.sequential_design) at the points where they are known in
closed form, and their shape."""

from __future__ import annotations

import itertools
import math

import pytest

from kubestill.logic.sequential import SprtDesign
from kubestill.logic.sequential_design import average_sample_number, operating_characteristic, wald_exponent

DESIGNS = [
    SprtDesign(p0=0.95, p1=0.93, alpha=0.05, beta=0.05),
    SprtDesign(p0=0.9, p1=0.8, alpha=0.01, beta=0.2),
    SprtDesign(p0=0.5, p1=0.75, alpha=0.05, beta=0.1),  # the failure-odds test: p1 > p0
]


@pytest.mark.parametrize("d", DESIGNS)
def test_exponent_is_one_at_p0_and_minus_one_at_p1(d: SprtDesign) -> None:
    # E_p0[(f1/f0)^1] = sum f1 = 1 and E_p1[(f1/f0)^-1] = sum f0 = 1 (Wald 1947, sec. 3.2).
    assert wald_exponent(d, d.p0) == pytest.approx(1.0, abs=1e-9)
    assert wald_exponent(d, d.p1) == pytest.approx(-1.0, abs=1e-9)


@pytest.mark.parametrize("d", DESIGNS)
def test_oc_at_the_two_hypotheses(d: SprtDesign) -> None:
    a, b = math.exp(d.log_upper), math.exp(d.log_lower)
    # L(p0) = (A - 1) / (A - B) and L(p1) = (1/A - 1) / (1/A - 1/B): about 1 - alpha and beta.
    assert operating_characteristic(d, d.p0) == pytest.approx((a - 1) / (a - b))
    assert operating_characteristic(d, d.p1) == pytest.approx((1 / a - 1) / (1 / a - 1 / b))
    assert operating_characteristic(d, d.p0) == pytest.approx(1 - d.alpha, abs=0.2 * d.alpha)
    assert operating_characteristic(d, d.p1) == pytest.approx(d.beta, abs=0.2 * d.beta)


@pytest.mark.parametrize("d", DESIGNS)
def test_oc_is_monotone_and_continuous_through_zero_drift(d: SprtDesign) -> None:
    s = d.failure_step / (d.failure_step - d.success_step)  # E_s[z] = 0
    grid = sorted({0.02 * i for i in range(1, 50)} | {s - 1e-7, s, s + 1e-7})
    values = [operating_characteristic(d, p) for p in grid]
    pairs = itertools.pairwise(values)
    rising = d.p0 > d.p1  # accepting H0 gets likelier towards p0
    assert all((b >= a) if rising else (b <= a) for a, b in pairs)
    assert operating_characteristic(d, s) == pytest.approx(d.log_upper / (d.log_upper - d.log_lower))
    assert operating_characteristic(d, s - 1e-7) == pytest.approx(operating_characteristic(d, s), abs=1e-4)
    assert average_sample_number(d, s - 1e-7) == pytest.approx(average_sample_number(d, s), rel=1e-3)


def test_asn_worked_example() -> None:
    # p0 = 0.95, p1 = 0.93, alpha = beta = 0.05: E_p0[z] = 0.95 ln(0.93/0.95) + 0.05 ln 1.4 = -0.0033897;
    # E_p0[n] = (0.95 ln(1/19) + 0.05 ln 19) / -0.0033897 = -2.64999 / -0.0033897 = 781.8.
    d = DESIGNS[0]
    assert average_sample_number(d, 0.95) == pytest.approx(781.7, abs=0.5)
    # The largest expected sample is near the zero-drift rate s = 0.9405: -ln A ln B / E_s[z^2] = 1211.
    assert average_sample_number(d, 0.9405243) == pytest.approx(1211.0, abs=1.0)


@pytest.mark.parametrize("p", [0.0, 1.0, -0.1])
def test_refuses_degenerate_rates(p: float) -> None:
    with pytest.raises(ValueError, match="p must be in"):
        operating_characteristic(DESIGNS[0], p)
