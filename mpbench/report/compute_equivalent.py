"""The report's "Compute-equivalent" section: what each row is worth in the reference family's
compute, read off that family's accuracy-vs-compute curve (:mod:`mpbench.report.multiplier`).

The reference is the suite's ``reference:`` row, else the deepening baseline (the ``resnet``
family; its depth-knob configuration first). With results at two or more budgets, every other
row of the same data set gets its multiplier in MACs (the matched model's GMACs) and, where
the run's speed measurement (``speed_train_img_s``, taken after training) covers the row and
two or more reference budgets, in
wall-clock terms (cost = seconds per training image = 1 / training img/s: what a user pays).

Hooks: :func:`add_compute_multipliers` (a ``report.summary.SUMMARY_STEPS`` step: the
``compute_multiplier*`` / ``wallclock_multiplier*`` fields), :func:`compute_equivalent_section`
(``report.document.SECTIONS``), :func:`compute_figures` (drawn by ``report.build``) and
:func:`multiplier_against` / :func:`multiplier_lines` (``mpbench compare``).
"""
from __future__ import annotations

import math
from pathlib import Path

from mpbench.report.formatting import fmt_acc, fmt_budget, fmt_gmacs, md_escape
from mpbench.report.multiplier import LEVEL, RESAMPLES, SEED, Multiplier, multiplier

__all__ = ["EXTRAPOLATE", "CSV_COLUMNS", "reference_label", "add_compute_multipliers",
           "compute_equivalent_section", "compute_figures", "multiplier_against",
           "multiplier_lines", "fmt_multiplier"]

# the report reads multipliers off the reference curve extended by at most one budget step
EXTRAPOLATE = True
# (summary-field prefix, cost of a summary row, what the cost is)
COSTS = (("compute_multiplier", lambda a: a["gmacs"], "compute"),
         ("wallclock_multiplier",
          lambda a: 1.0 / a["speed_train_img_s"] if a.get("speed_train_img_s") else None,
          "wall-clock"))
MISSING = {"compute": "MACs not counted", "wall-clock": "training speed not measured"}
CSV_COLUMNS = [f"{p}{s}" for p, _, _ in COSTS for s in ("", "_ci_low", "_ci_high", "_note")] \
    + ["compute_multiplier_ref"]
SECTION = "compute_equivalent"


def reference_label(rows: list[dict]) -> tuple[str, str]:
    """The reference family's label among one data set's summary rows and why it is the one:
    the suite's ``reference:`` row, else the ``resnet`` family (depth knob first, then suite
    order); ("", reason) when there is none."""
    ref = next((a["ref_label"] for a in rows if a.get("ref_label")), "")
    if ref:
        return ref, "the suite's reference row"
    deep = [a for a in rows if a["family"] == "resnet" and a["top1_by_seed"]]
    deep.sort(key=lambda a: a["knob"] != "depth")  # stable: suite order within each
    if deep:
        return deep[0]["label"], "the deepening baseline (resnet family)"
    return "", "no reference row (the suite names no `reference:` and has no resnet family)"


def _points(rows: list[dict], label: str, cost) -> tuple[list[float], list[list[float]]]:
    pts = [a for a in rows if a["label"] == label and a["top1_by_seed"] and cost(a)]
    return [cost(a) for a in pts], [list(a["top1_by_seed"].values()) for a in pts]


def _note(m: Multiplier) -> str:
    """Why the number is missing or how to read it; "" for a plain interpolated number."""
    parts = []
    if m.value is None:
        parts.append(f"{m.position} the reference's range")
    elif m.extrapolated:
        parts.append(f"extrapolated {m.position} the reference's range (at most one budget step)")
    if m.no_interval:
        parts.append(f"no interval: {m.no_interval}")
    elif m.value is not None and (m.ci_low is None or m.ci_high is None):
        open_ = [f"{100 * s:.0f}%" if s >= 0.005 else "<1%" for s in (m.share_below, m.share_above)]
        open_ = [f"{p} of resamples {w} the range" for p, s, w in
                 zip(open_, (m.share_below, m.share_above), ("below", "above")) if s]
        parts.append("interval open: " + ", ".join(open_))
    return "; ".join(parts)


