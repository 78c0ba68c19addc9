"""``top1_vs_train_memory``: mean top-1 against peak training memory, with its Pareto front.

The memory counterpart of :mod:`mpbench.report.figures`' MACs figure: a model is on the front
when no other configuration trains in less (or equal) memory and is more accurate. Colour =
family, error bars = std over seeds, lines join a configuration across budgets. Drawn only
when some row has both a top-1 and a measured peak (:mod:`mpbench.report.memory`); results
made before memory was measured draw nothing. Reproducible as the other figures are (same
style, fixed metadata).
"""
from __future__ import annotations

import re
from pathlib import Path

from mpbench.report.figures import (MARKERS, STYLE, draw_pareto_front, family_colors,
                                    save_figure)
from mpbench.report.memory import methods_text

__all__ = ["memory_figures"]

KEY = "train_peak_mem_mb"


def _plot(rows: list[dict], title: str, xlabel: str):
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    colors = family_colors(sorted({a["family"] for a in rows}))
    markers, per_family = {}, {}
    for a in rows:
        if a["label"] not in markers:
            k = per_family.get(a["family"], 0)
            per_family[a["family"]] = k + 1
            markers[a["label"]] = MARKERS[k % len(MARKERS)]
    pts = [a for a in rows if a["top1_mean"] is not None and a.get(KEY)]
    fig, ax = plt.subplots(figsize=(9.0, 5.0))
    for label in sorted(markers, key=lambda lab: (next(a["family"] for a in rows
                                                        if a["label"] == lab), lab)):
        mine = sorted((a for a in pts if a["label"] == label), key=lambda a: a[KEY])
        if not mine:
            continue
        fam = mine[0]["family"]
        ax.errorbar([a[KEY] for a in mine], [a["top1_mean"] for a in mine],
                    yerr=[a["top1_std"] or 0.0 for a in mine], color=colors[fam],
                    marker=markers[label], ls="-" if len(mine) > 1 else "none", lw=1.0, ms=6,
                    capsize=3, label=f"{label} ({fam})", alpha=0.9)
    draw_pareto_front(ax, [(a[KEY], a["top1_mean"]) for a in pts])
    xs = [a[KEY] for a in pts]
    log = max(xs) / min(xs) > 4
    if log:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel(xlabel + (", log scale" if log else ""))
    ax.set_ylabel(f"{rows[0].get('split') or 'test'} top-1 (%), mean ± std over seeds")
    ax.set_title(title)
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, frameon=False)
    fig.tight_layout()
    return fig


def memory_figures(summary: list[dict], fig_dir: Path) -> list[dict]:
    """The figure entries (``{title, files, caption}``) of every data set whose rows have a
    top-1 and a measured training peak; [] otherwise."""
    import matplotlib.pyplot as plt

    entries = []
    datasets = sorted({a["dataset"] for a in summary})
    with plt.rc_context(STYLE):
        for ds in datasets:
            rows = [a for a in summary if a["dataset"] == ds]
            if not any(a["top1_mean"] is not None and a.get(KEY) for a in rows):
                continue
            sfx = "_" + re.sub(r"[^A-Za-z0-9_.]+", "-", ds).strip("-") if len(datasets) > 1 else ""
            on = f" ({ds})" if len(datasets) > 1 else ""
            how = methods_text(rows)
            fig = _plot(rows, f"Top-1 vs peak training memory{on}",
                        "peak training memory (MiB) at the run's batch size")
            entries.append({
                "title": f"Top-1 vs peak training memory{on}",
                "files": save_figure(fig, fig_dir, f"top1_vs_train_memory{sfx}"),
                "caption": "Equal MACs are not equal memory: left needs less. Colour: family; "
                           "error bars: std over seeds; dashed step: Pareto front (no row "
                           "trains in less memory and is more accurate). Measured with "
                           f"{how}; rows without a measurement are left out."})
    return entries
