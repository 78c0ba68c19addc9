"""Report figures (matplotlib, Agg backend), each saved as PNG and SVG.

* ``top1_vs_gmacs``: mean top-1 against achieved GMACs, colour = family, one marker per model
  configuration (lines join a configuration across budgets), error bars = std over seeds,
  the Pareto front (no other configuration is both cheaper and more accurate) and the budgets.
* ``top1_vs_params``: the same against parameters (log axis when they span more than 4x).
* ``curves``: test top-1 per epoch, mean over seeds (band: ± std), one panel per budget.
* ``top1_vs_train_speed`` / ``top1_vs_infer_speed`` (results with ``speed_*`` columns): mean
  top-1 against the images/s ``mpbench bench`` measured on the run's device after training.
* ``time_to_accuracy`` (the same results): top-1 of every run against its cumulative training
  wall-clock (``epoch_time_s`` in metrics.json).
* ``path_usage_<label>``: mean path usage per superclass (or class) and layer of a trained
  multi-path network, from :mod:`mpbench.report.analyze`'s stored CSV.

Files are reproducible: fixed sizes and DPI, no timestamps (``metadata``), a fixed SVG hash
salt; the same results give byte-identical files with the same matplotlib.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter  # noqa: E402

__all__ = ["make_figures", "family_colors", "pareto_front"]

MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p"]
LINESTYLES = ["-", "--", ":", "-."]
STYLE = {"svg.hashsalt": "mpbench", "svg.fonttype": "path", "font.size": 9,
         "axes.titlesize": 10, "legend.fontsize": 8, "figure.dpi": 100}


# fixed colours for the built-in families (the multi-path network in red), so that a family
# keeps its colour across figures and reports; other families take the remaining colours
FAMILY_COLORS = {
    "mp_resnet": "#d62728", "resnet": "#1f77b4", "resnet4": "#17becf", "wrn": "#2ca02c",
    "wrn_postact": "#bcbd22", "resnext": "#ff7f0e", "se_resnet": "#9467bd",
    "sk_resnet": "#e377c2", "resnest": "#8c564b", "res2net": "#7f7f7f", "ensemble": "#000000",
}
SPARE_COLORS = ["#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d",
                "#31a354", "#756bb1", "#636363"]


def family_colors(families: list[str]) -> dict[str, str]:
    out, spare = {}, iter(SPARE_COLORS * 10)
    for f in sorted(families):
        out[f] = FAMILY_COLORS.get(f) or next(spare)
    return out


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated by a cheaper-or-equal, more accurate one, sorted by cost."""
    front, best = [], -math.inf
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def draw_pareto_front(ax, points: list[tuple[float, float]]) -> None:
    """The front of ``points`` (cost, top-1) as a dashed step line (a ring for one point)."""
    front = pareto_front(points)
    if len(front) > 1:
        fx, fy = zip(*front)
        ax.step(fx, fy, where="post", color="0.35", lw=1.2, ls="--", zorder=0,
                label="Pareto front")
    elif front:
        ax.plot(*front[0], marker="o", ms=14, mfc="none", mec="0.35", ls="none",
                label="Pareto front (one point)")


