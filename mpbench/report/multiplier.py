"""Compute-equivalent multipliers: how much compute the reference would need for a row's accuracy.

Numbers in, numbers out: no files, no report rows, no units. A *cost* is anything positive where
less is cheaper (MACs of the matched model, or training seconds per image); a *reference* is a
list of points (cost, top-1 of every seed at that cost).

The reference curve (:func:`fit_curve`): the mean top-1 of each reference point, made
non-decreasing in cost by isotonic regression (least squares, weighted by the number of seeds;
equal to the means whenever they already rise with cost), joined by straight lines in
log(cost). The cost the reference needs to reach accuracy ``y`` is the smallest cost at which
that curve reaches ``y``; the **multiplier** of a row is that cost divided by the row's cost
(> 1: the row is worth more than its compute in reference terms).

Extrapolation only when asked (``extrapolate=True``) and never beyond one budget step: below
the lowest point the curve's first segment is extended down by the log-cost distance of that
segment (above the highest point, the last segment up by its own), and a multiplier read there
is marked ``extrapolated``. A flat end segment is not extended. Beyond that, an accuracy has no
multiplier, only its position (``below``/``above`` the reference's range) and the bound the
curve does give (below: at most lowest cost / row cost; above: more than highest cost / row
cost, if the reference gets there at all).

Interval (:func:`multiplier`): a percentile bootstrap over seeds, ``RESAMPLES`` resamples from
``numpy.random.default_rng(seed)``. Each resample draws the row's seeds and, independently,
the seeds of every reference point with replacement, refits the curve and reads the
multiplier off it. A resample whose accuracy falls outside its curve counts as lower (below)
or higher (above) than every multiplier on the curve (the order the bound implies); when such
resamples reach the interval's tail, that end is open (``None``), never an invented number.
The quantiles are order statistics (numpy's ``inverted_cdf``), so each end is a multiplier of
some resample.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["RESAMPLES", "LEVEL", "SEED", "Curve", "Multiplier", "isotonic", "fit_curve",
           "cost_needed", "multiplier"]

RESAMPLES = 10_000
LEVEL = 0.95
SEED = 0
BELOW, INSIDE, ABOVE = "below", "inside", "above"


def isotonic(values: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """Weighted least-squares non-decreasing fit along the last axis (vectorised over the
    others), by the max-min formula f_i = max_{j<=i} min_{k>=i} mean(values[j..k]); cheap for
    the handful of budgets a suite has."""
    y = np.asarray(values, dtype=float)
    w = np.asarray(weights, dtype=float)
    k = y.shape[-1]
    zero = np.zeros(y.shape[:-1] + (1,))
    sy = np.concatenate([zero, np.cumsum(y * w, axis=-1)], axis=-1)
    sw = np.concatenate([[0.0], np.cumsum(w)])
    j, e = np.triu_indices(k)  # block j..e (inclusive), j <= e
    blocks = np.full(y.shape[:-1] + (k, k), np.nan)
    blocks[..., j, e] = (sy[..., e + 1] - sy[..., j]) / (sw[e + 1] - sw[j])
    out = np.empty_like(y)
    for i in range(k):
        inner = np.nanmin(blocks[..., : i + 1, i:], axis=-1)  # min over k >= i, per j <= i
        out[..., i] = inner.max(axis=-1)
    return out


@dataclass(frozen=True)
class Curve:
    """A reference curve: costs ascending, the fitted (non-decreasing) top-1 at each, the raw
    means and the seeds behind each point."""

    costs: tuple[float, ...]
    top1: tuple[float, ...]
    means: tuple[float, ...]
    n: tuple[int, ...]

    @property
    def low(self) -> float:
        return self.top1[0]

    @property
    def high(self) -> float:
        return self.top1[-1]

    def cost_at(self, y: float, extrapolate: bool = False) -> tuple[float | None, str, bool]:
        """The smallest cost at which the curve (extended by one step when ``extrapolate``)
        reaches ``y``, or None; the position (``below``/``inside``/``above`` the fitted
        range) and whether the cost was extrapolated."""
        logc, pos = cost_needed(np.log(self.costs), np.asarray(self.top1)[None, :],
                                np.asarray([y], dtype=float), extrapolate=extrapolate)
        p = int(pos[0])
        position = BELOW if p < 0 else ABOVE if p > 0 else INSIDE
        return (math.exp(logc[0]) if abs(p) < 2 else None), position, abs(p) == 1


def _points(costs: Sequence[float], samples: Sequence[Sequence[float]]
            ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Reference points sorted by cost; points of equal cost pool their seeds."""
    if len(costs) != len(samples):
        raise ValueError("one list of seed accuracies per reference cost")
    pooled: dict[float, list[float]] = {}
    for c, s in zip(costs, samples):
        c = float(c)
        if not c > 0 or not math.isfinite(c):
            raise ValueError(f"reference cost {c!r} is not a positive number")
        vals = [float(v) for v in s]
        if not vals or not all(math.isfinite(v) for v in vals):
            raise ValueError(f"reference point at cost {c:g} has no finite accuracies")
        pooled.setdefault(c, []).extend(vals)
    order = sorted(pooled)
    return np.array(order), [np.array(pooled[c]) for c in order]