def _against(a: dict, rows: list[dict], ref: str, cost, what: str) -> tuple[Multiplier | None, str]:
    """Row ``a``'s multiplier against ``ref``'s curve in one cost, or (None, the reason)."""
    if a["label"] == ref:
        return None, "the reference"
    if not a["top1_by_seed"]:
        return None, "no finished runs"
    costs, samples = _points(rows, ref, cost)
    if not cost(a):
        return None, MISSING[what]
    if len(set(costs)) < 2:
        return None, (f"the reference ({ref}) has results at one budget only"
                      if what == "compute" else
                      f"{MISSING[what]} at two or more of the reference's budgets")
    m = multiplier(cost(a), list(a["top1_by_seed"].values()), costs, samples,
                   resamples=RESAMPLES, level=LEVEL, seed=SEED, extrapolate=EXTRAPOLATE)
    return m, _note(m)


def add_compute_multipliers(summary: list[dict]) -> None:
    """``SUMMARY_STEPS`` step: each row's multipliers against its data set's reference curve
    (fields of :data:`CSV_COLUMNS`; ``compute_equivalent``: the :class:`Multiplier` objects)."""
    for ds in sorted({a["dataset"] for a in summary}):
        rows = [a for a in summary if a["dataset"] == ds]
        ref, why = reference_label(rows)
        for a in rows:
            a["compute_multiplier_ref"] = ref
            a["compute_equivalent"] = {"reference": ref, "why": why}
            for prefix, cost, what in COSTS:
                m, note = _against(a, rows, ref, cost, what) if ref else (None, why)
                a["compute_equivalent"][prefix] = m
                shown = m if m is not None and m.value is not None else None  # no lone CI
                a[prefix] = shown.value if shown else None
                a[f"{prefix}_ci_low"] = shown.ci_low if shown else None
                a[f"{prefix}_ci_high"] = shown.ci_high if shown else None
                a[f"{prefix}_note"] = note


def fmt_multiplier(v: float | None) -> str:
    return "—" if v is None else f"{v:.3g}×"


def _cell(a: dict, prefix: str) -> str:
    m = a["compute_equivalent"][prefix]
    note = a[f"{prefix}_note"]
    if m is None:
        return "reference" if note == "the reference" else md_escape(note)
    if m.value is None:  # the bound needs only that the reference keeps rising with cost
        return (f"{m.position} the reference's range "
                f"({'<' if m.position == 'below' else '>'} {fmt_multiplier(m.bound)})")
    if m.no_interval:
        ci = " (no interval)"
    else:
        ci = (f" [{'below range' if m.ci_low is None else fmt_multiplier(m.ci_low)}, "
              f"{'above range' if m.ci_high is None else fmt_multiplier(m.ci_high)}]")
    return f"**{fmt_multiplier(m.value)}**{ci}" + (" (extrapolated)" if m.extrapolated else "")


def _ref_budgets(rows: list[dict], ref: str) -> int:
    return len({a["gmacs"] for a in rows if a["label"] == ref and a["top1_by_seed"]
                and a["gmacs"]})


