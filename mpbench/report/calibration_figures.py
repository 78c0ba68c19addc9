"""Figures of calibration and robustness, drawn from stored results alone:

* ``reliability_b<budget>``: per budget, accuracy against confidence in the 15 equal-width
  top-label bins, one line per model configuration (colour = family), the bins of every
  finished seed pooled (:func:`pool_reliability`); the diagonal is perfect calibration.
* ``corrupt_vs_clean``: per data set, mean corruption top-1 against mean clean top-1 of each
  row (error bars: std over seeds), with the y = x line (no loss under corruption).

The per-run bins are ``reliability`` in ``runs/<id>/result.json`` (also written by
``mpbench evaluate``), else ``test_reliability`` of the last entry of ``metrics.json``.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mpbench.report.figures import MARKERS, STYLE, family_colors, save_figure  # noqa: E402
from mpbench.report.results import read_json  # noqa: E402

__all__ = ["calibration_figures", "pool_reliability", "run_reliability"]


def run_reliability(rs, run_id: str) -> dict | None:
    """One run's stored reliability bins ``{"conf", "acc", "count"}``, or None (older runs)."""
    result = read_json(Path(rs.root) / "runs" / run_id / "result.json") or {}
    bins = result.get("reliability")
    if bins is None:
        history = rs.metrics.get(run_id) or []
        bins = history[-1].get("test_reliability") if history else None
    return bins if isinstance(bins, dict) and bins.get("count") else None


def pool_reliability(bins: list[dict]) -> dict | None:
    """The bins of several runs pooled: counts summed, mean confidence and accuracy weighted
    by each run's count (as if all their test images were one set); None for no runs."""
    if not bins:
        return None
    n = len(bins[0]["count"])
    count = [sum(b["count"][i] for b in bins) for i in range(n)]

    def pooled(key: str) -> list[float | None]:
        return [math.fsum(b[key][i] * b["count"][i] for b in bins if b["count"][i]) / count[i]
                if count[i] else None for i in range(n)]
    return {"count": count, "conf": pooled("conf"), "acc": pooled("acc")}


def _styles(rows: list[dict]) -> dict[str, dict]:
    colors = family_colors(sorted({a["family"] for a in rows}))
    styles, k = {}, {}
    for a in rows:
        if a["label"] not in styles:
            i = k[a["family"]] = k.get(a["family"], -1) + 1
            styles[a["label"]] = {"color": colors[a["family"]], "marker": MARKERS[i % len(MARKERS)]}
    return styles


def _slug(text: str) -> str:
    import re
    return re.sub(r"[^A-Za-z0-9_.]+", "-", str(text)).strip("-")


def _budget(b) -> str:
    return "as-given" if b is None else f"{b:g}"


def _reliability_plot(lines: list[tuple[dict, dict, int]], styles: dict, title: str):
    fig, ax = plt.subplots(figsize=(6.5, 5.0))
    ax.plot([0, 1], [0, 1], color="0.5", ls="--", lw=1.0, label="perfect calibration")
    for a, pooled, n in lines:
        pts = [(c, acc) for c, acc, n in zip(pooled["conf"], pooled["acc"], pooled["count"]) if n]
        st = styles[a["label"]]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color=st["color"], marker=st["marker"],
                ms=4, lw=1.2, label=f"{a['label']} ({a['family']}, {n} seed{'s' * (n > 1)})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-label softmax probability), mean per bin")
    ax.set_ylabel("accuracy per bin")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def _corruption_plot(rows: list[dict], styles: dict, title: str, ylabel: str):
    fig, ax = plt.subplots(figsize=(8.0, 5.0))
    xs = [a["top1_mean"] for a in rows] + [a["corrupt_top1_mean"] for a in rows]
    lo, hi = min(xs), max(xs)
    pad = max(1.0, 0.05 * (hi - lo))
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.5", ls="--", lw=1.0,
            label="y = x (no loss under corruption)")
    seen = set()
    for a in rows:
        st = styles[a["label"]]
        ax.errorbar(a["top1_mean"], a["corrupt_top1_mean"], xerr=a["top1_std"] or 0.0,
                    yerr=a["corrupt_top1_std"] or 0.0, color=st["color"], marker=st["marker"],
                    ms=6, capsize=3, ls="none",
                    label=None if a["label"] in seen else f"{a['label']} ({a['family']})")
        seen.add(a["label"])
        ax.annotate(_budget(a["budget_gmacs"]), (a["top1_mean"], a["corrupt_top1_mean"]),
                    xytext=(4, 3), textcoords="offset points", fontsize=6, color="0.35")
    ax.set_xlabel("clean test top-1 (%), mean ± std over seeds")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, frameon=False)
    fig.tight_layout()
    return fig


def calibration_figures(rs, summary: list[dict], fig_dir: Path) -> list[dict]:
    """Draw the figures whose data the results hold; ``[{title, files, caption}]``."""
    entries: list[dict] = []
    datasets = sorted({a["dataset"] for a in summary})
    with plt.rc_context(STYLE):
        for ds in datasets:
            rows = [a for a in summary if a["dataset"] == ds]
            styles = _styles(rows)
            sfx = f"_{_slug(ds)}" if len(datasets) > 1 else ""
            on = f" ({ds})" if len(datasets) > 1 else ""
            done = {r["run_id"] for r in rs.rows if r["status"] == "done"}
            for b in dict.fromkeys(a["budget_gmacs"] for a in rows):
                lines = []
                for a in (a for a in rows if a["budget_gmacs"] == b):
                    bins = [x for x in (run_reliability(rs, r) for r in a["run_ids"] if r in done)
                            if x is not None]
                    if bins:
                        lines.append((a, pool_reliability(bins), len(bins)))
                if not lines:
                    continue
                where = f"{b:g} GMACs" if b is not None else "models as given"
                fig = _reliability_plot(lines, styles, f"Reliability at {where}{on}")
                entries.append({"title": f"Reliability diagram, {where}{on}",
                                "files": save_figure(fig, fig_dir, f"reliability_b{_budget(b)}{sfx}"),
                                "caption": "Test set after the last epoch: accuracy against mean "
                                           "confidence in each of 15 equal-width top-label "
                                           "confidence bins (the ECE's bins), the bins of all "
                                           "finished seeds pooled; empty bins left out. Below "
                                           "the diagonal: over-confident."})
            pts = [a for a in rows if a["top1_mean"] is not None
                   and a["corrupt_top1_mean"] is not None]
            if pts:
                sets = " ".join(sorted({a["corrupt_set"] for a in pts if a["corrupt_set"]}))
                fig = _corruption_plot(pts, styles, f"Corruption vs clean top-1{on}",
                                       f"top-1 under corruptions (%), {sets or 'corrupted set'}")
                entries.append({"title": f"Corruption top-1 vs clean top-1{on}",
                                "files": save_figure(fig, fig_dir, f"corrupt_vs_clean{sfx}"),
                                "caption": f"Set: {sets}. Mean over corruptions and severities "
                                           "against the clean test top-1, per row (label: "
                                           "budget in GMACs); error bars: std over seeds. The "
                                           "vertical distance below y = x is the accuracy lost "
                                           "to the corruptions."})
    return entries