def fit_curve(costs: Sequence[float], samples: Sequence[Sequence[float]]) -> Curve:
    """The reference curve from each point's cost and per-seed top-1 (see the module doc)."""
    c, s = _points(costs, samples)
    means = np.array([v.mean() for v in s])
    n = [len(v) for v in s]
    fitted = isotonic(means, n)
    return Curve(tuple(c.tolist()), tuple(fitted.tolist()), tuple(means.tolist()), tuple(n))


def cost_needed(log_costs: np.ndarray, fitted: np.ndarray, y: np.ndarray, *,
                extrapolate: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """For each row b of ``fitted`` (non-decreasing along the last axis, at ``log_costs``):
    the log of the smallest cost where the piecewise-linear curve reaches ``y[b]`` and the
    position: 0 inside the fitted range, -1/+1 below/above it but within the one-step
    extension (only with ``extrapolate``), -2/+2 beyond (log cost NaN)."""
    log_costs = np.asarray(log_costs, dtype=float)
    fitted = np.asarray(fitted, dtype=float)
    y = np.asarray(y, dtype=float)
    rows = np.arange(len(y))
    f0, f1, fk, fj = fitted[:, 0], fitted[:, 1], fitted[:, -1], fitted[:, -2]
    step_lo, step_hi = log_costs[1] - log_costs[0], log_costs[-1] - log_costs[-2]
    pos = np.where(y < f0, -2, np.where(y > fk, 2, 0))
    first = np.argmax(fitted >= y[:, None], axis=1)  # first point at or above y
    hi = np.clip(first, 0, len(log_costs) - 1)
    lo = np.clip(hi - 1, 0, None)
    f_lo, f_hi = fitted[rows, lo], fitted[rows, hi]
    rise = f_hi - f_lo
    t = np.divide(y - f_lo, rise, out=np.zeros_like(y), where=rise > 0)
    logc = log_costs[lo] + t * (log_costs[hi] - log_costs[lo])
    logc = np.where(first == 0, log_costs[0], logc)
    if extrapolate:  # the end segments, extended by their own log-cost length, no further
        rise_lo, rise_hi = f1 - f0, fk - fj
        below = (pos == -2) & (rise_lo > 0) & (y >= f0 - rise_lo)
        above = (pos == 2) & (rise_hi > 0) & (y <= fk + rise_hi)
        with np.errstate(divide="ignore", invalid="ignore"):
            logc = np.where(below, log_costs[0] - (f0 - y) / rise_lo * step_lo, logc)
            logc = np.where(above, log_costs[-1] + (y - fk) / rise_hi * step_hi, logc)
        pos = np.where(below, -1, np.where(above, 1, pos))
    return np.where(np.abs(pos) < 2, logc, np.nan), pos


@dataclass(frozen=True)
class Multiplier:
    """A row's multiplier against a reference curve.

    value: reference cost needed / row cost, None where the row's mean is beyond the curve
    (and its one-step extension when extrapolating); position: ``below``/``inside``/``above``
    the fitted range; extrapolated: the value was read off the extension; cost_needed: the
    reference cost at the row's mean (or None); bound: beyond the curve, lowest (below: an
    upper bound) or highest (above: a lower bound) reference cost / row cost; ci_low/ci_high:
    the ``level`` bootstrap interval, None where open (a tail of resamples beyond the curve)
    or not estimable (``no_interval`` says why); share_below/share_above: fractions of
    resamples beyond the curve."""

    value: float | None
    position: str
    extrapolated: bool
    top1: float
    cost: float
    cost_needed: float | None
    bound: float | None
    ci_low: float | None
    ci_high: float | None
    share_below: float
    share_above: float
    resamples: int
    level: float
    no_interval: str
    curve: Curve


def _resampled_means(rng: np.random.Generator, sample: np.ndarray, resamples: int) -> np.ndarray:
    idx = rng.integers(0, len(sample), size=(resamples, len(sample)))
    return sample[idx].mean(axis=1)


def multiplier(cost: float, top1: Sequence[float], ref_costs: Sequence[float],
               ref_samples: Sequence[Sequence[float]], *, resamples: int = RESAMPLES,
               level: float = LEVEL, seed: int = SEED, extrapolate: bool = False) -> Multiplier:
    """The multiplier of a row (its cost and per-seed top-1) against the reference points,
    with its bootstrap interval (module doc). Needs two or more reference costs; the interval
    needs two or more seeds in the row and at every reference point. Costs are taken as
    given (not resampled)."""
    cost = float(cost)
    if not cost > 0 or not math.isfinite(cost):
        raise ValueError(f"row cost {cost!r} is not a positive number")
    row = np.asarray(top1, dtype=float)
    if row.size == 0 or not np.all(np.isfinite(row)):
        raise ValueError("the row needs finite per-seed accuracies")
    if resamples < 1:
        raise ValueError("resamples must be positive")
    c, s = _points(ref_costs, ref_samples)
    if len(c) < 2:
        raise ValueError("a reference curve needs two or more distinct costs")
    curve = fit_curve(c, s)
    y = float(row.mean())
    needed, position, extrapolated = curve.cost_at(y, extrapolate)
    bound = None if needed is not None else {BELOW: c[0] / cost, ABOVE: c[-1] / cost}[position]

    few = ([] if len(row) >= 2 else ["the row"]) + \
        [f"the reference at {ci:g}" for ci, si in zip(c, s) if len(si) < 2]
    lo = hi = None
    share_below = share_above = 0.0
    if not few:
        rng = np.random.default_rng(seed)
        ref_means = np.stack([_resampled_means(rng, si, resamples) for si in s], axis=1)
        row_means = _resampled_means(rng, row, resamples)
        fitted = isotonic(ref_means, [len(si) for si in s])
        logc, pos = cost_needed(np.log(c), fitted, row_means, extrapolate=extrapolate)
        m = np.where(np.abs(pos) < 2, np.exp(logc - math.log(cost)),
                     np.where(pos < 0, -np.inf, np.inf))
        share_below, share_above = float(np.mean(pos == -2)), float(np.mean(pos == 2))
        tail = (1.0 - level) / 2.0
        q_lo, q_hi = np.quantile(m, [tail, 1.0 - tail], method="inverted_cdf")
        lo = float(q_lo) if math.isfinite(q_lo) else None
        hi = float(q_hi) if math.isfinite(q_hi) else None
    return Multiplier(
        value=needed / cost if needed is not None else None, position=position,
        extrapolated=extrapolated, top1=y, cost=cost, cost_needed=needed,
        bound=None if bound is None else float(bound), ci_low=lo, ci_high=hi,
        share_below=share_below, share_above=share_above,
        resamples=resamples if not few else 0, level=level,
        no_interval=("fewer than 2 seeds for " + ", ".join(few)) if few else "", curve=curve)