def compute_equivalent_section(ctx) -> list[str]:
    """The section (``report.document.SECTIONS``); with no reference curve anywhere, one
    sentence saying why instead."""
    summary = [a for a in ctx.summary if "compute_equivalent" in a]
    datasets = sorted({a["dataset"] for a in summary})
    shown = []
    for ds in datasets:
        rows = [a for a in summary if a["dataset"] == ds]
        ref = rows[0]["compute_equivalent"]["reference"]
        if ref and _ref_budgets(rows, ref) >= 2:
            shown.append(ds)
    if not shown:
        if not summary:
            return []
        rows = [a for a in summary if a["dataset"] == datasets[0]]
        ref, why = rows[0]["compute_equivalent"]["reference"], rows[0]["compute_equivalent"]["why"]
        reason = (f"the reference ({md_escape(ref)}) has results at "
                  f"{_ref_budgets(rows, ref)} budget only" if ref else why)
        return [f"Compute-equivalent multipliers: not given, {reason}; they need the "
                "reference family trained at two or more budgets (`budgets_gmacs`).", ""]
    md = ["## Compute-equivalent", ""]
    for ds in shown:
        rows = [a for a in summary if a["dataset"] == ds]
        info = rows[0]["compute_equivalent"]
        ref = info["reference"]
        wall = any(a["compute_equivalent"]["wallclock_multiplier"] for a in rows)
        if len(datasets) > 1:
            md += [f"### {md_escape(ds)}", ""]
        md += [f"How much compute would the reference, **{md_escape(ref)}** "
               f"({info['why']}), need to reach each row's mean top-1? Its mean top-1 at its "
               f"{_ref_budgets(rows, ref)} budgets, made non-decreasing (isotonic regression) "
               "and joined by straight lines in log(MACs), is the curve; a row **worth N× the "
               "reference's compute** reaches the accuracy the reference reaches at N times "
               "the row's MACs (N > 1: the design beats the reference's scaling). "
               "Extrapolation: at most one budget step beyond the reference's range, along its "
               "end segment, marked (extrapolated); further out the row is \"below\" or "
               "\"above the reference's range\", with no number but the bound its lowest "
               "(highest) budget gives, if the reference's accuracy keeps rising with compute. "
               f"[CI]: {100 * LEVEL:g}% percentile bootstrap over seeds, {RESAMPLES:,} "
               "resamples drawing the row's seeds and, independently, each reference budget's "
               f"seeds (numpy default_rng({SEED})); an end reads \"below/above range\" where "
               "that tail of resamples falls beyond the curve. MACs and speeds are taken as "
               "measured, not resampled."
               + (" Wall-clock: the same with the cost = training time per image "
                  "(1 / the training img/s measured after each run, `speed_train_img_s`), "
                  "where speed was measured."
                  if wall else " Wall-clock: training speed not measured."),
               ""]
        head = ["budget (GMACs)", "model", "GMACs", "top-1 (%)",
                "worth (× the reference's MACs) [CI]"]
        if wall:
            head.append("worth (× the reference's wall-clock) [CI]")
        md += ["| " + " | ".join(head) + " |", "|---|---|---:|---:|" + "---:|" * (len(head) - 4)]
        prev = object()
        for a in rows:
            cells = [fmt_budget(a["budget_gmacs"]) if a["budget_gmacs"] != prev else "",
                     md_escape(a["label"]), fmt_gmacs(a["gmacs"]),
                     fmt_acc(a["top1_mean"], a["top1_std"]), _cell(a, "compute_multiplier")]
            if wall:
                cells.append(_cell(a, "wallclock_multiplier"))
            prev = a["budget_gmacs"]
            md.append("| " + " | ".join(cells) + " |")
        md.append("")
        for e in ctx.fig_entries:
            if e.get("section") == SECTION and e.get("dataset") == ds:
                md += [f"![{e['title']}](figures/{e['files'][0]})", "", e["caption"], ""]
    return md


def _panel(ax, rows: list[dict], ref: str, prefix: str, cost, scale: float, xlabel: str,
           colors: dict) -> None:
    import numpy as np

    costs, samples = _points(rows, ref, cost)
    ms = [a["compute_equivalent"][prefix] for a in rows]
    curve = next((m.curve for m in ms if m is not None), None)
    if curve is not None:
        x = np.array(curve.costs) * scale
        ax.plot(x, curve.top1, color="0.2", lw=1.8,
                label=f"reference curve ({ref})", zorder=2)
        f, label = curve.top1, "one-step extrapolation"
        for ends in (((x[0] ** 2 / x[1], x[0]), (2 * f[0] - f[1], f[0])),
                     ((x[-1], x[-1] ** 2 / x[-2]), (f[-1], 2 * f[-1] - f[-2]))):
            if EXTRAPOLATE and ends[1][0] != ends[1][1]:  # a flat end is not extended
                ax.plot(*ends, color="0.2", ls="--", lw=1.0, zorder=2, label=label)
                label = None
    seen = set()
    for a, m in zip(rows, ms):
        c = cost(a)
        if a["top1_mean"] is None or not c:
            continue
        fam = a["family"]
        ax.errorbar([c * scale], [a["top1_mean"]], yerr=[a["top1_std"] or 0.0], color=colors[fam],
                    marker="s" if a["label"] == ref else "o", ms=5, capsize=2, ls="none",
                    label=fam if fam not in seen else None, zorder=3)
        seen.add(fam)
        if m is not None and m.cost_needed is not None:
            ax.annotate("", xy=(m.cost_needed * scale, a["top1_mean"]),
                        xytext=(c * scale, a["top1_mean"]),
                        arrowprops={"arrowstyle": "->", "color": colors[fam], "lw": 1.0,
                                    "ls": ":" if m.extrapolated else "-"})
            ax.annotate(f"{m.value:.3g}×", (math.sqrt(m.cost_needed * c) * scale,
                                            a["top1_mean"]), textcoords="offset points",
                        xytext=(0, 3), ha="center", fontsize=7, color=colors[fam])
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.set_xlabel(xlabel + ", log scale")
    ax.grid(True, alpha=0.3, which="both")


