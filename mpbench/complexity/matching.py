"""Budget matching: turn each model's complexity knob until its MACs land on a budget.

A suite names budgets in GMACs; every registered family declares one knob (width, widen
factor, base width, per-path width, member width or depth, see :class:`mpbench.Knob`). For a
budget B and tolerance T (default 2%), :func:`match_budget` searches the knob and returns the
model whose MACs are closest to B, measured with :mod:`mpbench.complexity` at the suite's input
size and class count.

Rules
-----
Every match is within ±T of B, or it is refused with :class:`BudgetError` (a one-line
:class:`~mpbench.errors.UserError`) before anything trains:

* ``int`` knobs (widths): candidates are the multiples of ``step`` in [low, high]; ``step``
  may depend on the other arguments (e.g. per-path width divisible by ``paths``). The closest
  candidate must be within ±T of B.
* ``float`` knobs (multipliers): searched continuously in [low, high] (values rounded to 4
  decimals); must land within ±T.
* ``choice`` knobs (depth): the nearest choice is taken. If it is not within ±T, the knob's
  ``adjust`` argument (for the CIFAR ResNets the base ``width``, a float whose stage widths
  are rounded per stage) is searched like a float knob in ``adjust_range`` times its
  configured value (default x0.8..x1.25; ResNet depth steps are at most 75% apart in MACs, so
  the nearest depth is at most ~32% off and a width change of at most ~15% fixes it). The
  match records both: ``knob_value`` is the depth, ``adjust`` holds the adjusted argument
  (e.g. ``{"width": 16.7}``), ``knob_text`` reads ``56 (width 16.7)``, and ``args`` carry both
  so ``get_entry(name).fn(**args)`` rebuilds the counted model. A choice knob without
  ``adjust`` that misses ±T is refused.
* **No knob at an end of its range.** An ``int`` or ``float`` knob (or a choice knob's
  adjusted argument) that ends at its low or high bound, or for a float at a value whose
  model costs exactly what the bound's does (channels are rounded, so a float knob has
  plateaus), is refused even within ±T: the search was clipped, and the model is either the
  smallest/largest the family allows or the budget lies beyond it. A choice knob is refused at its shallowest (deepest) choice only
  when the budget lies below (above) that choice by more than T: there the adjustment would
  be standing in for depths the family does not have.
* **No degenerate structure.** The matched model is built and run once; among its
  convolutions that see a spatial map larger than 1x1 (1x1 convolutions on pooled features
  are the fully-connected layers of a gate, e.g. SE, SK, split attention, and are not
  checked), a grouped one with fewer than 2 input channels per group (shrunk to
  depthwise) or fewer than 4 output channels (a stage narrower than 4 channels) refuses the
  match. A kind of problem that the model already has as configured (its knob at the
  configured value) is its design, e.g. depthwise convolutions, and is not held against it.
* No knob: the model is measured as given and refused if it is off by more than T.

MACs are assumed to grow monotonically with the knob. The search brackets the budget with a
power-law secant (MACs ~ a·knob^p, p re-estimated from the points measured so far), falling
back to bisection, starting from the family's default knob value. It steers by
:func:`mpbench.complexity.estimate_model` (the same convention without a TorchScript trace,
several times cheaper, exact to ~0.01%), and then counts its answer with fvcore; if the count
disagrees with the estimate, the search is repeated with the estimate rescaled, and when two
neighbouring candidates are nearly equally close both are counted. Every reported number is
an fvcore count. A match typically costs 2-4 estimates and one fvcore trace. Results are
deterministic (the search never depends on what is cached) and cached per (model, arguments,
budget, input size, classes, tolerance).
"""
from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from mpbench.complexity.counting import (InputSize, cache_generation, count_model, estimate_model,
                                         freeze, model_args)
from mpbench.errors import UserError

__all__ = ["Match", "BudgetError", "match_budget", "describe", "match_suite", "suite_geometry",
           "degenerate_structure"]

_FLOAT_DECIMALS = 4
_MAX_COUNTS = 40  # safety net; a search normally needs 2-6 estimates


