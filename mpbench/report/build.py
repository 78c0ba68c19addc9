"""The report builder: one suite output directory (``mpbench run --out``) to a report folder::

    report.md       header (data set, suite, recipe, seeds, device, dates, MACs convention),
                    one table per data set, comparisons, figures, notes (``document.SECTIONS``)
    summary.csv     the same rows as the tables, unformatted
    table.tex       the same tables as LaTeX (booktabs)
    figures/        PNG + SVG (see :mod:`mpbench.report.figures`)
    results/        (``reports/<name>/`` only) the copy of the results the report came from
    untuned-results/ (``--untuned DIR``) the copy of the untuned results put side by side
    report.json     the options (title, note) so that a regeneration is identical

and the regeneration of every committed report. Determinism: everything written is a function
of the stored results and the options alone (rows sorted by data set, budget, suite order;
fixed float formats; dates only from the results), so regenerating is bit-identical.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from mpbench.errors import UserError
from mpbench.report.compute_equivalent import compute_figures
from mpbench.report.csv_table import summary_csv
from mpbench.report.document import render_markdown
from mpbench.report.formatting import MACS_CONVENTION, fmt_budget
from mpbench.report.latex import latex_table
from mpbench.report.results import ANALYSIS_FILES, ResultSet, copy_results, load_results, read_json
from mpbench.report.side_by_side import check_pair
from mpbench.report.tuning import tuning_figures
from mpbench.report.summary import aggregate, label_order, suite_comparison_options

__all__ = ["build_report", "regenerate_all"]


def _find_analysis(rs: ResultSet, summary: list[dict], checkpoints: Path, analyze: bool,
                   data_root, device, echo) -> tuple[list[dict], list[str]]:
    """Path usage of each multi-path configuration with cross-connections, from its first
    finished seed: the stored ``<results>/runs/<id>/analysis/*.csv``, else computed with
    :func:`mpbench.report.analyze.analyze_run` from ``<checkpoints>/runs/<id>/checkpoint.pt`` (when
    there and the data set loads) and stored there. Returns (analyses, notes on skipped ones)."""
    found, notes = [], []
    for a in summary:
        done_ids = [r["run_id"] for r in rs.rows if r["status"] == "done"
                    and r["run_id"] in a["run_ids"]]
        if not done_ids:
            continue
        run_id = done_ids[0]
        args = (rs.configs.get(run_id) or {}).get("args") or {}
        if "route" not in args or int(args.get("paths", 1) or 1) < 2 or args["route"] == "none":
            continue  # single path or no cross-connections: nothing is routed
        where = f"{a['label']} at {fmt_budget(a['budget_gmacs'])} GMACs"
        adir = rs.root / "runs" / run_id / "analysis"
        if not any((adir / f).exists() for f in ANALYSIS_FILES[:2]):
            ckpt_dir = checkpoints / "runs" / run_id
            if not analyze:
                notes.append(f"{where}: path-usage heatmap skipped (no stored analysis of "
                             f"{run_id}; analysis not run)")
                continue
            if not (ckpt_dir / "checkpoint.pt").exists():
                notes.append(f"{where}: path-usage heatmap skipped (no checkpoint of {run_id} "
                             "and no stored analysis)")
                continue
            try:
                _run_analysis(ckpt_dir, adir, data_root, device, echo)
            except UserError as exc:
                notes.append(f"{where}: path-usage heatmap skipped "
                             f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")
                continue
        level = "superclass" if (adir / "path_usage_superclass.csv").exists() else "class"
        found.append({"summary": a, "run_id": run_id, "level": level,
                      "usage_csv": adir / f"path_usage_{level}.csv",
                      "scores": _scores(adir / "specialisation.csv", level)})
    return found, notes


def _run_analysis(run_dir: Path, adir: Path, data_root, device, echo) -> None:
    from mpbench.report.analyze import analyze_run

    echo(f"analysing path usage of {run_dir.name}")
    with tempfile.TemporaryDirectory() as tmp:
        analyze_run(run_dir, tmp, data_root, device=device)
        adir.mkdir(parents=True, exist_ok=True)
        for name in ANALYSIS_FILES:
            if (Path(tmp) / name).exists():
                shutil.copyfile(Path(tmp) / name, adir / name)


def _scores(path: Path, level: str) -> dict | None:
    import csv
    if not path.exists():
        return None
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            if r.get("level") == level and r.get("layer") == "mean":
                return {k: float(r[k]) for k in ("trained", "untrained", "shuffled")}
    return None



def _untuned_results(tuned: ResultSet, untuned, out: Path, old: dict,
                     options: dict) -> ResultSet | None:
    """The untuned results to rank side by side: ``untuned`` (checked against ``tuned``,
    copied to ``out/untuned-results`` and recorded in the options), else the copy an earlier
    build recorded in ``report.json``."""
    copy = out / "untuned-results"
    if untuned is not None:
        check_pair(tuned, load_results(untuned))  # one line naming it, before anything is written
        if Path(untuned).resolve() != copy.resolve():
            copy_results(Path(untuned), copy)
        options["untuned"] = copy.name
    elif old.get("untuned"):
        options["untuned"] = old["untuned"]
    else:
        return None
    return load_results(out / options["untuned"])


def _needs_copy(src: Path, out: Path) -> bool:
    """A separate report folder keeps its own copy of the results (``out/results``); not when
    the results are that copy already, or when the report is written inside the results."""
    s, o = src.resolve(), out.resolve()
    return not (s == (o / "results") or s == o or s in o.parents)


def build_report(runs_dir: str | Path, out: str | Path | None = None, *, title: str | None = None,
                 note: str | None = None, figures: bool = True, analyze: bool = True,
                 data_root=None, device: str | None = None, untuned: str | Path | None = None,
                 echo: Callable[[str], None] = lambda m: None) -> dict:
    """Write ``report.md``, ``summary.csv``, ``table.tex`` and ``figures/`` for a suite's results.

    ``out`` defaults to ``RUNS_DIR/report``. When ``out`` is a separate folder (e.g.
    ``reports/<name>``), the results are first copied to ``out/results`` (no checkpoints) so
    that ``mpbench report`` can regenerate the report from them alone; ``title`` and ``note``
    are kept in ``out/report.json`` for the same reason. Path usage of multi-path runs is
    computed from the source's checkpoints (``analyze``) and stored beside the results.
    ``untuned``: an untuned suite's output directory of the same models, copied to
    ``out/untuned-results`` and ranked side by side (:mod:`mpbench.report.side_by_side`).
    Returns ``{"out", "files", "summary", "notes"}``.
    """
    src = Path(runs_dir)
    given = load_results(src)  # fails early, with one line, on anything that is not a results dir
    out = Path(out) if out is not None else src / "report"
    options_path = out / "report.json"
    old = read_json(options_path) or {}
    options = {"title": title if title is not None else old.get("title"),
               "note": note if note is not None else old.get("note")}
    untuned_rs = _untuned_results(given, untuned, out, old, options)  # checked before copying
    results = src
    if _needs_copy(src, out):
        copy_results(src, out / "results")
        results = out / "results"

    rs = load_results(results)
    summary = aggregate(rs.rows, label_order(rs), **suite_comparison_options(rs.suite))
    suite_name = rs.suite.get("name") or rs.rows[0]["suite"] or src.name
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    analyses, notes = [], []
    fig_entries: list[dict] = []
    if figures:
        from mpbench.report import figures as figs

        analyses, notes = _find_analysis(rs, summary, src, analyze, data_root, device, echo)
        fig_dir = out / "figures"
        if fig_dir.exists():
            shutil.rmtree(fig_dir)  # wholly generated: no stale figures survive
        fig_entries = figs.make_figures(rs, summary, analyses, fig_dir)
        fig_entries += tuning_figures(rs, fig_dir)  # shown in the Tuning section
        fig_entries += compute_figures(summary, fig_dir)
        from mpbench.report.calibration_figures import calibration_figures
        fig_entries += calibration_figures(rs, summary, fig_dir)
        from mpbench.report.memory_figure import memory_figures
        fig_entries += memory_figures(summary, fig_dir)
        for e in fig_entries:
            written += [fig_dir / f for f in e["files"]]
        notes += [n for e in fig_entries for n in e.get("notes", [])]

    files = {"report.md": render_markdown(rs, summary, fig_entries, notes,
                                          options["title"] or f"mpbench report: {suite_name}",
                                          options["note"] or "", untuned=untuned_rs),
             "summary.csv": summary_csv(summary),
             "table.tex": "\n".join(
                 latex_table([a for a in summary if a["dataset"] == ds],
                             caption=f"{suite_name}: {ds}; {MACS_CONVENTION}")
                 for ds in sorted({a["dataset"] for a in summary}))}
    from mpbench.storage import atomic_write_text
    for name, text in files.items():
        atomic_write_text(out / name, text, durable=False)
        written.append(out / name)
    if results != src or options_path.exists() or any(options.values()):
        atomic_write_text(options_path, json.dumps(options, indent=2, sort_keys=True) + "\n",
                          durable=False)
    return {"out": out, "files": written, "summary": summary, "notes": notes}



def regenerate_all(reports_dir: str | Path = "reports", *, figures: bool = True,
                   echo: Callable[[str], None] = print) -> list[dict]:
    """Rebuild every ``reports/<name>/`` from its ``results/`` (no training, no checkpoints)."""
    root = Path(reports_dir)
    targets = sorted(p for p in root.glob("*") if (p / "results").is_dir()) if root.is_dir() else []
    if not targets:
        raise UserError(f"{root}/: no reports to regenerate (each report is {root}/<name>/ with "
                        f"a results/ folder; make one with `mpbench report RUNS_DIR --out "
                        f"{root}/<name>`)")
    done = []
    for target in targets:
        res = build_report(target / "results", target, figures=figures, analyze=False, echo=echo)
        echo(f"{target}: {len(res['summary'])} rows, {len(res['files'])} files")
        done.append(res)
    return done
