"""Samples to a decision: Wald's SPRT on agreement counts (kubestill.logic.sequential) against fixed-sample
analyses at the same error rates, by simulation (issue #17, bench (a)). Pure: no cluster.

For each true agreement rate (the target, target - delta/2, target - delta, target - 2 delta), `--streams`
independent Bernoulli streams are judged three ways:

- `sprt`: agreement_sprt(agreements, samples) looked at every `--check-every` samples (as a judge's counters
  are, one scrape at a time) until it accepts or rejects;
- `fixed-n`: the one-sided exact binomial test with the same alpha and power 1 - beta at target - delta, on the
  smallest n that achieves both (scipy.stats.binom), deciding once at n;
- `window`: a fixed-window threshold analysis as metric analyses do today (Argo Rollouts, Flagger, and
  kubestill's own `min`): roll back when the agreement over the first `--window` samples is below
  target - delta/2; no stated error rates.

Printed per rate and method: the share of streams rolled back, and the samples to a decision (mean, p95).

    python bench/sequential.py --target 0.95 --delta 0.02 --alpha 0.05 --beta 0.05 --streams 2000
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

from kubestill.logic.sequential import Outcome, SprtDesign, agreement_sprt
from kubestill.logic.sequential_design import average_sample_number


@dataclass(frozen=True)
class Result:
    """One method at one true rate: share of streams rolled back, samples to a decision per stream."""

    rolled_back: float
    samples: np.ndarray  # shape (streams,), int


def fixed_n(target: float, delta: float, alpha: float, beta: float, limit: int = 200_000) -> tuple[int, int]:
    """The smallest n (and its critical count c) of the one-sided exact binomial test "roll back when agreements
    <= c" with P(roll back | target) <= alpha and P(keep | target - delta) <= beta. Raises ValueError past
    `limit`."""
    p1 = target - delta
    n = 10
    while n <= limit:
        c = int(stats.binom.ppf(alpha, n, target))  # P(X <= c | target) may exceed alpha at the quantile
        while c >= 0 and stats.binom.cdf(c, n, target) > alpha:
            c -= 1
        if c >= 0 and stats.binom.sf(c, n, p1) <= beta:
            return n, c
        n = int(n * 1.05) + 1
    raise ValueError(f"no fixed n up to {limit}")


def simulate_sprt(rate: float, streams: int, check_every: int, max_samples: int, rng: np.random.Generator,
                  target: float, delta: float, alpha: float, beta: float) -> Result:
    rolled, used = 0, np.zeros(streams, dtype=int)
    for s in range(streams):
        agree = n = 0
        while True:
            step = rng.random(check_every) < rate
            agree += int(step.sum())
            n += check_every
            outcome = agreement_sprt(agree, n, target=target, delta=delta, alpha=alpha, beta=beta).outcome
            if outcome is not Outcome.CONTINUE or n >= max_samples:
                rolled += outcome is Outcome.REJECT
                used[s] = n
                break
    return Result(rolled / streams, used)


def simulate_fixed(rate: float, streams: int, n: int, c: int, rng: np.random.Generator) -> Result:
    agreements = rng.binomial(n, rate, size=streams)
    return Result(float(np.mean(agreements <= c)), np.full(streams, n))


def simulate_window(rate: float, streams: int, window: int, floor: float, rng: np.random.Generator) -> Result:
    agreements = rng.binomial(window, rate, size=streams)
    return Result(float(np.mean(agreements / window < floor)), np.full(streams, window))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--delta", type=float, default=0.02)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--beta", type=float, default=0.05)
    ap.add_argument("--streams", type=int, default=2000)
    ap.add_argument("--check-every", type=int, default=10, help="samples between two looks at the SPRT")
    ap.add_argument("--window", type=int, default=200, help="samples of the fixed-window threshold analysis")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    t, d, a, b = args.target, args.delta, args.alpha, args.beta
    rng = np.random.default_rng(args.seed)
    n, c = fixed_n(t, d, a, b)
    design = SprtDesign(p0=t, p1=t - d, alpha=a, beta=b)
    max_samples = 20 * n
    print(f"target {t}, delta {d}, alpha {a}, beta {b}; {args.streams} streams per rate; SPRT looked at every "
          f"{args.check_every} samples (capped at {max_samples}); fixed-n: n={n}, roll back when agreements <= {c}; "
          f"window: {args.window} samples, roll back below {t - d / 2:g}")
    print(f"{'true rate':>9}  {'method':<8} {'rolled back':>11} {'mean n':>8} {'p95 n':>7} {'Wald ASN':>8}")
    for rate in (t, t - d / 2, t - d, t - 2 * d):
        results = {
            "sprt": simulate_sprt(rate, args.streams, args.check_every, max_samples, rng, t, d, a, b),
            "fixed-n": simulate_fixed(rate, args.streams, n, c, rng),
            "window": simulate_window(rate, args.streams, args.window, t - d / 2, rng),
        }
        for method, r in results.items():
            asn = f"{average_sample_number(design, rate):8.0f}" if method == "sprt" else f"{'':8}"
            print(f"{rate:9.3f}  {method:<8} {r.rolled_back:11.3f} {r.samples.mean():8.0f} "
                  f"{np.percentile(r.samples, 95):7.0f} {asn}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