@dataclass(frozen=True)
class Match:
    """A model at a budget: its full arguments and what it achieves.

    ``args`` are the complete builder arguments (registry defaults, the user's arguments, the
    knob value, ``num_classes`` and ``in_chans``): ``get_entry(name).fn(**args)`` rebuilds
    the measured model. ``deviation`` is ``(gmacs - budget) / budget``; ``budget_gmacs`` and
    ``deviation`` are NaN for a model measured without a budget. ``adjust`` names the
    arguments a choice knob's secondary search changed (``{"width": 16.7}``), else empty.
    """

    name: str
    args: dict
    knob: str | None
    knob_value: Any
    budget_gmacs: float
    gmacs: float
    params: int
    deviation: float
    macs: int = 0
    label: str | None = None
    adjust: dict = field(default_factory=dict)

    @property
    def display(self) -> str:
        return self.label or self.name

    @property
    def knob_text(self) -> str:
        """The knob value as a table shows it: ``56``, or ``56 (width 16.7)`` when a choice
        knob's ``adjust`` argument was searched too."""
        extra = ", ".join(f"{k} {v:g}" for k, v in self.adjust.items())
        return f"{self.knob_value} ({extra})" if extra else f"{self.knob_value}"

    def as_dict(self) -> dict:
        out = asdict(self)
        for key in ("budget_gmacs", "deviation"):
            if isinstance(out[key], float) and math.isnan(out[key]):
                out[key] = None
        return out


class BudgetError(UserError):
    """A model cannot reach a budget fairly: not within tolerance, only with its knob at an
    end of its range, or only with a degenerate structure. ``closest`` is the nearest it
    gets (the refused match itself for the last two); ``reason`` says which, in a few words."""

    def __init__(self, message: str, *, name: str, budget_gmacs: float, tolerance: float,
                 closest: Match | None = None, label: str | None = None,
                 reason: str = "off budget"):
        super().__init__(message)
        self.reason = reason  # short: "off budget", "knob at range end", "degenerate"
        self.name = name
        self.budget_gmacs = budget_gmacs
        self.tolerance = tolerance
        self.closest = closest
        self.label = label

    @property
    def display(self) -> str:
        return self.label or self.name

    def __reduce__(self):  # picklable across processes despite keyword-only fields
        return (_rebuild_budget_error, (str(self), self.__dict__))


def _rebuild_budget_error(message: str, state: dict) -> BudgetError:
    return BudgetError(message, **state)


# --------------------------------------------------------------------------- search

def _grid(knob, args: dict) -> list:
    """Candidate knob values in increasing-MAC order."""
    if knob.kind == "choice":
        values = list(knob.values)
        if not values:
            raise UserError(f"knob '{knob.name}' has no choices")
        return sorted(values) if all(_positive_number(v) for v in values) else values
    step = knob.step_for(args)
    if step < 1:
        raise UserError(f"knob '{knob.name}': step must be a positive integer, got {step}")
    first, last = math.ceil(knob.low / step) * step, math.floor(knob.high / step) * step
    if first > last:
        raise UserError(f"knob '{knob.name}': no multiple of {step} in [{knob.low:g}, "
                        f"{knob.high:g}] for these arguments")
    return list(range(int(first), int(last) + 1, step))


def _positive_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


def _secant(points: list[tuple[float, float]], target: float, power: float) -> float | None:
    """Where log-MACs reaches log(target) on the line through two (log x, log MACs) points
    (or with slope ``power`` through one point). None when the points are flat/decreasing."""
    if len(points) >= 2:
        (x1, y1), (x2, y2) = points[-2], points[-1]
        if x2 == x1 or y2 == y1:
            return None
        power = (y2 - y1) / (x2 - x1)
        if power <= 0:
            return None
    x1, y1 = points[-1]
    return x1 + (math.log(target) - y1) / power


class _Probe:
    """MACs of candidates, remembered; refuses to run away if MACs are not monotone."""

    def __init__(self, macs_of: Callable[[Any], float]):
        self.macs_of = macs_of
        self.seen: dict[Any, float] = {}

    def __call__(self, value: Any) -> float:
        if value not in self.seen:
            if len(self.seen) >= _MAX_COUNTS:
                raise RuntimeError("budget search did not converge; are MACs monotone in the knob?")
            self.seen[value] = self.macs_of(value)
        return self.seen[value]