def save_figure(fig, fig_dir: Path, stem: str) -> list[str]:
    """PNG and SVG without timestamps: a rerun writes byte-identical files."""
    fig_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(fig_dir / f"{stem}.png", dpi=150, metadata={"Software": None})
    fig.savefig(fig_dir / f"{stem}.svg", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    return [f"{stem}.png", f"{stem}.svg"]


def _styles(summary: list[dict]) -> dict[str, dict]:
    """label -> colour (by family), marker and line style (by position within the family)."""
    colors = family_colors(sorted({a["family"] for a in summary}))
    styles, per_family = {}, {}
    for a in summary:
        if a["label"] in styles:
            continue
        k = per_family.get(a["family"], 0)
        per_family[a["family"]] = k + 1
        styles[a["label"]] = {"color": colors[a["family"]], "marker": MARKERS[k % len(MARKERS)],
                              "ls": LINESTYLES[k % len(LINESTYLES)], "family": a["family"]}
    return styles


def _legend_order(summary: list[dict], styles: dict) -> list[str]:
    return sorted(styles, key=lambda lab: (styles[lab]["family"], lab))


def _accuracy_plot(summary: list[dict], styles: dict, xkey: str, budgets: list[float],
                   title: str):
    pts = [a for a in summary if a["top1_mean"] is not None and a[xkey]]
    scale = 1e6 if xkey == "params" else 1.0
    fig, ax = plt.subplots(figsize=(9.0, 5.0))
    for label in _legend_order(summary, styles):
        mine = sorted((a for a in pts if a["label"] == label), key=lambda a: a[xkey])
        if not mine:
            continue
        st = styles[label]
        xs = [a[xkey] / scale for a in mine]
        ys = [a["top1_mean"] for a in mine]
        errs = [a["top1_std"] or 0.0 for a in mine]
        ax.errorbar(xs, ys, yerr=errs, color=st["color"], marker=st["marker"], ls="-" if len(xs) > 1 else "none",
                    lw=1.0, ms=6, capsize=3, label=f"{label} ({st['family']})", alpha=0.9)
    draw_pareto_front(ax, [(a[xkey] / scale, a["top1_mean"]) for a in pts])
    xs = [a[xkey] / scale for a in pts]
    log = bool(xs) and max(xs) / min(xs) > 4
    if log:
        ax.set_xscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain if max(xs) / min(xs) < 30 else NullFormatter())
    for b in budgets:
        ax.axvline(b, color="0.6", ls=":", lw=1.0, zorder=0)
        ax.annotate(f"budget {b:g}", (b, 1.0), xycoords=("data", "axes fraction"),
                    xytext=(3, -3), textcoords="offset points", va="top", fontsize=7,
                    color="0.4", rotation=90)
    ax.set_xlabel(("achieved GMACs (fvcore MACs, batch 1)" if xkey == "gmacs" else
                   "parameters (M)") + (", log scale" if log else ""))
    ax.set_ylabel("test top-1 (%), mean ± std over seeds")
    ax.set_title(title)
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, frameon=False)
    fig.tight_layout()
    return fig


def _speed_plot(summary: list[dict], styles: dict, xkey: str, xlabel: str, ylabel: str,
                title: str):
    """Mean top-1 against a measured speed (more is better: no Pareto step here)."""
    fig, ax = plt.subplots(figsize=(9.0, 5.0))
    for label in _legend_order(summary, styles):
        mine = sorted((a for a in summary if a["label"] == label and a[xkey]
                       and a["top1_mean"] is not None), key=lambda a: a[xkey])
        if not mine:
            continue
        st = styles[label]
        ax.errorbar([a[xkey] for a in mine], [a["top1_mean"] for a in mine],
                    yerr=[a["top1_std"] or 0.0 for a in mine], color=st["color"],
                    marker=st["marker"], ls="-" if len(mine) > 1 else "none", lw=1.0, ms=6,
                    capsize=3, label=f"{label} ({st['family']})", alpha=0.9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, frameon=False)
    fig.tight_layout()
    return fig


def _time_to_accuracy_plot(rs, summary: list[dict], styles: dict, key: str, ylabel: str,
                           title: str):
    """Every run's top-1 against its cumulative training wall-clock (one line per seed)."""
    fig, ax = plt.subplots(figsize=(9.0, 5.0))
    handles = {}
    for a in sorted(summary, key=lambda a: (styles[a["label"]]["family"], a["label"],
                                            a["budget_gmacs"] or 0.0)):
        st = styles[a["label"]]
        for run_id in a["run_ids"]:
            t, xs, ys = 0.0, [], []
            for m in rs.metrics.get(run_id) or []:
                if m.get("epoch_time_s") is None:
                    continue
                t += float(m["epoch_time_s"])
                if m.get(key) is not None:
                    xs.append(t / 60.0)
                    ys.append(float(m[key]))
            if xs:
                (line,) = ax.plot(xs, ys, color=st["color"], ls=st["ls"], lw=1.0,
                                  marker=st["marker"] if len(xs) <= 12 else None, ms=3,
                                  alpha=0.8)
                handles.setdefault(a["label"], line)
    ax.set_xlabel("cumulative training wall-clock (min; evaluation excluded)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    order = [lab for lab in _legend_order(summary, styles) if lab in handles]
    ax.legend([handles[lab] for lab in order],
              [f"{lab} ({styles[lab]['family']})" for lab in order],
              loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, frameon=False)
    fig.tight_layout()
    return fig


def curve_key(rs, run_ids) -> str:
    """``val_top1`` when the runs recorded a validation split per epoch, else ``test_top1``."""
    return "val_top1" if any(m.get("val_top1") is not None for r in run_ids
                             for m in rs.metrics.get(r) or []) else "test_top1"


def _mean_curve(histories: list[list[dict]], key: str = "test_top1"
                ) -> tuple[list[int], list[float], list[float]]:
    by_epoch: dict[int, list[float]] = {}
    for h in histories:
        for m in h:
            if m.get(key) is not None:
                by_epoch.setdefault(int(m["epoch"]), []).append(float(m[key]))
    epochs = sorted(by_epoch)
    means = [math.fsum(by_epoch[e]) / len(by_epoch[e]) for e in epochs]
    stds = []
    for e, m in zip(epochs, means):
        v = by_epoch[e]
        stds.append(math.sqrt(math.fsum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0)
    return epochs, means, stds


def _curves_plot(rs, summary: list[dict], styles: dict, title: str, key: str = "test_top1"):
    budgets = []
    for a in summary:
        if a["budget_gmacs"] not in budgets:
            budgets.append(a["budget_gmacs"])
    n = len(budgets)
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n + 2.6, 4.4), sharey=True, squeeze=False)
    handles = {}
    for ax, b in zip(axes[0], budgets):
        for a in sorted((a for a in summary if a["budget_gmacs"] == b),
                        key=lambda a: (styles[a["label"]]["family"], a["label"])):
            hist = [rs.metrics[r] for r in a["run_ids"] if rs.metrics.get(r)]
            epochs, means, stds = _mean_curve(hist, key)
            if not epochs:
                continue
            st = styles[a["label"]]
            (line,) = ax.plot(epochs, means, color=st["color"], ls=st["ls"], lw=1.3,
                              marker=st["marker"] if len(epochs) <= 12 else None, ms=4)
            if len(hist) > 1:
                ax.fill_between(epochs, [m - s for m, s in zip(means, stds)],
                                [m + s for m, s in zip(means, stds)], color=st["color"],
                                alpha=0.12, lw=0)
            handles.setdefault(a["label"], line)
        ax.set_title("budget " + (f"{b:g} GMACs" if b is not None else "as given"))
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel(("validation" if key == "val_top1" else "test")
                          + " top-1 (%), mean over seeds")
    order = [lab for lab in _legend_order(summary, styles) if lab in handles]
    fig.legend([handles[lab] for lab in order],
               [f"{lab} ({styles[lab]['family']})" for lab in order],
               loc="upper left", bbox_to_anchor=(1.0 - 2.5 / fig.get_figwidth(), 0.93),
               frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1.0 - 2.6 / fig.get_figwidth(), 1.0))
    return fig


