"""``mpbench flops``: parameters and MACs of a model, or the matched table of a whole suite.

All numbers are fvcore MACs (multiply-accumulates) at batch 1 in eval mode; see
:mod:`mpbench.complexity` for the convention. ``--suite`` lets a user check that a suite's
comparisons are fair before spending GPU days on it; it exits 1 if any model is refused
(off budget, knob at an end of its range, or degenerate structure: see
:mod:`mpbench.complexity.matching`), and says why on the refused row.
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from typing import Any, Callable

from mpbench.errors import UserError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "flops", help="params, GMACs and per-module breakdown; --suite: matched budget table",
        description="Parameters and fvcore MACs (batch 1, eval mode) of a registered model, "
                    "optionally matched to a budget; or the matched table of a suite.")
    p.add_argument("model", nargs="?", help="registered model name (see `mpbench list`)")
    p.add_argument("--suite", metavar="SUITE.yaml", help="print the matched table of a suite")
    p.add_argument("--budget", type=float, metavar="GMACS",
                   help="match the model's complexity knob to this many GMACs")
    p.add_argument("--tolerance", type=float, default=None,
                   help="allowed relative deviation from the budget (default 0.02; suites: "
                        "their own `tolerance`)")
    p.add_argument("--args", nargs="+", default=[], metavar="ARG",
                   help="model arguments: one JSON object, or key=value pairs (YAML values)")
    p.add_argument("--input-size", default=None, metavar="S|CxHxW",
                   help="input size, e.g. 32 or 3x64x64 (default 3x32x32; suites: their data)")
    p.add_argument("--classes", type=int, default=None,
                   help="number of classes (default 100; suites: their data set's)")
    p.add_argument("--data-root", default=None, help="data root, to count image-folder classes")
    p.add_argument("--depth", type=int, default=1,
                   help="module nesting depth of the breakdown (default 1: top-level modules)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def parse_args_tokens(tokens: list[str]) -> dict:
    """``['{"width": 32}']`` or ``['width=32', 'layers=[2,2,2,2]']`` -> dict."""
    from mpbench.config import parse_override

    if not tokens:
        return {}
    if len(tokens) == 1 and tokens[0].lstrip().startswith("{"):
        try:
            value = json.loads(tokens[0])
        except json.JSONDecodeError as exc:
            raise UserError(f"--args: invalid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise UserError("--args: expected a JSON object")
        return value
    out: dict[str, Any] = {}
    for token in tokens:
        key, out[key] = parse_override(token, "--args")
    return out


def parse_input_size(text: str | None) -> tuple[int, int, int] | None:
    if text is None:
        return None
    parts = text.lower().replace(",", "x").split("x")
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        raise UserError(f"--input-size: expected 32 or 3x32x32, got '{text}'") from None
    if len(dims) == 1:
        dims = [3, dims[0], dims[0]]
    elif len(dims) == 2:
        dims = [3, *dims]
    if len(dims) != 3 or min(dims) < 1:
        raise UserError(f"--input-size: expected 32 or 3x32x32, got '{text}'")
    return tuple(dims)


def run(args) -> int:
    if bool(args.model) == bool(args.suite):
        raise UserError("give a MODEL or --suite SUITE.yaml (not both)")
    if args.depth < 1:
        raise UserError("--depth must be at least 1")
    if args.suite:
        return run_suite(args)
    return run_model(args)


# --------------------------------------------------------------------------- one model

def run_model(args) -> int:
    from mpbench.complexity import count_model
    from mpbench.complexity.activations import activations_model
    from mpbench.complexity.matching import describe, match_budget
    from mpbench.registry import get_entry

    entry = get_entry(args.model)
    model_args = parse_args_tokens(args.args)
    input_size = parse_input_size(args.input_size) or (3, 32, 32)
    classes = args.classes or 100
    geometry = dict(input_size=input_size, num_classes=classes)
    if args.budget is not None:
        m = match_budget(entry.name, args.budget, model_args,
                         tolerance=0.02 if args.tolerance is None else args.tolerance, **geometry)
    else:
        m = describe(entry.name, model_args, **geometry)
    c = count_model(entry.name, m.args, **geometry)  # the knob (and any adjustment) included
    acts = activations_model(entry.name, m.args, **geometry)
    rows = breakdown(c, args.depth)

    if args.json:
        print(json.dumps({**m.as_dict(), "family": entry.family, "macs": c.macs,
                          "activations": acts, "activations_m": acts / 1e6,
                          "input_size": list(input_size), "num_classes": classes,
                          "by_module": {r[0]: {"macs": r[2], "params": r[1]} for r in rows},
                          "by_operator": c.by_operator}, indent=2, default=str))
        return 0
    from mpbench.complexity import format_macs, format_params

    size = "x".join(map(str, input_size))
    print(f"{entry.name}  (family {entry.family}; {classes} classes, input {size}, batch 1, "
          f"eval mode; fvcore MACs)")
    if m.knob:
        print(f"  knob        {m.knob}={m.knob_text}")
    print(f"  params      {format_params(c.params)} ({c.params:,})")
    print(f"  MACs        {format_macs(c.macs)} ({c.gmacs:.4f} GMACs)")
    print(f"  activations {acts / 1e6:.3f}M (outputs of convolutions and matrix products)")
    if not math.isnan(m.budget_gmacs):
        print(f"  budget      {m.budget_gmacs:g} GMACs, deviation {m.deviation:+.2%}")
    print()
    print(format_table(["module", "params", "MACs", "share"],
                       [[name, format_params(p), format_macs(macs),
                         f"{macs / c.macs:.1%}" if c.macs else "-"] for name, p, macs in rows],
                       align="lrrr"))
    return 0


def breakdown(c, depth: int) -> list[tuple[str, int, int]]:
    """(module, params, MACs) for modules nested at most ``depth`` deep, in model order."""
    names = [n for n in c.by_module if n.count(".") < depth]
    return [(n, c.params_by_module.get(n, 0), c.by_module[n]) for n in names]


# --------------------------------------------------------------------------- suites

def run_suite(args) -> int:
    from mpbench.config import load_suite
    from mpbench.complexity.matching import BudgetError, match_suite, suite_geometry

    if args.budget is not None or args.args or args.input_size:
        raise UserError("--budget, --args and --input-size apply to a MODEL, not to --suite")
    suite = load_suite(args.suite)
    from mpbench.plugins import load_plugins
    load_plugins(suite.plugins, args.suite)  # the suite's own models must be registered
    if args.tolerance is not None:
        if not 0 < args.tolerance < 1:
            raise UserError(f"--tolerance must be in (0, 1), got {args.tolerance}")
        suite = suite.model_copy(update={"tolerance": args.tolerance})
    input_size, classes = suite_geometry(suite, args.data_root, args.classes, source=args.suite)
    rows = match_suite(suite, data_root=args.data_root, num_classes=args.classes)
    refused = [r for r in rows if isinstance(r, BudgetError)]
    matched = {s.display for s in suite.models if s.match and suite.budgets_gmacs}
    acts = suite_activations(rows, input_size, classes)

    if args.json:
        print(json.dumps({"suite": suite.name, "tolerance": suite.tolerance,
                          "input_size": list(input_size), "num_classes": classes,
                          "rows": [{**json_row(r, r.display in matched),
                                    "activations_m": acts[id(r)]} for r in rows]},
                         indent=2, default=str))
        return 1 if refused else 0

    size = "x".join(map(str, input_size))
    print(f"suite {suite.name}: {suite.dataset.name}, {classes} classes, input {size}, "
          f"tolerance ±{suite.tolerance:.0%} (fvcore MACs, batch 1, eval mode)")
    budget_rows = [r for r in rows if r.display in matched]
    given_rows = [r for r in rows if r.display not in matched]
    if budget_rows:
        print(table_of(budget_rows, suite_columns(acts)))
    if given_rows:
        if budget_rows:
            print()
        print("trained as given, not matched:")
        print(table_of(given_rows, [c for c in suite_columns(acts) if not c.matched_only]))
    for r in refused:
        print(f"refused: {r}", file=sys.stderr)
    return 1 if refused else 0


def json_row(r, match: bool) -> dict:
    """One --json row: the measurement, and what the row is (``label``, ``family``,
    ``match``: matched to its budget, or trained as given with ``budget_gmacs`` null)."""
    from mpbench.complexity.matching import BudgetError
    from mpbench.registry import get_entry

    m = r.closest if isinstance(r, BudgetError) else r
    item = {"model": r.display, "label": r.display, "family": get_entry(r.name).family,
            "match": match, "budget_gmacs": None if math.isnan(r.budget_gmacs) else r.budget_gmacs,
            "status": "REFUSED" if isinstance(r, BudgetError) else "OK"}
    item.update({k: v for k, v in (m.as_dict() if m else {}).items()
                 if k not in ("budget_gmacs", "label")})
    if isinstance(r, BudgetError):
        item["error"] = str(r)
        item["reason"] = r.reason
    return item


@dataclass(frozen=True)
class Column:
    """A column of the suite table: ``cell(row, match)`` gives its text, where ``match`` is
    the row's :class:`Match` (a refused row's closest; None if it has none).
    ``matched_only``: left out of the as-given section (no budget to compare with)."""

    header: str
    align: str  # "l" or "r"
    cell: Callable[[Any, Any], str]
    matched_only: bool = False


def _status(r, m) -> str:
    from mpbench.complexity.matching import BudgetError

    return f"REFUSED ({r.reason})" if isinstance(r, BudgetError) else "OK"


def _params(r, m) -> str:
    from mpbench.complexity import format_params

    return format_params(m.params) if m else "-"


SUITE_COLUMNS = [
    Column("model", "l", lambda r, m: r.display),
    Column("budget", "r", lambda r, m: f"{r.budget_gmacs:g}", matched_only=True),
    Column("knob", "l", lambda r, m: f"{m.knob}={m.knob_text}" if m and m.knob else "-"),
    Column("GMACs", "r", lambda r, m: f"{m.gmacs:.4f}" if m else "-"),
    Column("deviation", "r", lambda r, m: "-" if m is None or math.isnan(m.deviation)
           else f"{m.deviation:+.1%}", matched_only=True),
    Column("params", "r", _params),
    Column("status", "l", _status, matched_only=True),
]


def table_of(rows: list, columns: list[Column]) -> str:
    from mpbench.complexity.matching import BudgetError

    cells = []
    for r in rows:
        m = r.closest if isinstance(r, BudgetError) else r
        cells.append([c.cell(r, m) for c in columns])
    return format_table([c.header for c in columns], cells, "".join(c.align for c in columns))


def suite_activations(rows: list, input_size, classes: int) -> dict[int, float | None]:
    """Activations (millions, :mod:`mpbench.complexity.activations`) of every matched row
    (a refused row: of its closest match), by ``id(row)``."""
    from mpbench.complexity.activations import activations_model
    from mpbench.complexity.matching import BudgetError

    out = {}
    for r in rows:
        m = r.closest if isinstance(r, BudgetError) else r
        out[id(r)] = (None if m is None else activations_model(
            m.name, m.args, input_size=input_size, num_classes=classes) / 1e6)
    return out


def suite_columns(acts: dict[int, float | None]) -> list[Column]:
    """:data:`SUITE_COLUMNS` with the activations (``acts``, by ``id(row)``) before status."""
    col = Column("acts (M)", "r",
                 lambda r, m: "-" if acts.get(id(r)) is None else f"{acts[id(r)]:.3f}")
    return SUITE_COLUMNS[:-1] + [col] + SUITE_COLUMNS[-1:]


def format_table(header: list[str], rows: list[list[str]], align: str) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]

    def line(cells):
        return "  ".join(str(c).ljust(w) if a == "l" else str(c).rjust(w)
                         for c, w, a in zip(cells, widths, align)).rstrip()

    return "\n".join([line(header), *(line(r) for r in rows)])