def _nearest(sorted_xs: list[float], x: float) -> int:
    k = bisect_left(sorted_xs, x)
    if k == 0:
        return 0
    if k == len(sorted_xs):
        return k - 1
    return k if sorted_xs[k] - x < x - sorted_xs[k - 1] else k - 1


def _search_grid(grid: Sequence, probe: _Probe, target: float, start: int,
                 power: float) -> list[int]:
    """Indices of the grid values bracketing ``target`` (one index at either end of the
    grid), closest first (ties: the smaller)."""
    n = len(grid)
    numeric = all(_positive_number(v) for v in grid)
    xs = [math.log(v) if numeric else float(i) for i, v in enumerate(grid)]
    lo, hi = -1, n  # invariant: MACs(grid[lo]) <= target < MACs(grid[hi]) (sentinels outside)
    i, sides, points = start, [], []
    while True:
        macs = probe(grid[i])
        if macs <= target:
            lo, side = i, "lo"
        else:
            hi, side = i, "hi"
        sides.append(side)
        if macs > 0:
            points.append((xs[i], math.log(macs)))
        if hi - lo <= 1:
            break
        bracketed = 0 <= lo and hi < n
        if bracketed and probe(grid[lo]) > 0:  # secant across the bracket: most accurate
            refs = [(xs[lo], math.log(probe(grid[lo]))), (xs[hi], math.log(probe(grid[hi])))]
        else:
            refs = points[-2:]
        x = _secant(refs, target, power)
        if x is None or (bracketed and sides[-2:] == [side, side]):  # slow progress: bisect
            i = (max(lo, 0) + min(hi, n - 1) + 1) // 2
        else:
            j = _nearest(xs, x) if numeric else min(range(n), key=lambda k: (abs(xs[k] - x), k))
            i = min(max(j, lo + 1), hi - 1)
        if i in (lo, hi):  # only possible for one-sided brackets; keeps the invariant
            i = (lo + hi) // 2
    candidates = [j for j in (lo, hi) if 0 <= j < n]
    return sorted(candidates, key=lambda j: (abs(probe(grid[j]) - target), j))


def _search_float(low: float, high: float, probe: _Probe, target: float, start: float,
                  tolerance: float, power: float) -> float:
    """A value in [low, high] (4 decimals) whose MACs are closest to ``target`` among those
    tried. Channels are whole numbers, so MACs are a step function of a float knob; each try
    costs a model build. Hence the search stops when the closest try is within tolerance/4
    (tolerance/2 from the third try, the tolerance itself from the fifth), when both sides of
    the bracket are within tolerance, or when the bracket has closed on a single jump (two
    tries in a row found no new MAC value, or the ends are 0.1% apart)."""
    eps = 10 ** -_FLOAT_DECIMALS
    lo, hi = None, None  # tried values with MACs <= target / > target
    x = round(min(max(start, low), high), _FLOAT_DECIMALS)
    points, sides, stale = [], [], 0
    while True:
        known = set(probe.seen.values())
        macs = probe(x)
        stale = stale + 1 if macs in known else 0
        dev, tries = abs(macs - target) / target, len(probe.seen)
        if dev <= tolerance * (0.25 if tries <= 2 else 0.5 if tries <= 4 else 1.0):
            break
        if macs <= target:
            lo, side = x, "lo"
        else:
            hi, side = x, "hi"
        sides.append(side)
        if macs > 0:
            points.append((math.log(x), math.log(macs)))
        if (lo is not None and lo >= high) or (hi is not None and hi <= low):
            break  # budget beyond the knob's range
        if lo is not None and hi is not None:
            near = max(abs(probe.seen[v] - target) for v in (lo, hi)) <= tolerance * target
            if near or stale >= 2 or hi - lo <= max(eps, 1e-3 * hi):
                break
        a = lo if lo is not None else low
        b = hi if hi is not None else high
        guess = _secant(points[-2:], target, power)
        if guess is None or (lo is not None and hi is not None and sides[-2:] == [side, side]):
            nxt = (a + b) / 2
        else:
            nxt = min(max(math.exp(guess), a), b)
        nxt = round(nxt, _FLOAT_DECIMALS)
        if nxt in probe.seen:  # rounding collided with a tried value: step inwards
            nxt = round((a + b) / 2, _FLOAT_DECIMALS)
            if nxt in probe.seen:
                break
        x = nxt
    return min(probe.seen, key=lambda v: (abs(probe.seen[v] - target), v))