def _heatmap_plot(usage_csv: Path, level: str, title: str):
    import csv

    from matplotlib.colors import TwoSlopeNorm

    with open(usage_csv, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["level"] == level]
    layers: list[str] = []
    for r in rows:
        if r["layer"] not in layers:
            layers.append(r["layer"])
    names = {int(r["label_index"]): r["label"] for r in rows}
    paths = max(int(r["path"]) for r in rows) + 1
    k = max(names) + 1
    grid = [[float("nan")] * (len(layers) * paths) for _ in range(k)]
    for r in rows:
        grid[int(r["label_index"])][layers.index(r["layer"]) * paths + int(r["path"])] = float(r["usage"])
    flat = [v for row in grid for v in row if not math.isnan(v)]
    centre = 1.0 / paths
    norm = TwoSlopeNorm(vcenter=centre, vmin=min(min(flat), centre - 1e-3),
                        vmax=max(max(flat), centre + 1e-3))
    width = min(16.0, max(6.5, 2.5 + 0.16 * len(layers) * paths))
    height = min(14.0, max(3.8, 1.8 + 0.2 * k))
    fig, ax = plt.subplots(figsize=(width, height))
    im = ax.imshow(grid, aspect="auto", cmap="RdBu_r", norm=norm, interpolation="nearest")
    ax.set_yticks(range(k), [names.get(i, str(i)) for i in range(k)],
                  fontsize=6 if k > 30 else 8)
    short = [lay.replace("stages.", "s").replace(".route", "/r").replace("blocks.", "b")
             for lay in layers]
    ax.set_xticks([i * paths + (paths - 1) / 2 for i in range(len(layers))], short,
                  rotation=90, fontsize=7)
    for i in range(1, len(layers)):
        ax.axvline(i * paths - 0.5, color="k", lw=0.5)
    ax.set_xlabel(f"cross-connection (layer); {paths} columns = {paths} paths each")
    ax.set_ylabel(level)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label=f"mean path usage (uniform = {centre:.3g})", fraction=0.04)
    fig.tight_layout()
    return fig


def _slug(text: str) -> str:
    import re
    return re.sub(r"[^A-Za-z0-9_.]+", "-", str(text)).strip("-")


