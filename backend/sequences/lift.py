"""Lift: how much more often people reach a goal when they get a message than when they
are held out, with a confidence interval for that difference.

Pure arithmetic on counts (no database, no I/O): backend.sequences.results feeds it the
goal counts of each arm of a send step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# The standard normal quantile for a two-sided 95% interval.
Z_95 = 1.959963984540054


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


@dataclass(frozen=True)
class Lift:
    """A difference of two proportions (variant minus holdout) and its interval."""

    difference: float
    low: float
    high: float


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> Interval:
    """The Wilson score interval for a proportion `successes / trials` (trials > 0).

    E. B. Wilson, "Probable inference, the law of succession, and statistical
    inference", JASA 22 (1927) 209-212."""
    if trials <= 0 or not 0 <= successes <= trials:
        raise ValueError(f"{successes} successes in {trials} trials is not a proportion")
    p = successes / trials
    z2 = z * z
    scale = 1 + z2 / trials
    centre = (p + z2 / (2 * trials)) / scale
    half = z / scale * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials))
    # At 0 or all successes an end is exactly 0 or 1 (the arithmetic misses by a hair).
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return Interval(low, high)


def difference_interval(
    successes_a: int, trials_a: int, successes_b: int, trials_b: int, z: float = Z_95
) -> Lift:
    """`a - b` for two independent proportions, with Newcombe's hybrid score interval
    (his method 10: the Wilson intervals of each proportion, combined).

    R. G. Newcombe, "Interval estimation for the difference between independent
    proportions: comparison of eleven methods", Statistics in Medicine 17 (1998)
    873-890. His example 56/70 - 48/80 = 0.2000 has the 95% interval 0.0524 to 0.3339.
    """
    p_a, p_b = successes_a / trials_a, successes_b / trials_b
    a = wilson_interval(successes_a, trials_a, z)
    b = wilson_interval(successes_b, trials_b, z)
    difference = p_a - p_b
    low = difference - math.sqrt((p_a - a.low) ** 2 + (b.high - p_b) ** 2)
    high = difference + math.sqrt((a.high - p_a) ** 2 + (p_b - b.low) ** 2)
    return Lift(difference, max(-1.0, low), min(1.0, high))