# --------------------------------------------------------------------------- matching

_MATCH_CACHE: dict[tuple, Match | BudgetError] = {}


def _geometry_key(input_size: InputSize, num_classes: int) -> tuple:
    return tuple(int(s) for s in input_size), int(num_classes)


def describe(name: str, args: dict | None = None, budget_gmacs: float | None = None, *,
             input_size: InputSize = (3, 32, 32), num_classes: int = 100,
             label: str | None = None) -> Match:
    """Measure a model as given (no search); compare with ``budget_gmacs`` if one is given."""
    from mpbench.registry import get_entry

    entry = get_entry(name)
    full = model_args(entry, args, input_size=input_size, num_classes=num_classes)
    c = count_model(name, args, input_size=input_size, num_classes=num_classes)
    knob = entry.knob.name if entry.knob else None
    budget = math.nan if budget_gmacs is None else float(budget_gmacs)
    return Match(name, full, knob, full.get(knob) if knob else None, budget, c.gmacs, c.params,
                 (c.gmacs - budget) / budget, c.macs, label)


def match_budget(name: str, budget_gmacs: float, args: dict | None = None, *,
                 input_size: InputSize = (3, 32, 32), num_classes: int = 100,
                 tolerance: float = 0.02) -> Match:
    """The variant of ``name`` (with ``args``) whose MACs are closest to ``budget_gmacs``.

    Raises :class:`BudgetError` when the closest is not acceptable (see the module docstring)
    and :class:`mpbench.complexity.UnsupportedOpError` when the model cannot be counted.
    """
    from mpbench.registry import get_entry

    if not budget_gmacs > 0:
        raise UserError(f"budget must be a positive number of GMACs, got {budget_gmacs}")
    if not 0 < tolerance < 1:
        raise UserError(f"tolerance must be in (0, 1), got {tolerance}")
    entry = get_entry(name)
    key = (name, entry.fn, entry.knob, freeze(args or {}), float(budget_gmacs),
           _geometry_key(input_size, num_classes), float(tolerance), cache_generation())
    hit = _MATCH_CACHE.get(key)
    if hit is None:
        try:
            hit = _match(entry, float(budget_gmacs), dict(args or {}), tuple(input_size),
                         int(num_classes), float(tolerance))
        except BudgetError as exc:
            hit = exc
        _MATCH_CACHE[key] = hit
    if isinstance(hit, BudgetError):
        raise BudgetError(str(hit), **hit.__dict__)
    return hit