def make_figures(rs, summary: list[dict], analyses: list[dict], fig_dir: Path) -> list[dict]:
    """Draw every figure; returns ``[{title, files, caption?, notes?}]`` in report order."""
    entries: list[dict] = []
    budgets = list((rs.suite or {}).get("budgets_gmacs") or [])
    datasets = sorted({a["dataset"] for a in summary})
    with plt.rc_context(STYLE):
        for ds in datasets:
            rows = [a for a in summary if a["dataset"] == ds]
            styles = _styles(rows)
            sfx = f"_{_slug(ds)}" if len(datasets) > 1 else ""
            on = f" ({ds})" if len(datasets) > 1 else ""
            if any(a["top1_mean"] is not None for a in rows):
                fig = _accuracy_plot(rows, styles, "gmacs", budgets,
                                     f"Top-1 vs compute{on}")
                entries.append({"title": f"Top-1 vs GMACs{on}",
                                "files": save_figure(fig, fig_dir, f"top1_vs_gmacs{sfx}"),
                                "caption": "Colour: family; error bars: std over seeds; dashed "
                                           "step: Pareto front; dotted verticals: budgets."})
                fig = _accuracy_plot(rows, styles, "params", [], f"Top-1 vs parameters{on}")
                entries.append({"title": f"Top-1 vs parameters{on}",
                                "files": save_figure(fig, fig_dir, f"top1_vs_params{sfx}")})
            run_ids = [r for a in rows for r in a["run_ids"]]
            key = curve_key(rs, run_ids)
            split = "validation" if key == "val_top1" else "test"
            flag = ("" if key == "val_top1" else
                    " These curves are on the **test set** (the runs have no validation "
                    "split): read them, do not choose epochs or settings from them.")
            if any(rs.metrics.get(r) for r in run_ids):
                fig = _curves_plot(rs, rows, styles,
                                   f"{split.capitalize()} accuracy during training{on}", key)
                entries.append({"title": f"{split.capitalize()} accuracy curves{on}",
                                "files": save_figure(fig, fig_dir, f"curves{sfx}"),
                                "caption": "Mean over seeds; shaded: ± std." + flag})
            if any(a.get("speed_train_img_s") or a.get("speed_infer_img_s") for a in rows):
                devices = sorted({a["speed_device"] for a in rows if a.get("speed_device")})
                dev = ", ".join(devices) or "the run's device"
                ylab = f"{rows[0].get('split') or 'test'} top-1 (%), mean ± std over seeds"
                for k, what, stem in (("speed_train_img_s", "training", "train"),
                                      ("speed_infer_img_s", "inference", "infer")):
                    if not any(a.get(k) for a in rows):
                        continue
                    fig = _speed_plot(rows, styles, k, f"{what} images/s on {dev} "
                                      "(mpbench bench, after training)", ylab,
                                      f"Top-1 vs {what} speed{on}")
                    entries.append({"title": f"Top-1 vs {what} speed{on}",
                                    "files": save_figure(fig, fig_dir, f"top1_vs_{stem}_speed{sfx}"),
                                    "caption": "Equal MACs are not equal speed: right is faster. "
                                               "Colour: family; error bars: std over seeds."})
                if any(m.get("epoch_time_s") is not None for r in run_ids
                       for m in rs.metrics.get(r) or []):
                    fig = _time_to_accuracy_plot(rs, rows, styles, key,
                                                 f"{split} top-1 (%)",
                                                 f"Time to accuracy{on}")
                    entries.append({"title": f"Time to accuracy{on}",
                                    "files": save_figure(fig, fig_dir, f"time_to_accuracy{sfx}"),
                                    "caption": f"{split.capitalize()} top-1 of every run (one "
                                               "line per seed) against its cumulative training "
                                               "wall-clock (metrics.json epoch_time_s)." + flag})
        for an in analyses:
            a = an["summary"]
            stem = f"path_usage_{_slug(a['label'])}_b{fmt(a['budget_gmacs'])}"
            title = (f"{a['label']} at {fmt(a['budget_gmacs'])} GMACs: path usage by "
                     f"{an['level']}\n(test set, run {an['run_id']})")
            fig = _heatmap_plot(Path(an["usage_csv"]), an["level"], title)
            caption = ("Share of gate mass each path receives, averaged over the test images "
                       f"of each {an['level']}; red: used more than uniform, blue: less.")
            s = an.get("scores")
            if s:
                caption += (f" Specialisation (normalised mutual information of {an['level']} "
                            f"and path, mean over layers): {s['trained']:.3g} trained, "
                            f"{s['untrained']:.3g} untrained, {s['shuffled']:.3g} with shuffled "
                            "labels (chance floor).")
            entries.append({"title": f"Path usage: {a['label']} at {fmt(a['budget_gmacs'])} GMACs",
                            "files": save_figure(fig, fig_dir, stem), "caption": caption})
    return entries


def fmt(b) -> str:
    return "as-given" if b is None else f"{b:g}"
