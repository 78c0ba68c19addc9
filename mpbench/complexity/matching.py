"""Budget matching: turn each model's complexity knob until its MACs land on a budget.

A suite names budgets in GMACs; every registered family declares one knob (width, widen
factor, base width, per-path width, member width or depth, see :class:`mpbench.Knob`). For a
budget B and tolerance T (default 2%), :func:`match_budget` searches the knob and returns the
model whose MACs are closest to B, measured with :mod:`mpbench.complexity` at the suite's input
size and class count.

Rules
-----
* ``int`` knobs (widths): candidates are the multiples of ``step`` in [low, high]; ``step``
  may depend on the other arguments (e.g. per-path width divisible by ``paths``). The closest
  candidate must be within ±T of B, else :class:`BudgetError`.
* ``float`` knobs (multipliers): searched continuously in [low, high] (values rounded to 4
  decimals); must land within ±T, else :class:`BudgetError`.
* ``choice`` knobs (depth): the nearest choice is taken and its deviation recorded, even
  beyond ±T ("depth within the nearest step"); the model is refused only when B lies outside
  the reachable range by more than T (below the shallowest or above the deepest choice).
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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from mpbench.complexity.counting import (InputSize, cache_generation, count_model, estimate_model,
                                         freeze, model_args)
from mpbench.errors import UserError

__all__ = ["Match", "BudgetError", "match_budget", "describe", "match_suite", "suite_geometry"]

_FLOAT_DECIMALS = 4
_MAX_COUNTS = 40  # safety net; a search normally needs 2-6 estimates


@dataclass(frozen=True)
class Match:
    """A model at a budget: its full arguments and what it achieves.

    ``args`` are the complete builder arguments (registry defaults, the user's arguments, the
    knob value, ``num_classes`` and ``in_chans``): ``get_entry(name).fn(**args)`` rebuilds
    the measured model. ``deviation`` is ``(gmacs - budget) / budget``; ``budget_gmacs`` and
    ``deviation`` are NaN for a model measured without a budget.
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

    @property
    def display(self) -> str:
        return self.label or self.name

    def as_dict(self) -> dict:
        out = asdict(self)
        for key in ("budget_gmacs", "deviation"):
            if isinstance(out[key], float) and math.isnan(out[key]):
                out[key] = None
        return out


class BudgetError(UserError):
    """A model cannot reach a budget within tolerance. ``closest`` is the nearest it gets."""

    def __init__(self, message: str, *, name: str, budget_gmacs: float, tolerance: float,
                 closest: Match | None = None, label: str | None = None):
        super().__init__(message)
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

    if grid is None or knob.kind != "choice":
        refuse = True
    else:  # a choice knob is refused only when the budget lies beyond its range
        i = grid.index(value)
        refuse = ((i == 0 and m.macs > target) or (i == len(grid) - 1 and m.macs < target))
    if refuse and abs(m.deviation) > tolerance:
        raise BudgetError(
            f"model {entry.name} cannot meet budget {budget:g} GMACs within ±{tolerance:.0%}: "
            f"closest is {knob.name}={value} at {m.gmacs:.4g} GMACs ({m.deviation:+.1%})",
            name=entry.name, budget_gmacs=budget, tolerance=tolerance, closest=m)
    return m


# --------------------------------------------------------------------------- suites

def suite_geometry(suite, data_root: str | Path | None = None,
                   num_classes: int | None = None) -> tuple[tuple[int, int, int], int]:
    """(input_size, num_classes) the suite's models are built and counted with.

    CIFAR-10/100: 32x32, 10/100 classes. Synthetic: its ``image_size`` and ``num_classes``
    (10 when unset, as :mod:`mpbench.data` does). Image folders: class folders under
    ``train/`` (folder or one ``.tar.gz``) and the first image's size; ``num_classes``
    supplies the count when the data is not reachable, and must agree with it when it is.
    A recipe ``input_size`` (batches resized on the device, for fine-tuning) sets the size.
    """
    from mpbench.config import SuiteError

    ds = suite.dataset
    if ds.name in ("cifar10", "cifar100"):
        found: tuple[int, int, int] | None = (10 if ds.name == "cifar10" else 100, 32, 32)
    elif ds.name == "synthetic":
        found = (ds.num_classes or num_classes or 10, ds.image_size, ds.image_size)
    else:
        found = _image_folder_info(ds, data_root, suite.name, num_classes)
    if found is None:
        found = (int(num_classes), 32, 32)
    classes, height, width = found
    if num_classes is not None and int(num_classes) != classes:
        raise SuiteError(f"suite {suite.name}: data set {ds.name} has {classes} classes, "
                         f"not {num_classes}")
    resize = getattr(suite.recipe, "input_size", None)
    if resize:
        height = width = resize
    return (3, int(height), int(width)), int(classes)


def _image_folder_info(ds, data_root, suite_name: str,
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
        raise SuiteError(f"suite {suite_name}: dataset: {exc}; pass --data-root "
                         f"(or --classes to count MACs without the data)") from None
    return (data.num_classes, *data.image_size[1:])


def match_suite(suite, *, data_root: str | Path | None = None,
                num_classes: int | None = None) -> list[Match | BudgetError]:
    """Every (budget, model) pair of a suite, matched; budgets outer, models in suite order.

    Each item is a :class:`Match` or the :class:`BudgetError` that refuses it; both carry the
    model's ``label``. Models with ``match: false``, and every model of a suite without
    budgets, are measured as given (never refused). Errors that are not about the budget
    (unknown model, uncountable operator, bad data set) are raised.
    """
    input_size, classes = suite_geometry(suite, data_root, num_classes)
    geometry = dict(input_size=input_size, num_classes=classes)
    rows: list[Match | BudgetError] = []
    for budget in suite.budgets_gmacs or (None,):
        for spec in suite.models:
            label = spec.label
            if budget is None or not spec.match:
                rows.append(describe(spec.name, spec.args, budget, label=label, **geometry))
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
    return rows