def _match(entry, budget: float, args: dict, input_size: tuple, num_classes: int,
           tolerance: float) -> Match:
    """Search on fast estimates (scaled by ``rho``, the exact/estimate ratio at the last
    answer), then count the answer exactly; repeat if the exact count moves the answer."""
    geometry = dict(input_size=input_size, num_classes=num_classes)
    knob = entry.knob
    if knob is None:
        m = describe(entry.name, args, budget, **geometry)
        if abs(m.deviation) > tolerance:
            raise BudgetError(
                f"model {entry.name} cannot meet budget {budget:g} GMACs within "
                f"±{tolerance:.0%}: it has no complexity knob and is {m.gmacs:.4g} GMACs "
                f"({m.deviation:+.1%})", name=entry.name, budget_gmacs=budget,
                tolerance=tolerance, closest=m)
        return m

    def estimate(v) -> int:
        return estimate_model(entry.name, {**args, knob.name: v}, **geometry)

    def exact(v) -> int:
        return count_model(entry.name, {**args, knob.name: v}, **geometry).macs

    base = entry.args(**args)
    target = budget * 1e9
    default = base.get(knob.name)
    grid = _grid(knob, base) if knob.kind != "float" else None
    if grid is None:
        start = float(default) if _positive_number(default) else math.sqrt(knob.low * knob.high)
    elif default in grid:
        start = grid.index(default)
    elif _positive_number(default) and all(_positive_number(v) for v in grid):
        start = _nearest([math.log(v) for v in grid], math.log(default))
    else:
        start = len(grid) // 2

    rho, tried = 1.0, []
    for _ in range(4):
        probe = _Probe(lambda v, scale=rho: scale * estimate(v))
        if grid is None:
            value = _search_float(float(knob.low), float(knob.high), probe, target, start,
                                  tolerance, power=2.0)
        else:  # widths scale MACs ~quadratically, depths linearly: only a first guess
            ranked = _search_grid(grid, probe, target, start,
                                  power=1.0 if knob.kind == "choice" else 2.0)
            value = grid[ranked[0]]
        tried.append(value)
        new_rho = exact(value) / max(estimate(value), 1)
        if abs(new_rho - rho) <= 1e-4 * rho or tried.count(value) > 1:
            break
        rho = new_rho

    if grid is not None and len(ranked) == 2:
        # the other side of the bracket, exactly, if the estimate leaves the choice in doubt
        other = grid[ranked[1]]
        if abs(abs(probe(other) - target) - abs(exact(value) - target)) <= 0.005 * target:
            value = min((value, other), key=lambda v: (abs(exact(v) - target), grid.index(v)))
    m = describe(entry.name, {**args, knob.name: value}, budget, **geometry)

    def refuse(m: Match, reason: str, why: str):
        raise BudgetError(f"model {entry.name} cannot meet budget {budget:g} GMACs {why}",
                          name=entry.name, budget_gmacs=budget, tolerance=tolerance,
                          closest=m, reason=reason)

    off = f"within ±{tolerance:.0%}: closest is {{}} at {{:.4g}} GMACs ({{:+.1%}})"
    if knob.kind == "choice":
        i = grid.index(value)
        beyond = (i == 0 and m.macs > target) or (i == len(grid) - 1 and m.macs < target)
        if abs(m.deviation) > tolerance:
            if beyond or not knob.adjust:
                refuse(m, "off budget", off.format(f"{knob.name}={value}", m.gmacs, m.deviation))
            m = _adjust(entry, knob, args, value, budget, tolerance, geometry)
            name, w = next(iter(m.adjust.items()))
            if abs(m.deviation) > tolerance:
                refuse(m, "off budget", off.format(f"{knob.name}={m.knob_text}", m.gmacs,
                                                   m.deviation))
            low, high = _adjust_bounds(entry, knob, args)
            end = _at_end(w, low, high, lambda v: estimate_model(
                entry.name, {**args, knob.name: value, name: v}, **geometry))
            if end:
                at = f"{name}={w:g}" + ("," if w in (low, high) else ", which costs the same as")
                refuse(m, "knob at range end",
                       f"fairly: {knob.name}={value} needs {at} the {end} end of its range "
                       f"[{low:g}, {high:g}] ({m.gmacs:.4g} GMACs, {m.deviation:+.1%})")
    else:
        if abs(m.deviation) > tolerance:
            refuse(m, "off budget", off.format(f"{knob.name}={value}", m.gmacs, m.deviation))
        low, high = (knob.low, knob.high) if grid is None else (grid[0], grid[-1])
        end = _at_end(value, low, high, estimate if grid is None else None)
        if end:
            at = f"{knob.name}={value:g}" + ("," if value in (low, high) else
                                             ", which costs the same as")
            refuse(m, "knob at range end",
                   f"fairly: it needs {at} the {end} end of its range [{low:g}, {high:g}] "
                   f"({m.gmacs:.4g} GMACs, {m.deviation:+.1%})")
    problem = degenerate_structure(entry.name, m.args, args, **geometry)
    if problem:
        refuse(m, "degenerate", f"fairly: at {knob.name}={m.knob_text} ({m.gmacs:.4g} GMACs) "
                                f"{problem}")
    return m


def _at_end(value, low, high, estimate: Callable[[Any], int] | None) -> str | None:
    """"low"/"high" when ``value`` is an end of [low, high], or (float knobs, ``estimate``
    given) builds a model as costly as that end: channels are rounded, so a float knob has
    plateaus, and a value on the end's plateau is the end's model under another name. Only
    values within a factor 2 of an end are compared (a plateau is one rounding step wide)."""
    if value == low:
        return "low"
    if value == high:
        return "high"
    if estimate is not None:
        if value < 2 * low and estimate(value) == estimate(low):
            return "low"
        if value > high / 2 and estimate(value) == estimate(high):
            return "high"
    return None


