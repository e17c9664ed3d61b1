"""What a binomial SPRT costs and how it behaves: Wald's operating characteristic (OC) and average sample number
(ASN) approximations (A. Wald, "Sequential Analysis", Wiley 1947, sec. 3.2 and 3.3, applied to the binomial in
sec. 5.3). For choosing delta, alpha and beta, for bench/ and for status text ("about 780 samples expected");
the decisions themselves are in `sequential`.

Both neglect the overshoot of the boundaries: the true OC is a little better (fewer errors) and the true ASN a
little larger than these values (Wald 1947, sec. 3.4); tests/unit/logic/test_sequential_simulation.py measures
both by simulation.

Worked example (p0 = 0.95, p1 = 0.93, alpha = beta = 0.05): at p0 the OC is 1 - alpha and about 782 samples are
expected; at p1 the OC is beta.

>>> d = SprtDesign(p0=0.95, p1=0.93, alpha=0.05, beta=0.05)
>>> round(operating_characteristic(d, 0.95), 3), round(operating_characteristic(d, 0.93), 3)
(0.95, 0.05)
>>> round(average_sample_number(d, 0.95))
782
"""

from __future__ import annotations

import math

from scipy.optimize import brentq

from .sequential import SprtDesign

# |E_p[z]| below which p is treated as the point where the drift is zero (h = 0): the general formulas are 0/0
# there, and the h = 0 ones agree with them to ~1e-6 relative at this distance.
_FLAT = 1e-9


def _mgf_minus_one(design: SprtDesign, p: float, h: float) -> float:
    """E_p[exp(h z)] - 1 for one observation's log-likelihood-ratio increment z, computed with expm1 so that it
    stays accurate near h = 0 (where it is 0 for every p)."""
    return p * math.expm1(h * design.success_step) + (1.0 - p) * math.expm1(h * design.failure_step)


def _mean_increment(design: SprtDesign, p: float) -> float:
    """E_p[z] = p ln(p1/p0) + (1 - p) ln((1-p1)/(1-p0))."""
    return p * design.success_step + (1.0 - p) * design.failure_step


def wald_exponent(design: SprtDesign, p: float) -> float:
    """The non-zero root h of E_p[(f1(x)/f0(x))^h] = 1 (Wald 1947, eq. 3.27): h = 1 at p0, h = -1 at p1, 0 where
    E_p[z] = 0. Found by scipy.optimize.brentq between the minimum of that convex function and a point where it
    is positive. Raises ValueError unless 0 < p < 1."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    mean = _mean_increment(design, p)
    if abs(mean) < _FLAT:
        return 0.0
    a, b = design.success_step, design.failure_step
    # d/dh of the function is zero where p a e^{ha} = -(1-p) b e^{hb}; a and b have opposite signs.
    h_min = math.log(-p * a / ((1.0 - p) * b)) / (b - a)
    h_far = 2.0 * h_min
    while _mgf_minus_one(design, p, h_far) <= 0.0:
        h_far *= 2.0
    lo, hi = sorted((h_min, h_far))
    return float(brentq(lambda h: _mgf_minus_one(design, p, h), lo, hi, xtol=1e-12))


def operating_characteristic(design: SprtDesign, p: float) -> float:
    """L(p), the probability that the test accepts H0 when the true rate is p: (A^h - 1) / (A^h - B^h) with
    h = wald_exponent(p), and ln A / (ln A - ln B) where h = 0 (Wald 1947, eq. 3.30 and 3.34)."""
    h = wald_exponent(design, p)
    log_a, log_b = design.log_upper, design.log_lower
    if h == 0.0:
        return log_a / (log_a - log_b)
    # Written so that no power overflows: divide by A^h when h > 0, by B^h when h < 0.
    if h > 0.0:
        return -math.expm1(-h * log_a) / (1.0 - math.exp(h * (log_b - log_a)))
    spread = math.exp(h * (log_a - log_b))  # A^h / B^h, in (0, 1) for h < 0
    return (spread - math.exp(-h * log_b)) / (spread - 1.0)


def average_sample_number(design: SprtDesign, p: float) -> float:
    """E_p[n], the expected number of observations to a decision at true rate p:
    (L ln B + (1 - L) ln A) / E_p[z], and -ln A ln B / E_p[z^2] where E_p[z] = 0 (Wald 1947, eq. 3.57, 3.60)."""
    mean = _mean_increment(design, p)
    log_a, log_b = design.log_upper, design.log_lower
    if abs(mean) < _FLAT:
        second = p * design.success_step**2 + (1.0 - p) * design.failure_step**2
        return -log_a * log_b / second
    oc = operating_characteristic(design, p)
    return (oc * log_b + (1.0 - oc) * log_a) / mean