def compute_figures(summary: list[dict], fig_dir: Path) -> list[dict]:
    """Per data set with a reference curve: top-1 against GMACs (and against training time
    per image where measured), the reference curve and each row's horizontal distance to it.
    Entries carry ``section``/``dataset`` so that the section, not the Figures list, shows them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mpbench.report.figures import STYLE, family_colors

    entries = []
    datasets = sorted({a["dataset"] for a in summary if "compute_equivalent" in a})
    for ds in datasets:
        rows = [a for a in summary if a["dataset"] == ds]
        ref = rows[0]["compute_equivalent"]["reference"]
        if not ref or _ref_budgets(rows, ref) < 2:
            continue
        wall = any(a["compute_equivalent"]["wallclock_multiplier"] for a in rows)
        colors = family_colors(sorted({a["family"] for a in rows}))
        with plt.rc_context(STYLE):
            fig, axes = plt.subplots(1, 2 if wall else 1, figsize=(11.0 if wall else 6.5, 4.5),
                                     squeeze=False)
            _panel(axes[0][0], rows, ref, "compute_multiplier", COSTS[0][1], 1.0,
                   "achieved GMACs (fvcore MACs, batch 1)", colors)
            if wall:
                _panel(axes[0][1], rows, ref, "wallclock_multiplier", COSTS[1][1], 1000.0,
                       "training time per 1,000 images (s; 1 / measured training img/s)", colors)
            axes[0][0].set_ylabel(f"{rows[0].get('split') or 'test'} top-1 (%), mean ± std")
            axes[0][0].legend(loc="best", frameon=False)
            fig.suptitle(f"Compute-equivalent: each row against {ref}'s curve"
                         + (f" ({ds})" if len(datasets) > 1 else ""))
            fig.tight_layout()
            stem = "compute_equivalent" + (f"_{ds}" if len(datasets) > 1 else "")
            fig_dir.mkdir(parents=True, exist_ok=True)
            fig.savefig(fig_dir / f"{stem}.png", dpi=150, metadata={"Software": None})
            fig.savefig(fig_dir / f"{stem}.svg", metadata={"Date": None, "Creator": None})
            plt.close(fig)
        entries.append({
            "title": "Compute-equivalent" + (f" ({ds})" if len(datasets) > 1 else ""),
            "files": [f"{stem}.png", f"{stem}.svg"], "section": SECTION, "dataset": ds,
            "caption": f"Black line: {ref}'s fitted curve (dashed: the one-step extrapolation); "
                       "squares: its budgets; arrows: from each row to the cost at which the "
                       "reference reaches the row's mean top-1, labelled with the multiplier "
                       "(dotted: extrapolated). Colour: family; error bars: std over seeds."})
    return entries


def multiplier_against(summary: list[dict], a: dict, label_b: str) -> dict | None:
    """``mpbench compare``: row ``a`` against ``label_b``'s curve in ``a``'s data set, in MACs
    and wall-clock; None when B has results at fewer than two budgets."""
    rows = [r for r in summary if r["dataset"] == a["dataset"]]
    if _ref_budgets(rows, label_b) < 2 or a["label"] == label_b:
        return None
    out = {"against": label_b, "budgets": _ref_budgets(rows, label_b), "resamples": RESAMPLES,
           "level": LEVEL}
    for prefix, cost, what in COSTS:
        m, note = _against(a, rows, label_b, cost, what)
        shown = m if m is not None and m.value is not None else None
        out[prefix] = {"value": shown.value if shown else None,
                       "ci_low": shown.ci_low if shown else None,
                       "ci_high": shown.ci_high if shown else None, "note": note,
                       "extrapolated": bool(m and m.extrapolated)}
    return out


def multiplier_lines(rec: dict) -> list[str]:
    """The lines ``mpbench compare`` prints for :func:`multiplier_against`'s record."""
    mul = rec.get("multiplier")
    if not mul:
        return []
    lines = []
    for prefix, _, what in COSTS:
        m = mul[prefix]
        if m["value"] is None:
            if m["note"] != MISSING[what]:
                lines.append(f"  {rec['a']} in {rec['b']}'s {what}: {m['note']}")
            continue
        ci = (f"[{fmt_multiplier(m['ci_low']) if m['ci_low'] else 'below range'}, "
              f"{fmt_multiplier(m['ci_high']) if m['ci_high'] else 'above range'}]")
        lines.append(f"  {rec['a']} worth {fmt_multiplier(m['value'])} {rec['b']}'s {what} "
                     f"{ci} ({100 * mul['level']:g}% bootstrap, {mul['resamples']:,} resamples; "
                     f"{rec['b']}'s curve over {mul['budgets']} budgets)"
                     + (f"; {m['note']}" if m["note"] else ""))
    return lines