def _adjust_bounds(entry, knob, args: dict) -> tuple[float, float]:
    """The range a choice knob's ``adjust`` argument is searched in: ``adjust_range`` times
    its configured value."""
    v0 = entry.args(**args).get(knob.adjust)
    if not _positive_number(v0):
        raise UserError(f"model {entry.name}: knob '{knob.name}' adjusts '{knob.adjust}', "
                        f"which must be a positive number, got {v0!r}")
    lo, hi = knob.adjust_range
    return round(v0 * lo, _FLOAT_DECIMALS), round(v0 * hi, _FLOAT_DECIMALS)


def _adjust(entry, knob, args: dict, value, budget: float, tolerance: float,
            geometry: dict) -> Match:
    """At choice ``value``, search ``knob.adjust`` as a float knob (estimates steer, fvcore
    counts the answer, as for float knobs); the Match records it in ``adjust``."""
    name = knob.adjust
    low, high = _adjust_bounds(entry, knob, args)
    start = float(entry.args(**args)[name])
    fixed = {**args, knob.name: value}
    target = budget * 1e9

    def estimate(w) -> int:
        return estimate_model(entry.name, {**fixed, name: w}, **geometry)

    def exact(w) -> int:
        return count_model(entry.name, {**fixed, name: w}, **geometry).macs

    rho, tried = 1.0, []
    for _ in range(4):
        probe = _Probe(lambda w, scale=rho: scale * estimate(w))
        w = _search_float(low, high, probe, target, start, tolerance, power=2.0)
        tried.append(w)
        new_rho = exact(w) / max(estimate(w), 1)
        if abs(new_rho - rho) <= 1e-4 * rho or tried.count(w) > 1:
            break
        rho = new_rho
    m = describe(entry.name, {**fixed, name: w}, budget, **geometry)
    return replace(m, adjust={name: w})


def degenerate_structure(name: str, args: dict, configured: dict | None = None, *,
                         input_size: InputSize = (3, 32, 32),
                         num_classes: int = 100) -> str | None:
    """Why the model built with ``args`` is structurally degenerate, or None.

    Only convolutions that see a spatial map larger than 1x1 are checked (1x1 convolutions on
    pooled features are a gate's fully-connected layers). Degenerate: a grouped convolution
    with fewer than 2 input channels per group, or fewer than 4 output channels. A kind of
    problem that the model built with ``configured`` (the arguments before matching) has too
    is its design, not a degeneration, and is ignored.
    """
    from mpbench.complexity.counting import conv_layout

    geometry = dict(input_size=input_size, num_classes=num_classes)

    def problems(a: dict) -> dict[str, str]:
        found: dict[str, str] = {}
        for c in conv_layout(name, a, **geometry):
            if math.prod(c.spatial) <= 1:
                continue
            if c.per_group < 2 and c.groups > 1:
                found.setdefault("group", f"grouped conv {c.name} has {c.per_group} input "
                                          f"channel per group ({c.groups} groups)")
            if c.out < 4:
                found.setdefault("narrow", f"conv {c.name} is {c.out} channels wide "
                                           f"(under 4)")
        return found

    found = problems(args)
    if found and configured is not None:
        design = problems(configured)
        found = {k: v for k, v in found.items() if k not in design}
    return next(iter(found.values()), None)


# --------------------------------------------------------------------------- suites

