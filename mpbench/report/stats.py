"""Statistics for mpbench reports: is model A really better than model B?

Each model is trained with a few seeds, so each side is a small sample of
top-1 accuracies.  A single "A beat B" can be seed noise; these functions say
how sure we can be.  All distributions come from scipy.stats.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from scipy import stats

__all__ = ["Comparison", "compare", "holm", "correct", "rank_with_ties", "CORRECTIONS"]

CORRECTIONS = ("holm", "none")

NAN = float("nan")


@dataclass(frozen=True)
class Comparison:
    """Result of comparing model A with model B (A minus B throughout).

    test: "paired" (t test over shared seeds), "welch" (unequal-variance t
    test) or "none" (too few runs; p_value/ci/t/df are NaN, reason says why).
    exact: "" for the t test, else the exact rank test used because the t
    statistic is undefined (no spread): "sign" (paired) or "mann-whitney"
    (unpaired); ci is then NaN (no t interval exists).
    p_adjusted/correction: the p-value after a multiple-test correction over
    a family of comparisons (:func:`correct`); significant is p_adjusted <
    level.  A lone comparison has correction "none" and p_adjusted = p_value.
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
    exact: Literal["", "sign", "mann-whitney"] = ""
    p_adjusted: float = NAN
    correction: str = "none"


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


def _no_spread(x: np.ndarray) -> bool:
    """All values equal up to float rounding: 91.23 - 90.12 and 92.34 - 91.23 differ in the
    last bits, and a t test on that "spread" would give a p-value of about 0."""
    return bool(np.ptp(x) <= 1e-9 * max(1.0, float(np.max(np.abs(x)))))


def _sign_test(d: np.ndarray) -> float:
    """Exact two-sided sign test of paired differences (zeros dropped).

    Used when every difference is the same, where the t statistic is 0/0 or
    +-inf: n differences all of one sign give p = 2 / 2^n, never 0 (accuracies
    are quantised, so equal differences over 2-3 seeds happen by chance).
    """
    nonzero = d[np.abs(d) > 1e-9 * max(1.0, float(np.max(np.abs(d))))]
    if nonzero.size == 0:
        return 1.0
    return float(stats.binomtest(int(np.sum(nonzero > 0)), int(nonzero.size)).pvalue)


def _mann_whitney(a: np.ndarray, b: np.ndarray) -> float:
    """Exact two-sided Mann-Whitney p when both samples are constant (se = 0)."""
    if math.isclose(float(np.mean(a)), float(np.mean(b)), rel_tol=1e-9, abs_tol=1e-9):
        return 1.0
    return float(stats.mannwhitneyu(a, b, method="exact").pvalue)


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

    exact = ""
    pa = pb = np.empty(0)
    if seeds_a is not None and seeds_b is not None:
        pa, pb = _shared_pairs(xa, xb, seeds_a, seeds_b)
    n_pairs = int(pa.size)

    if n_pairs >= 2:
        d = pa - pb
        diff = float(np.mean(d))
        p_beats = float(np.mean((d > 0) + 0.5 * (d == 0)))
        if _no_spread(d):  # all differences equal, sd = 0: t undefined, exact sign test
            p, lo, hi, exact = _sign_test(d), NAN, NAN, "sign"
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
        if _no_spread(xa) and _no_spread(xb):  # both constant: se = 0, exact rank test
            p, lo, hi, exact = _mann_whitney(xa, xb), NAN, NAN, "mann-whitney"
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
        exact=exact,
        p_adjusted=p,
    )


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the order given (NaN stays NaN, not counted).

    With the m finite p-values sorted ascending, p_(i) (i = 1..m) becomes
    max over j <= i of min(1, (m - j + 1) p_(j)): rejecting where the adjusted
    p < level keeps the chance of any false "significant" in the family at
    most level, whatever the dependence between the tests.
    """
    finite = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    m = len(finite)
    out = [NAN] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def correct(comparisons: Mapping[str, Comparison], method: str = "holm") -> dict[str, Comparison]:
    """The comparisons of one family (e.g. every row of a budget against its best) with
    ``p_adjusted`` and ``significant`` corrected for their number (``method``: holm, none)."""
    if method not in CORRECTIONS:
        raise ValueError(f"correction must be one of {', '.join(CORRECTIONS)}")
    keys = list(comparisons)
    raw = [comparisons[k].p_value for k in keys]
    adjusted = holm(raw) if method == "holm" else raw
    return {k: replace(comparisons[k], p_adjusted=q, correction=method,
                       significant=bool(q < comparisons[k].level))
            for k, q in zip(keys, adjusted)}


def rank_with_ties(
    groups: Mapping[str, Sequence[float]],
    *,
    seeds: Mapping[str, Sequence] | None = None,
    level: float = 0.05,
    correction: str = "holm",
) -> list[str]:
    """Labels "tied for best" among rows of one budget, best mean first.

    Why: bolding only the top mean overstates a win that seed noise could
    flip.  Rule: the best-mean row is alone best only when it is significantly
    ahead of *every* other row (each compared with it, the k - 1 p-values
    corrected by ``correction``); otherwise the best plus every row not
    significantly worse than it.  A row with < 2 runs can neither be shown
    worse nor be beaten, so it stays tied.  Rows with no runs are ignored.
    seeds (label -> seeds) enables paired tests.
    """
    seeds = seeds or {}
    rows = {k: list(v) for k, v in groups.items() if len(v) > 0}
    if not rows:
        return []
    order = sorted(rows, key=lambda k: (-float(np.mean(rows[k])), k))
    best = order[0]
    family = correct({
        other: compare(
            rows[best], rows[other],
            seeds_a=seeds.get(best) if other in seeds else None,
            seeds_b=seeds.get(other) if best in seeds else None,
            level=level,
        )
        for other in order[1:]
    }, correction)
    behind = {k for k, c in family.items() if c.significant and c.diff > 0}
    if len(behind) == len(order) - 1:
        return [best]
    return [best] + [k for k in order[1:] if k not in behind]
