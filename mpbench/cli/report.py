"""``mpbench report [RUNS_DIR]``: tables and figures from stored results.

With RUNS_DIR (an ``mpbench run`` output directory) it writes ``report.md``, ``summary.csv``,
``table.tex`` and ``figures/`` to ``--out`` (default ``RUNS_DIR/report``); a separate ``--out``
such as ``reports/<name>`` also gets a copy of the results (no checkpoints) in
``reports/<name>/results``. Without RUNS_DIR it regenerates every ``reports/<name>/`` from the
results stored beside it.

``--untuned DIR`` (RUNS_DIR a tuned suite's output, DIR an untuned suite's output of the same
models): the report adds the two rankings side by side per budget, with Kendall's tau; DIR is
copied to ``OUT/untuned-results`` so that regenerating keeps the section.
Runs made before the calibration and corruption scores existed show
them as "not measured": ``mpbench evaluate RUNS_DIR`` scores them from their checkpoints.
"""
from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "report", help="tables (markdown, CSV, LaTeX) and figures from a suite's results; "
                       "no argument: regenerate every report under reports/",
        description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("runs_dir", nargs="?", metavar="RUNS_DIR",
                   help="an `mpbench run` output directory (holds results.csv)")
    p.add_argument("--out", help="report folder (default: RUNS_DIR/report; "
                                 "reports/<name> keeps a copy of the results for regeneration)")
    p.add_argument("--title", help="report title (default: 'mpbench report: <suite>'); kept for "
                                   "regeneration")
    p.add_argument("--note", help="a paragraph under the title (e.g. what the runs are and are "
                                  "not); kept for regeneration")
    p.add_argument("--untuned", metavar="DIR",
                   help="an untuned suite's output directory of the same models: rank it side "
                        "by side with RUNS_DIR's tuned results (kept for regeneration)")
    p.add_argument("--reports", default="reports", metavar="DIR",
                   help="without RUNS_DIR: the folder of reports to regenerate (default: reports)")
    p.add_argument("--data-root", help="data root for the path-usage analysis of multi-path runs")
    p.add_argument("--device", help="device for the path-usage analysis (default: cuda if "
                                    "available)")
    p.add_argument("--no-figures", action="store_true", help="tables only")
    p.add_argument("--no-analysis", action="store_true",
                   help="do not compute path usage from checkpoints (stored analyses are used)")
    p.set_defaults(func=run)


def run(args) -> int:
    from mpbench.errors import UserError
    from mpbench.report import build_report, regenerate_all

    if args.runs_dir is None:
        if args.out or args.title or args.note or args.untuned:
            raise UserError("--out/--title/--note/--untuned need RUNS_DIR; without it every report under "
                            f"{args.reports}/ is regenerated with its stored options")
        regenerate_all(args.reports, figures=not args.no_figures)
        return 0
    if args.data_root and not Path(args.data_root).exists():
        raise UserError(f"--data-root: {args.data_root} does not exist")
    res = build_report(args.runs_dir, args.out, title=args.title, note=args.note,
                       figures=not args.no_figures, analyze=not args.no_analysis,
                       data_root=args.data_root, device=args.device, untuned=args.untuned,
                       echo=print)
    for note in res["notes"]:
        print(f"note: {note}")
    print(f"{len(res['summary'])} rows; wrote {res['out'] / 'report.md'}, summary.csv, table.tex"
          + (f" and {sum(1 for f in res['files'] if f.parent.name == 'figures')} figure files"
             if not args.no_figures else ""))
    return 0