def suite_geometry(suite, data_root: str | Path | None = None,
                   num_classes: int | None = None,
                   source: str | None = None) -> tuple[tuple[int, int, int], int]:
    """(input_size, num_classes) the suite's models are built and counted with.

    CIFAR-10/100: 32x32, 10/100 classes. Synthetic: its ``image_size`` and ``num_classes``
    (10 when unset, as :mod:`mpbench.data` does). Image folders: class folders under
    ``train/`` (folder or one ``.tar.gz``) and the first image's size; ``num_classes``
    supplies the count when the data is not reachable, and must agree with it when it is.
    An image folder whose suite gives ``dataset.num_classes`` and its size (``crop_size``,
    ``loader: stream`` (224 by default) or an explicit ``image_size``) is planned from the
    suite alone, without reading the data (``mpbench flops --suite suites/imagenet.yaml``).
    A recipe ``input_size`` (batches resized on the device, for fine-tuning) sets the size.
    Errors name ``source`` (the suite file) where given.
    """
    from mpbench.config import SuiteError

    ds = suite.dataset
    where = source or f"suite {suite.name}"
    if ds.name in ("cifar10", "cifar100"):
        found: tuple[int, int, int] | None = (10 if ds.name == "cifar10" else 100, 32, 32)
    elif ds.name == "synthetic":
        found = (ds.num_classes or num_classes or 10, ds.image_size, ds.image_size)
    elif ds.num_classes and _folder_size(ds):  # given in the suite: no need for the data
        found = (ds.num_classes, _folder_size(ds), _folder_size(ds))
    else:
        found = _image_folder_info(ds, data_root, where, num_classes)
    if found is None:  # --classes without the data: counted at 32x32
        found = (int(num_classes), 32, 32)
    classes, height, width = found
    for given, what in ((num_classes, "--classes"), (ds.num_classes, "dataset.num_classes")):
        if given is not None and int(given) != classes:
            raise SuiteError(f"{where}: {what}: data set {ds.name} has {classes} classes, "
                             f"not {given}")
    resize = getattr(suite.recipe, "input_size", None)
    if resize:
        height = width = resize
    return (3, int(height), int(width)), int(classes)


def _folder_size(ds) -> int | None:
    """An image folder's model input size known from the suite alone: ``crop_size`` (or the
    streaming loader's default 224 with ``loader: stream``), else an explicitly set
    ``image_size``; None when only the data can tell."""
    if ds.crop_size:
        return int(ds.crop_size)
    if ds.loader == "stream":
        from mpbench.data.streaming import DEFAULT_CROP
        return int(DEFAULT_CROP)
    return int(ds.image_size) if "image_size" in ds.model_fields_set else None


def _image_folder_info(ds, data_root, where: str,
                       num_classes: int | None) -> tuple[int, int, int] | None:
    """(classes, height, width) of an image folder, read through the data loader (and so
    through its decoded-once cache, where training will read it too)."""
    from mpbench.config import SuiteError
    from mpbench.data import DataError, load_dataset

    try:
        data = load_dataset(ds, data_root)
    except DataError as exc:
        if num_classes is not None:
            return None
        alone = ("give dataset.crop_size or image_size to plan from the suite alone"
                 if ds.num_classes else "--classes to count MACs without the data")
        raise SuiteError(f"{where}: dataset.root: {exc}; pass --data-root (or {alone})") from None
    return (data.num_classes, *data.image_size[1:])


def match_suite(suite, *, data_root: str | Path | None = None,
                num_classes: int | None = None) -> list[Match | BudgetError]:
    """Every (budget, model) pair of a suite, matched; budgets outer, models in suite order;
    then the models trained as given, once each (as :func:`mpbench.suite.plan.plan_suite`
    plans them), without a budget.

    Each item is a :class:`Match` or the :class:`BudgetError` that refuses it; both carry the
    model's ``label``. Models with ``match: false``, and every model of a suite without
    budgets, are measured as given (never refused; ``budget_gmacs`` NaN). Errors that are not
    about the budget (unknown model, uncountable operator, bad data set) are raised.
    """
    input_size, classes = suite_geometry(suite, data_root, num_classes)
    geometry = dict(input_size=input_size, num_classes=classes)
    rows: list[Match | BudgetError] = []
    for budget in suite.budgets_gmacs or ():
        for spec in suite.models:
            label = spec.label
            if not spec.match:
                continue
            try:
                m = match_budget(spec.name, budget, spec.args, tolerance=suite.tolerance,
                                 **geometry)
                rows.append(replace(m, label=label))
            except BudgetError as exc:
                exc.label = label
                if exc.closest is not None:
                    exc.closest = replace(exc.closest, label=label)
                rows.append(exc)
    for spec in suite.models:
        if not (spec.match and suite.budgets_gmacs):
            rows.append(describe(spec.name, spec.args, None, label=spec.label, **geometry))
    return rows
