"""Statistics for mpbench reports: is model A really better than model B?

Each model is trained with a few seeds, so each side is a small sample of
top-1 accuracies.  A single "A beat B" can be seed noise; these functions say
how sure we can be.  All distributions come from scipy.stats.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

__all__ = ["Comparison", "compare", "rank_with_ties"]

NAN = float("nan")


@dataclass(frozen=True)
class Comparison:
    """Result of comparing model A with model B (A minus B throughout).

    test: "paired" (t test over shared seeds), "welch" (unequal-variance t
    test) or "none" (too few runs; p_value/ci/t/df are NaN, reason says why).
    diff is mean A - mean B; for "paired" it is the mean of the per-seed
    differences over the shared seeds (the quantity the CI and p refer to),
    while mean_a/mean_b are always over all runs given.
    """

    test: Literal["paired", "welch", "none"]
    n_a: int
    n_b: int
    n_pairs: int
    mean_a: float
    mean_b: float
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    p_a_beats_b: float
    significant: bool
    level: float
    reason: str = ""
    t: float = NAN
    df: float = NAN


def _as_array(x: Sequence[float], name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=float).ravel()
    if not np.all(np.isfinite(arr)):
        # A NaN accuracy is a broken run, not a data point; fail loudly.
        raise ValueError(f"{name} contains non-finite values")
    return arr


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if x.size else NAN


def _shared_pairs(
    a: np.ndarray, b: np.ndarray, seeds_a: Sequence, seeds_b: Sequence
) -> tuple[np.ndarray, np.ndarray]:
    """Values of A and B at the seeds both share, aligned by seed (order of seeds_a)."""
    if len(seeds_a) != a.size or len(seeds_b) != b.size:
        raise ValueError("seeds_a/seeds_b must have one seed per run")
    if len(set(seeds_a)) != len(seeds_a) or len(set(seeds_b)) != len(seeds_b):
        # A repeated seed would make pairing ambiguous.
        raise ValueError("duplicate seeds within one model")
    idx_b = {s: i for i, s in enumerate(seeds_b)}
    pairs = [(i, idx_b[s]) for i, s in enumerate(seeds_a) if s in idx_b]
    ia = np.array([i for i, _ in pairs], dtype=int)
    ib = np.array([j for _, j in pairs], dtype=int)
    return a[ia], b[ib]


def _degenerate(diff: float) -> tuple[float, float, float]:
    """(p, ci_low, ci_high) when the t statistic's denominator is exactly zero.

    scipy returns NaN (0/0) or +-inf with a warning here.  We decide:
    no difference at all -> p = 1, CI [0, 0]; a constant non-zero difference
    -> p = 0, CI [diff, diff]: the data show no noise, so the separation is
    certain *given the data* (with more seeds it may not be).
    """
    if diff == 0.0:
        return 1.0, 0.0, 0.0
    return 0.0, diff, diff


def compare(
    a: Sequence[float],
    b: Sequence[float],
    *,
    seeds_a: Sequence | None = None,
    seeds_b: Sequence | None = None,
    level: float = 0.05,
) -> Comparison:
    """Compare accuracies of model A runs with model B runs.

    Paired t test when seeds are given and A, B share >= 2 seeds: the same
    seed shares data order/init, so pairing removes that shared noise.
    Otherwise Welch's t test, which does not assume equal variances.
    The CI is the (1 - level) t interval for diff; significant is p < level.
    p_a_beats_b: chance a random run of A beats one of B (ties count 1/2):
    over shared seeds when paired, else Mann-Whitney U / (n_a * n_b).
    """
    if not 0.0 < level < 1.0:
        raise ValueError("level must be in (0, 1)")
    xa, xb = _as_array(a, "a"), _as_array(b, "b")
    n_a, n_b = int(xa.size), int(xb.size)
    mean_a, mean_b = _mean(xa), _mean(xb)

    pa = pb = np.empty(0)
    if seeds_a is not None and seeds_b is not None:
        pa, pb = _shared_pairs(xa, xb, seeds_a, seeds_b)
    n_pairs = int(pa.size)

    if n_pairs >= 2:
        d = pa - pb
        diff = float(np.mean(d))
        p_beats = float(np.mean((d > 0) + 0.5 * (d == 0)))
        if np.ptp(d) == 0.0:  # exact: all differences equal, sd = 0
            p, lo, hi = _degenerate(diff)
            t_stat, df = (NAN if diff == 0.0 else math.copysign(math.inf, diff)), float(n_pairs - 1)
        else:
            res = stats.ttest_rel(pa, pb)
            ci = res.confidence_interval(confidence_level=1.0 - level)
            p, lo, hi = float(res.pvalue), float(ci.low), float(ci.high)
            t_stat, df = float(res.statistic), float(res.df)
        test: Literal["paired", "welch", "none"] = "paired"
        reason = ""
    elif n_a >= 2 and n_b >= 2:
        diff = mean_a - mean_b
        p_beats = float(stats.mannwhitneyu(xa, xb).statistic) / (n_a * n_b)
        if np.ptp(xa) == 0.0 and np.ptp(xb) == 0.0:  # both constant: se = 0
            p, lo, hi = _degenerate(diff)
            t_stat = NAN if diff == 0.0 else math.copysign(math.inf, diff)
            df = NAN  # Welch-Satterthwaite df is 0/0 here
        else:
            res = stats.ttest_ind(xa, xb, equal_var=False)
            ci = res.confidence_interval(confidence_level=1.0 - level)
            p, lo, hi = float(res.pvalue), float(ci.low), float(ci.high)
            t_stat, df = float(res.statistic), float(res.df)
        test = "welch"
        reason = ""
    else:
        # No variance estimate on some side: any p-value would be invented.
        test = "none"
        side = "A" if n_a < 2 else "B"
        reason = f"fewer than 2 seeds for {side} (n_a={n_a}, n_b={n_b}, shared seeds={n_pairs})"
        diff = mean_a - mean_b if n_a and n_b else NAN
        p_beats = (
            float(stats.mannwhitneyu(xa, xb).statistic) / (n_a * n_b) if n_a and n_b else NAN
        )
        p = lo = hi = t_stat = df = NAN

    return Comparison(
        test=test,
        n_a=n_a,
        n_b=n_b,
        n_pairs=n_pairs,
        mean_a=mean_a,
        mean_b=mean_b,
        diff=diff,
        ci_low=lo,
        ci_high=hi,
        p_value=p,
        p_a_beats_b=p_beats,
        significant=bool(p < level),  # NaN < level is False
        level=level,
        reason=reason,
        t=t_stat,
        df=df,
    )


def rank_with_ties(
    groups: Mapping[str, Sequence[float]],
    *,
    seeds: Mapping[str, Sequence] | None = None,
    level: float = 0.05,
) -> list[str]:
    """Labels "tied for best" among rows of one budget, best mean first.

    Why: bolding only the top mean overstates a win that seed noise could
    flip.  Rule: if the best-mean row is significantly ahead of the runner-up,
    only it is best; otherwise the best plus every row not significantly
    worse than it (each compared with the best, no multiple-test correction;
    rows with < 2 runs cannot be shown worse, so they stay tied).  Rows with
    no runs are ignored.  seeds (label -> seeds) enables paired tests.
    """
    seeds = seeds or {}
    rows = {k: list(v) for k, v in groups.items() if len(v) > 0}
    if not rows:
        return []
    order = sorted(rows, key=lambda k: (-float(np.mean(rows[k])), k))
    best = order[0]

    def vs_best(other: str) -> Comparison:
        return compare(
            rows[best], rows[other],
            seeds_a=seeds.get(best) if other in seeds else None,
            seeds_b=seeds.get(other) if best in seeds else None,
            level=level,
        )

    def ahead(c: Comparison) -> bool:
        return c.significant and c.diff > 0

    if len(order) == 1 or ahead(vs_best(order[1])):
        return [best]
    return [best] + [k for k in order[1:] if not ahead(vs_best(k))]
