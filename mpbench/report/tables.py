"""Reports: accuracy-vs-complexity tables (markdown, CSV, LaTeX) and figures from stored results.

A report is built from one suite output directory (``mpbench run --out``)::

    results.csv, suite.json, plan.json, runs/<run_id>/{config,metrics,result|failure}.json

and written to an output folder::

    report.md       header (data set, suite, recipe, seeds, device, dates, MACs convention),
                    one table per data set, figures, notes
    summary.csv     the same rows as the tables, unformatted
    table.tex       the same tables as LaTeX (booktabs)
    figures/        PNG + SVG (see :mod:`mpbench.report.figures`)
    results/        (``reports/<name>/`` only) the copy of the results the report came from
    report.json     the options (title, note) so that a regeneration is identical

Rows are one per (data set, budget, model configuration label). Top-1/top-5 are mean ± sample
standard deviation (n - 1) over the seeds whose run finished (status ``done``); runs that
diverged, ran out of memory, failed or have not finished are counted in the row's "runs"
cell, never dropped. The best mean top-1 of each budget is marked.

Determinism: everything written is a function of the stored results and the options alone
(rows sorted by data set, budget, suite order; fixed float formats; dates only from the
results), so regenerating gives bit-identical markdown, CSV and LaTeX.
"""
from __future__ import annotations

import json
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mpbench.errors import UserError

__all__ = ["MACS_CONVENTION", "ResultSet", "load_results", "aggregate", "markdown_table",
           "latex_table", "summary_csv", "build_report", "copy_results", "regenerate_all",
           "add_significance", "compare_labels", "format_comparison"]

MACS_CONVENTION = "fvcore MACs, batch 1, eval mode; 1 MAC = one multiply-add"
STATUS_ORDER = ("done", "diverged", "oom", "failed", "partial", "pending")
SUMMARY_COLUMNS = [
    "dataset", "budget_gmacs", "label", "model", "family", "knob", "knob_value", "gmacs",
    "deviation", "params", "runs", "n_done", "n_diverged", "n_oom", "n_failed", "n_pending",
    "status", "seeds", "epochs", "top1_mean", "top1_std", "top5_mean", "top5_std",
    "train_time_s", "img_per_s", "best", "tied_best", "split", "val_top1_mean", "val_top1_std",
    "significance_level",
    *[f"vs_best_{k}" for k in ("label", "test", "n", "diff", "ci_low", "ci_high", "p", "p_beats")],
    *[f"vs_ref_{k}" for k in ("label", "test", "n", "diff", "ci_low", "ci_high", "p", "p_beats")],
    "published_top1", "published_diff", "published_source",
    "speed_train_img_s", "speed_infer_img_s", "speed_device", "train_speed_rel", "train_speed_vs",
]
SPEED_COLUMNS = ("speed_train_img_s", "speed_infer_img_s")
# files of a run that a report needs (never checkpoints)
RUN_FILES = ("config.json", "metrics.json", "result.json", "failure.json")
ANALYSIS_FILES = ("path_usage_class.csv", "path_usage_superclass.csv", "specialisation.csv")


# --------------------------------------------------------------------------- loading

@dataclass
class ResultSet:
    """Everything a report needs from one suite output directory."""

    root: Path
    suite: dict
    rows: list[dict]                       # one per planned or finished run
    metrics: dict[str, list[dict]] = field(default_factory=dict)  # run_id -> per-epoch dicts
    configs: dict[str, dict] = field(default_factory=dict)        # run_id -> config.json


def _num(v: Any) -> float | None:
    """A float, or None for empty / NaN / unparsable cells."""
    if v is None or v == "":
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def load_results(runs_dir: str | Path) -> ResultSet:
    """Read a suite output directory; raises :class:`UserError` if it is not one."""
    import csv

    root = Path(runs_dir)
    if not root.is_dir():
        raise UserError(f"{root}: no such directory; give an `mpbench run` output directory "
                        f"(it holds results.csv)")
    csv_path = root / "results.csv"
    if csv_path.exists():
        with open(csv_path, newline="") as f:
            rows = [dict(r) for r in csv.DictReader(f)]
    elif (root / "runs").is_dir():
        from mpbench.suite.runner import collect_results
        rows = [{k: ("" if v is None else v) for k, v in r.items()} for r in collect_results(root)]
    else:
        raise UserError(f"{root}: no results.csv here; is this an `mpbench run` output directory?")
    suite = _read_json(root / "suite.json") or {}
    plan = _read_json(root / "plan.json") or []

    seen = {r.get("run_id") for r in rows}
    for p in plan:  # planned runs without a result are shown as pending, not dropped
        if p.get("run_id") in seen:
            continue
        metrics = _read_json(root / "runs" / p["run_id"] / "metrics.json") or []
        rows.append({**{k: p.get(k) for k in ("suite", "run_id", "model", "label", "family",
                                              "budget_gmacs", "gmacs", "params", "deviation",
                                              "knob", "knob_value", "seed")},
                     "dataset": (suite.get("dataset") or {}).get("name", ""),
                     "epochs": metrics[-1]["epoch"] if metrics else 0,
                     "status": "partial" if metrics else "pending"})
    if not rows:
        raise UserError(f"{root}: no finished runs and no plan: nothing to report")

    out = ResultSet(root, suite, [])
    for r in rows:
        run_id = str(r.get("run_id") or "")
        cfg = _read_json(root / "runs" / run_id / "config.json") if run_id else None
        if cfg:
            out.configs[run_id] = cfg
        metrics = _read_json(root / "runs" / run_id / "metrics.json") if run_id else None
        if isinstance(metrics, list):
            out.metrics[run_id] = metrics
        out.rows.append(_normalise_row(r))
    out.rows.sort(key=lambda r: (r["run_id"], r["seed"]))
    return out


def _normalise_row(r: dict) -> dict:
    budget = _num(r.get("budget_gmacs"))
    seed = _num(r.get("seed"))
    status = str(r.get("status") or "failed")
    return {
        "run_id": str(r.get("run_id") or ""), "suite": str(r.get("suite") or ""),
        "label": str(r.get("label") or r.get("model") or ""), "model": str(r.get("model") or ""),
        "family": str(r.get("family") or ""), "dataset": str(r.get("dataset") or ""),
        "budget_gmacs": budget, "gmacs": _num(r.get("gmacs")), "params": _num(r.get("params")),
        "deviation": _num(r.get("deviation")), "knob": str(r.get("knob") or ""),
        "knob_value": "" if r.get("knob_value") is None else str(r.get("knob_value")),
        "seed": int(seed) if seed is not None else -1, "epochs": int(_num(r.get("epochs")) or 0),
        "top1": _num(r.get("top1")), "top5": _num(r.get("top5")),
        "train_time_s": _num(r.get("train_time_s")), "img_per_s": _num(r.get("img_per_s")),
        "status": status, "device": str(r.get("device") or ""),
        "finished_at": str(r.get("finished_at") or ""), "error": str(r.get("error") or ""),
        "init": str(r.get("init") or ""), "init_mode": str(r.get("init_mode") or ""),
        # newer result columns (absent in older results: None / "")
        "split": str(r.get("split") or ""), "val_top1": _num(r.get("val_top1")),
        "val_top5": _num(r.get("val_top5")),
        "speed_train_img_s": _num(r.get("speed_train_img_s")),
        "speed_infer_img_s": _num(r.get("speed_infer_img_s")),
        "speed_device": str(r.get("speed_device") or ""),
    }


# --------------------------------------------------------------------------- aggregation

def _mean(xs: list[float]) -> float | None:
    return math.fsum(xs) / len(xs) if xs else None


def _std(xs: list[float]) -> float | None:
    """Sample standard deviation (n - 1); None below two values."""
    if len(xs) < 2:
        return None
    m = math.fsum(xs) / len(xs)
    return math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def _budget_key(b: float | None) -> tuple:
    return (1, 0.0) if b is None else (0, b)


def status_text(counts: dict[str, int]) -> str:
    """``"3"`` when every run finished, else e.g. ``"2 done, 1 diverged"``."""
    total = sum(counts.values())
    if counts.get("done", 0) == total:
        return str(total)
    return ", ".join(f"{counts[s]} {s}" for s in STATUS_ORDER if counts.get(s))


def aggregate(rows: list[dict], label_order: list[str] | None = None, *, level: float = 0.05,
              reference: str | None = None, published: dict[str, dict] | None = None
              ) -> list[dict]:
    """One summary row per (data set, budget, label); sorted; compared within each budget
    (:func:`add_significance`: the best mark only where significant at ``level``, every row
    against the best and against the ``reference`` label); ``published``: label -> the suite
    entry's ``reference`` ({top1, source}), printed beside the measured mean."""
    order = {lab: i for i, lab in enumerate(label_order or [])}
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["budget_gmacs"], r["label"]), []).append(r)
    out = []
    for (dataset, budget, label), runs in groups.items():
        runs = sorted(runs, key=lambda r: r["seed"])
        done = [r for r in runs if r["status"] == "done"]
        basis = done or runs
        counts = {s: 0 for s in STATUS_ORDER}
        for r in runs:
            counts[r["status"] if r["status"] in counts else "failed"] += 1
        top1 = [r["top1"] for r in done if r["top1"] is not None]
        top5 = [r["top5"] for r in done if r["top5"] is not None]
        val1 = [r["val_top1"] for r in done if r["val_top1"] is not None]
        first = basis[0]
        out.append({
            "dataset": dataset, "budget_gmacs": budget, "label": label, "model": first["model"],
            "family": first["family"], "knob": first["knob"], "knob_value": first["knob_value"],
            "gmacs": _mean([r["gmacs"] for r in basis if r["gmacs"] is not None]),
            "deviation": _mean([r["deviation"] for r in basis if r["deviation"] is not None]),
            "params": _mean([r["params"] for r in basis if r["params"] is not None]),
            "runs": len(runs), "n_done": len(done), "n_diverged": counts["diverged"],
            "n_oom": counts["oom"], "n_failed": counts["failed"],
            "n_pending": counts["pending"] + counts["partial"],
            "status": status_text(counts), "counts": counts,
            "seeds": " ".join(str(r["seed"]) for r in runs),
            "epochs": max((r["epochs"] for r in done), default=max(r["epochs"] for r in runs)),
            "top1_mean": _mean(top1), "top1_std": _std(top1),
            "top5_mean": _mean(top5), "top5_std": _std(top5),
            "train_time_s": _mean([r["train_time_s"] for r in done if r["train_time_s"]]),
            "img_per_s": _mean([r["img_per_s"] for r in done if r["img_per_s"]]),
            "best": False, "run_ids": [r["run_id"] for r in runs],
            "top1_by_seed": {r["seed"]: r["top1"] for r in done if r["top1"] is not None},
            "split": " ".join(sorted({r["split"] or "test" for r in done})) if done else "",
            "val_top1_mean": _mean(val1), "val_top1_std": _std(val1),
            **{k: _mean([r[k] for r in done if r[k]]) for k in SPEED_COLUMNS},
            "speed_device": " ".join(sorted({r["speed_device"] for r in done
                                            if r["speed_device"]})),
        })
    out.sort(key=lambda a: (a["dataset"], _budget_key(a["budget_gmacs"]),
                            order.get(a["label"], len(order)), a["label"]))
    add_significance(out, level=level, reference=reference, published=published)
    return out


def _compare_rows(a: dict, b: dict, level: float):
    """Top-1 of row ``a`` minus row ``b`` (:func:`mpbench.report.stats.compare`): paired over
    the seeds both finished when they share two or more, Welch otherwise."""
    from mpbench.report.stats import compare

    sa, sb = sorted(a["top1_by_seed"]), sorted(b["top1_by_seed"])
    return compare([a["top1_by_seed"][s] for s in sa], [b["top1_by_seed"][s] for s in sb],
                   seeds_a=sa, seeds_b=sb, level=level)


def add_significance(summary: list[dict], *, level: float = 0.05, reference: str | None = None,
                     published: dict[str, dict] | None = None) -> None:
    """Per (data set, budget): ``best`` (the best mean, only where it is significantly ahead
    of the runner-up), ``tied_best`` (otherwise: the best mean and every row not significantly
    worse, :func:`mpbench.report.stats.rank_with_ties`), ``vs_best``/``vs_ref`` (this row
    minus the best-mean / the reference row: a :class:`~mpbench.report.stats.Comparison`, None
    for that row itself or without finished runs), the published number and the training
    speed relative to the reference row (else the best-mean row)."""
    from mpbench.report.stats import rank_with_ties

    published = published or {}
    for a in summary:
        a.update(best=False, tied_best=False, vs_best=None, vs_ref=None, best_label="",
                 ref_label="", significance_level=level, train_speed_rel=None, train_speed_vs="")
        pub = published.get(a["label"])
        a["published"] = pub
        a["published_diff"] = (a["top1_mean"] - pub["top1"]
                               if pub and a["top1_mean"] is not None else None)
    for key in sorted({(a["dataset"], _budget_key(a["budget_gmacs"])) for a in summary}):
        rows = [a for a in summary if (a["dataset"], _budget_key(a["budget_gmacs"])) == key]
        group = [a for a in rows if a["top1_by_seed"]]
        if not group:
            continue
        by_label = {a["label"]: a for a in group}
        tied = rank_with_ties({k: list(v["top1_by_seed"].values()) for k, v in by_label.items()},
                              seeds={k: list(v["top1_by_seed"]) for k, v in by_label.items()},
                              level=level)
        top = by_label[tied[0]]
        if len(group) > 1:  # a lone row is best of nothing
            if len(tied) == 1:
                top["best"] = True
            else:
                for lab in tied:
                    by_label[lab]["tied_best"] = True
        ref = by_label.get(reference) if reference else None
        for a in group:
            a["best_label"] = top["label"]
            if a is not top:
                a["vs_best"] = _compare_rows(a, top, level)
            if ref is not None:
                a["ref_label"] = ref["label"]
                if a is not ref:
                    a["vs_ref"] = _compare_rows(a, ref, level)
        base = ref if ref is not None else top
        for a in rows:
            if a["speed_train_img_s"] and base["speed_train_img_s"]:
                a["train_speed_rel"] = a["speed_train_img_s"] / base["speed_train_img_s"]
                a["train_speed_vs"] = base["label"]


# --------------------------------------------------------------------------- formatting

def fmt_acc(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "—"
    return f"{mean:.2f} ± {std:.2f}" if std is not None else f"{mean:.2f}"


def fmt_gmacs(g: float | None) -> str:
    return "—" if g is None else f"{g:.4f}"


def fmt_params(p: float | None) -> str:
    return "—" if p is None else f"{p / 1e6:.3f}"


def fmt_budget(b: float | None) -> str:
    return "as given" if b is None else f"{b:g}"


def fmt_dev(d: float | None) -> str:
    return "—" if d is None else f"{100 * d:+.1f}%"


def fmt_duration(s: float | None) -> str:
    if s is None:
        return "—"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def fmt_rate(v: float | None) -> str:
    return "—" if v is None else f"{v:,.0f}"


def fmt_knob(a: dict) -> str:
    if not a["knob"]:
        return "—"
    value = a["knob_value"]
    try:
        value = f"{float(value):g}"
    except ValueError:
        pass
    return f"{a['knob']}={value}"


BEST_MARK = "★"
TIED_MARK = "(tied best)"
TABLE_HEAD = ["budget (GMACs)", "model", "family", "knob", "GMACs", "vs budget", "params (M)",
              "top-1 (%)", "top-5 (%)", "runs", "train time", "img/s"]


def split_name(summary: list[dict]) -> str | None:
    """The split every row's top-1 comes from ("test" for results that do not say), or None
    when the rows differ (then each row names its own)."""
    splits = {a["split"] for a in summary if a["split"]}
    return (splits.pop() if len(splits) == 1 else None) if splits else "test"


def fmt_p(p: float | None) -> str:
    if p is None or math.isnan(p):
        return "—"
    if p == 0.0:
        return "0"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def fmt_pp(d: float | None) -> str:
    return "—" if d is None or math.isnan(d) else f"{d:+.2f}"


def fmt_n(c) -> str:
    if c.test == "paired":
        return f"{c.n_pairs} paired"
    return f"{c.n_a} vs {c.n_b}"


def test_name(c) -> str:
    return {"paired": "paired t", "welch": "Welch t", "none": "none"}[c.test]


def _extra_columns(summary: list[dict]) -> dict[str, bool]:
    """Columns shown only when some row has them (older results render as before)."""
    return {"split": split_name(summary) is None,
            "val": any(a["val_top1_mean"] is not None for a in summary),
            "published": any(a["published"] for a in summary),
            "speed": any(a["speed_train_img_s"] or a["speed_infer_img_s"] for a in summary)}


def _head(summary: list[dict]) -> list[str]:
    extra, split = _extra_columns(summary), split_name(summary)
    head = list(TABLE_HEAD)
    head[7] = f"{split} top-1 (%)" if split else "top-1 (%)"
    if extra["split"]:
        head.insert(8, "split")
    if extra["val"]:
        head.insert(8 + extra["split"], "val top-1 (%)")
    if extra["published"]:
        head.insert(8 + extra["split"] + extra["val"], "published top-1 (Δ)")
    if extra["speed"]:
        head += ["train img/s (bench)", "infer img/s (bench)", "train speed vs"]
    return head


def fmt_published(a: dict) -> str:
    pub = a["published"]
    if not pub:
        return "—"
    return f"{pub['top1']:.2f} ({fmt_pp(a['published_diff'])})"


def fmt_rel(a: dict) -> str:
    if a["train_speed_rel"] is None:
        return "—"
    return f"{a['train_speed_rel']:.2f}× {a['train_speed_vs']}"


def _cells(a: dict, first_of_budget: bool, extra: dict | None = None) -> list[str]:
    extra = extra or {}
    cells = [fmt_budget(a["budget_gmacs"]) if first_of_budget else "", a["label"], a["family"],
             fmt_knob(a), fmt_gmacs(a["gmacs"]), fmt_dev(a["deviation"]), fmt_params(a["params"]),
             fmt_acc(a["top1_mean"], a["top1_std"]), fmt_acc(a["top5_mean"], a["top5_std"]),
             a["status"], fmt_duration(a["train_time_s"]), fmt_rate(a["img_per_s"])]
    at = 8
    if extra.get("split"):
        cells.insert(at, a["split"] or "—")
        at += 1
    if extra.get("val"):
        cells.insert(at, fmt_acc(a["val_top1_mean"], a["val_top1_std"]))
        at += 1
    if extra.get("published"):
        cells.insert(at, fmt_published(a))
    if extra.get("speed"):
        cells += [fmt_rate(a["speed_train_img_s"]), fmt_rate(a["speed_infer_img_s"]), fmt_rel(a)]
    return cells


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(summary: list[dict]) -> str:
    """One markdown table (rows of one data set), rows grouped by budget; the best mean marked
    ★ where it is significantly ahead of the runner-up, else every tied row "(tied best)"."""
    extra, head = _extra_columns(summary), _head(summary)
    align = ["---"] * 4 + ["---:"] * (len(head) - 4)
    align[head.index("runs")] = "---"
    if extra["split"]:
        align[head.index("split")] = "---"
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    prev = object()
    for a in summary:
        cells = [_md_escape(c) for c in _cells(a, a["budget_gmacs"] != prev, extra)]
        prev = a["budget_gmacs"]
        if a["best"]:
            cells[1] = f"**{cells[1]}** {BEST_MARK}"
            cells[7] = f"**{cells[7]}**"
        elif a["tied_best"]:
            cells[1] = f"{cells[1]} {TIED_MARK}"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _verdict(a: dict, c, against: str) -> str:
    if c is None:
        return "no finished runs" if not a["top1_by_seed"] else "—"
    if c.test == "none":
        return "no test possible (fewer than 2 seeds)"
    if not c.significant:
        return "tied best" if against == "best" and a["tied_best"] else "not significant"
    return "better" if c.diff > 0 else "worse"


def comparison_rows(summary: list[dict], key: str) -> list[list[str]]:
    """Cells of the "vs best" (key ``vs_best``) or "vs reference" (``vs_ref``) table."""
    out = []
    against = "best" if key == "vs_best" else "ref"
    for a in summary:
        c = a[key]
        other = a["best_label"] if key == "vs_best" else a["ref_label"]
        if c is None:
            if a["top1_by_seed"] and other == a["label"]:
                mark = (BEST_MARK + " best" if a["best"] else "tied best" if a["tied_best"]
                        else "best mean") if key == "vs_best" else "reference"
                out.append([a["label"], "(itself)", "", "", "", "", str(len(a["top1_by_seed"])),
                            "", mark])
            elif not a["top1_by_seed"]:
                out.append([a["label"], other or "—", "—", "—", "—", "—", "0", "—",
                            "no finished runs"])
            continue
        ci = "—" if math.isnan(c.ci_low) else f"[{c.ci_low:+.2f}, {c.ci_high:+.2f}]"
        pb = "—" if math.isnan(c.p_a_beats_b) else f"{c.p_a_beats_b:.2f}"
        out.append([a["label"], other, fmt_pp(c.diff), ci, fmt_p(c.p_value), pb, fmt_n(c),
                    test_name(c), _verdict(a, c, against)])
    return out


COMPARISON_HEAD = ["model", "vs", "Δ top-1 (pp)", "95% CI (pp)", "p", "P(row beats)", "n",
                   "test", "verdict"]


def comparison_table(summary: list[dict], key: str) -> str:
    head = list(COMPARISON_HEAD)
    level = summary[0]["significance_level"] if summary else 0.05
    head[3] = f"{100 * (1 - level):g}% CI (pp)"
    lines = ["| " + " | ".join(head) + " |",
             "|---|---|---:|---:|---:|---:|---:|---|---|"]
    for cells in comparison_rows(summary, key):
        lines.append("| " + " | ".join(_md_escape(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(c, c) for c in str(text))


def _latex_acc(mean, std) -> str:
    if mean is None:
        return "--"
    return f"{mean:.2f} $\\pm$ {std:.2f}" if std is not None else f"{mean:.2f}"


def _latex_cmp(c) -> list[str]:
    """Δ [CI], p and P(beats) cells of a comparison (``--`` where there is none)."""
    if c is None:
        return ["--", "--", "--"]
    if c.test == "none":
        return [f"${c.diff:+.2f}$ (no test)" if not math.isnan(c.diff) else "--", "--",
                "--" if math.isnan(c.p_a_beats_b) else f"{c.p_a_beats_b:.2f}"]
    return [f"${c.diff:+.2f}$ [${c.ci_low:+.2f}$, ${c.ci_high:+.2f}$]", fmt_p(c.p_value),
            f"{c.p_a_beats_b:.2f}"]


def latex_table(summary: list[dict], caption: str = "") -> str:
    """booktabs tabular of one data set's rows; a \\midrule between budgets. Beside top-1:
    the difference to the budget's best mean with its CI, p and P(row beats best) (and the
    same against the suite's reference row, when it names one)."""
    extra, split = _extra_columns(summary), split_name(summary)
    has_ref = any(a["ref_label"] for a in summary)
    level = summary[0]["significance_level"] if summary else 0.05
    ci = f"{100 * (1 - level):g}\\% CI"
    head = ["Budget (GMACs)", "Model", "Family", "GMACs", "Params (M)",
            (f"{split.capitalize()} top-1 (\\%)" if split else "Top-1 (\\%)"),
            f"$\\Delta$ best [{ci}]", "$p$", "$P$(beats)"]
    cols = "lllrrrrrr"
    if has_ref:
        head += [f"$\\Delta$ ref [{ci}]", "$p$ (ref)", "$P$(beats ref)"]
        cols += "rrr"
    if extra["split"]:
        head.append("Split")
        cols += "l"
    if extra["published"]:
        head.append("Published top-1 ($\\Delta$)")
        cols += "r"
    head += ["Top-5 (\\%)", "Runs", "Train time", "img/s"]
    cols += "rlrr"
    if extra["speed"]:
        head += ["Train img/s (bench)", "Infer img/s (bench)", "Train speed"]
        cols += "rrr"
    lines = []
    if caption:
        lines.append(f"% {caption}")
    lines.append(f"% $^\\star$: best mean, significantly ahead of the runner-up (p < {level:g}); "
                 "$^\\approx$: tied for best (not significantly worse than the best mean)")
    lines += [f"\\begin{{tabular}}{{{cols}}}", "\\toprule", " & ".join(head) + " \\\\",
              "\\midrule"]
    prev = object()
    for a in summary:
        first = a["budget_gmacs"] != prev
        if first and prev is not object() and lines[-1] != "\\midrule":
            lines.append("\\midrule")
        prev = a["budget_gmacs"]
        label = latex_escape(a["label"])
        top1 = _latex_acc(a["top1_mean"], a["top1_std"])
        if a["best"]:
            label, top1 = f"\\textbf{{{label}}}$^\\star$", f"\\textbf{{{top1}}}"
        elif a["tied_best"]:
            label = f"{label}$^\\approx$"
        cells = [latex_escape(fmt_budget(a["budget_gmacs"])) if first else "", label,
                 latex_escape(a["family"]), fmt_gmacs(a["gmacs"]).replace("—", "--"),
                 fmt_params(a["params"]).replace("—", "--"), top1, *_latex_cmp(a["vs_best"])]
        if has_ref:
            cells += _latex_cmp(a["vs_ref"])
        if extra["split"]:
            cells.append(latex_escape(a["split"] or "--"))
        if extra["published"]:
            cells.append(latex_escape(fmt_published(a).replace("—", "--")))
        cells += [_latex_acc(a["top5_mean"], a["top5_std"]), latex_escape(a["status"]),
                  latex_escape(fmt_duration(a["train_time_s"]).replace("—", "--")),
                  latex_escape(fmt_rate(a["img_per_s"]).replace("—", "--")).replace(",", "{,}")]
        if extra["speed"]:
            cells += [latex_escape(fmt_rate(a[k]).replace("—", "--")).replace(",", "{,}")
                      for k in SPEED_COLUMNS]
            cells.append(latex_escape(fmt_rel(a).replace("—", "--")).replace("×", "$\\times$"))
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def _csv_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, float):
        return f"{v:.6g}" if abs(v) >= 1e5 else f"{round(v, 6):.6f}".rstrip("0").rstrip(".")
    return str(v)


def summary_csv(summary: list[dict]) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SUMMARY_COLUMNS)
    for a in summary:
        row = dict(a)
        if row["params"] is not None:
            row["params"] = int(round(row["params"]))
        for key in ("vs_best", "vs_ref"):
            c = a[key]
            row[f"{key}_label"] = (a["best_label"] if key == "vs_best" else a["ref_label"]) \
                if c is not None else ""
            row[f"{key}_test"] = c.test if c is not None else ""
            row[f"{key}_n"] = (c.n_pairs if c.test == "paired" else f"{c.n_a}/{c.n_b}") \
                if c is not None else ""
            for k, attr in (("diff", "diff"), ("ci_low", "ci_low"), ("ci_high", "ci_high"),
                            ("p", "p_value"), ("p_beats", "p_a_beats_b")):
                v = getattr(c, attr) if c is not None else None
                row[f"{key}_{k}"] = None if v is None or math.isnan(v) else \
                    (f"{v:.6g}" if k == "p" else float(v))
        pub = a.get("published") or {}
        row["published_top1"], row["published_source"] = pub.get("top1"), pub.get("source", "")
        w.writerow([_csv_value(row[c]) for c in SUMMARY_COLUMNS])
    return buf.getvalue()


# --------------------------------------------------------------------------- header

def describe_dataset(ds: dict) -> str:
    name = ds.get("name", "?")
    text = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "synthetic": "synthetic (toy data)",
            "imagefolder": "image folder"}.get(name, name)
    root = ds.get("root")
    if name == "imagefolder" and root:
        text += f" `{root}`"
        if "cifar10-jpg" in str(root):
            text += (" — the **JPEG copy of CIFAR-10** (quality 75; accuracy on it is close to, "
                     "not equal to, CIFAR-10's)")
    if name == "synthetic":
        text += (f": {ds.get('num_classes') or 10} classes, {ds.get('num_train')} train / "
                 f"{ds.get('num_test')} test images of {ds.get('image_size')}x{ds.get('image_size')}")
    if ds.get("train_subset"):
        text += (f"; training on a fixed class-balanced subset of {ds['train_subset']:,} "
                 "images, full test set")
    if ds.get("val_split"):
        text += (f"; validation split: {ds['val_split']:,} class-balanced training images "
                 f"held out (val_seed {ds.get('val_seed') or 0}), not trained on; curves "
                 f"and val top-1 come from it, top-1 from the test set (see the recipe for "
                 f"when it is evaluated)")
    return text


def describe_recipe(rc: dict, ds: dict | None = None, test_curves: bool = False) -> str:
    """The recipe in words; ``ds`` (the suite's dataset) says whether the runs have a
    validation split, which ``eval_every`` is about. ``test_curves``: the stored histories
    hold test evaluations before the last epoch without ``test_every`` (runs made before it
    existed, when ``eval_every`` evaluated the test set)."""
    if not rc:
        return "unknown (no suite.json)"
    sgd = "SGD" + (f" (Nesterov, momentum {rc.get('momentum'):g})" if rc.get("nesterov")
                   else f" (momentum {rc.get('momentum', 0):g})")
    sched = rc.get("schedule")
    if sched == "step":
        sched = (f"step ×{rc.get('gamma'):g} at epochs "
                 + "/".join(str(m) for m in rc.get("milestones", [])))
    parts = [f"{rc.get('epochs')} epochs", sgd, f"lr {rc.get('lr'):g}",
             f"batch {rc.get('batch_size')}", f"weight decay {rc.get('weight_decay'):g}",
             f"{sched} schedule"]
    if rc.get("warmup_epochs"):
        parts.append(f"{rc['warmup_epochs']:g} warm-up epochs")
    if rc.get("label_smoothing"):
        parts.append(f"label smoothing {rc['label_smoothing']:g}")
    if rc.get("freeze_backbone_epochs"):
        parts.append(f"backbone frozen for the first {rc['freeze_backbone_epochs']} epochs")
    if rc.get("input_size"):
        parts.append(f"inputs resized to {rc['input_size']}x{rc['input_size']}")
    if (ds or {}).get("val_split"):  # without one, nothing is evaluated during training
        every = rc.get("eval_every") or 1
        parts.append("validation split evaluated " + (f"every {every} epochs and after the last"
                                                      if every > 1 else "every epoch"))
    if rc.get("test_every"):
        parts.append(f"test set {'also ' if (ds or {}).get('val_split') else ''}evaluated "
                     f"every {rc['test_every']} epochs (test-set curves)")
    elif (ds or {}).get("val_split"):
        parts.append("test set evaluated once, after the last epoch")
    elif test_curves:
        every = rc.get("eval_every") or 1
        parts.append("test set evaluated " + (f"every {every} epochs and after the last"
                                              if every > 1 else "every epoch")
                     + " (test-set curves; runs made before `test_every` existed)")
    aug = []
    if rc.get("crop_padding"):
        aug.append(f"random crop (pad {rc['crop_padding']})")
    if rc.get("flip"):
        aug.append("horizontal flip")
    parts.append("augmentation: " + (" + ".join(aug) if aug else "none"))
    parts.append(f"AMP {rc.get('amp', 'auto')}")
    return ", ".join(parts)


def _header(rs: ResultSet, title: str, note: str) -> list[str]:
    from mpbench import __version__

    suite = rs.suite
    finished = sorted(r["finished_at"] for r in rs.rows if r["finished_at"])
    devices = sorted({r["device"] for r in rs.rows if r["device"]})
    versions = sorted({str(c.get("mpbench_version")) for c in rs.configs.values()
                       if c.get("mpbench_version")})
    counts = {s: sum(r["status"] == s for r in rs.rows) for s in STATUS_ORDER}
    dates = (f"{finished[0]} … {finished[-1]}" if len(finished) > 1 else
             (finished[0] if finished else "—"))
    budgets = suite.get("budgets_gmacs") or []
    test_curves = any(sum(e.get("test_top1") is not None for e in h[:-1]) > 0
                      for h in rs.metrics.values())
    lines = [f"# {title}", ""]
    if note:
        lines += [note.strip(), ""]
    if suite.get("description"):
        lines += [f"> {suite['description'].strip()}", ""]
    lines += [
        f"- **Data set:** {describe_dataset(suite.get('dataset') or {'name': (rs.rows[0]['dataset'])})}",
        f"- **Suite:** `{suite.get('name', rs.rows[0]['suite'])}` — {len(rs.rows)} runs"
        + (", all finished" if counts["done"] == len(rs.rows) else
           ": " + ", ".join(f"{counts[s]} {s}" for s in STATUS_ORDER if counts[s])),
        f"- **Recipe:** {describe_recipe(suite.get('recipe') or {}, suite.get('dataset'), test_curves)}",
        f"- **Seeds:** {', '.join(str(s) for s in suite.get('seeds', sorted({r['seed'] for r in rs.rows})))}",
        "- **Budgets:** " + (", ".join(f"{b:g}" for b in budgets) + " GMACs, matched within "
                               f"±{100 * suite.get('tolerance', 0.02):g}% (depth knobs: nearest depth, then a small width adjustment)"
                               if budgets else "none (models as given)"),
        f"- **Complexity:** {MACS_CONVENTION}; input at the data set's image size",
        "- **Initialisation:** " + (
            "; ".join(sorted({f"{r['label']} from `{r['init']}` ({r['init_mode'] or 'init'})"
                              for r in rs.rows if r["init"]}))
            + ("; others from scratch" if any(not r["init"] for r in rs.rows) else "")
            if any(r["init"] for r in rs.rows) else "from scratch (random init, the run's seed)"),
        f"- **Device:** {', '.join(devices) or '—'}",
        f"- **Runs finished:** {dates} (UTC)",
        f"- **mpbench:** runs made with {', '.join(versions) or 'unknown'}; "
        f"report by mpbench {__version__}",
        "",
    ]
    return lines


# --------------------------------------------------------------------------- report

def suite_comparison_options(suite: dict) -> dict:
    """:func:`aggregate`'s ``level``, ``reference`` and ``published`` from a stored suite."""
    return {"level": float(suite.get("significance_level") or 0.05),
            "reference": suite.get("reference"),
            "published": {m.get("label") or m.get("name"): m["reference"]
                          for m in suite.get("models") or [] if m.get("reference")}}


def _label_order(rs: ResultSet) -> list[str]:
    models = rs.suite.get("models") or []
    return [m.get("label") or m.get("name") for m in models]


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


def copy_results(src: Path, dest: Path) -> None:
    """Copy what a report needs from a suite output directory (no checkpoints) to ``dest``."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in ("results.csv", "suite.json", "plan.json"):
        if (src / name).exists():
            shutil.copyfile(src / name, dest / name)
    for run_dir in sorted(p for p in (src / "runs").glob("*") if p.is_dir()):
        target = dest / "runs" / run_dir.name
        for name in RUN_FILES:
            if (run_dir / name).exists():
                target.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(run_dir / name, target / name)
        for name in ANALYSIS_FILES:
            if (run_dir / "analysis" / name).exists():
                (target / "analysis").mkdir(parents=True, exist_ok=True)
                shutil.copyfile(run_dir / "analysis" / name, target / "analysis" / name)


def _needs_copy(src: Path, out: Path) -> bool:
    """A separate report folder keeps its own copy of the results (``out/results``); not when
    the results are that copy already, or when the report is written inside the results."""
    s, o = src.resolve(), out.resolve()
    return not (s == (o / "results") or s == o or s in o.parents)


def build_report(runs_dir: str | Path, out: str | Path | None = None, *, title: str | None = None,
                 note: str | None = None, figures: bool = True, analyze: bool = True,
                 data_root=None, device: str | None = None,
                 echo: Callable[[str], None] = lambda m: None) -> dict:
    """Write ``report.md``, ``summary.csv``, ``table.tex`` and ``figures/`` for a suite's results.

    ``out`` defaults to ``RUNS_DIR/report``. When ``out`` is a separate folder (e.g.
    ``reports/<name>``), the results are first copied to ``out/results`` (no checkpoints) so
    that ``mpbench report`` can regenerate the report from them alone; ``title`` and ``note``
    are kept in ``out/report.json`` for the same reason. Path usage of multi-path runs is
    computed from the source's checkpoints (``analyze``) and stored beside the results.
    Returns ``{"out", "files", "summary", "notes"}``.
    """
    src = Path(runs_dir)
    load_results(src)  # fails early, with one line, on anything that is not a results dir
    out = Path(out) if out is not None else src / "report"
    results = src
    if _needs_copy(src, out):
        copy_results(src, out / "results")
        results = out / "results"
    options_path = out / "report.json"
    old = _read_json(options_path) or {}
    options = {"title": title if title is not None else old.get("title"),
               "note": note if note is not None else old.get("note")}

    rs = load_results(results)
    summary = aggregate(rs.rows, _label_order(rs), **suite_comparison_options(rs.suite))
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
        for e in fig_entries:
            written += [fig_dir / f for f in e["files"]]
        notes += [n for e in fig_entries for n in e.get("notes", [])]

    files = {"report.md": render_markdown(rs, summary, fig_entries, notes,
                                          options["title"] or f"mpbench report: {suite_name}",
                                          options["note"] or ""),
             "summary.csv": summary_csv(summary),
             "table.tex": "\n".join(
                 latex_table([a for a in summary if a["dataset"] == ds],
                             caption=f"{suite_name}: {ds}; {MACS_CONVENTION}")
                 for ds in sorted({a["dataset"] for a in summary}))}
    from mpbench.storage import atomic_write_text
    for name, text in files.items():
        atomic_write_text(out / name, text, durable=False)
        written.append(out / name)
    if results != src or options_path.exists() or options["title"] or options["note"]:
        atomic_write_text(options_path, json.dumps(options, indent=2, sort_keys=True) + "\n",
                          durable=False)
    return {"out": out, "files": written, "summary": summary, "notes": notes}


def render_markdown(rs: ResultSet, summary: list[dict], fig_entries: list[dict],
                    notes: list[str], title: str, note: str) -> str:
    datasets = sorted({a["dataset"] for a in summary})
    md = _header(rs, title, note)
    level = summary[0]["significance_level"] if summary else 0.05
    for ds in datasets:
        rows = [a for a in summary if a["dataset"] == ds]
        md += [f"## Results: {ds}" if len(datasets) > 1 else "## Results", "",
               markdown_table(rows)]
        md += _comparison_sections(rows, ds if len(datasets) > 1 else "")
    split = split_name(summary)
    md += [f"{BEST_MARK} and **bold**: best mean top-1 within its budget, significantly ahead of "
           f"the runner-up (p < {level:g}); {TIED_MARK}: no row is significantly ahead, and these "
           "rows are not significantly worse than the best mean (each compared with it, no "
           "multiple-test correction; a row with fewer than 2 finished seeds cannot be shown "
           "worse). Top-1/top-5: "
           + (f"{split} accuracy after the last epoch" if split else
              "accuracy after the last epoch on the split each row names")
           + ", mean ± sample standard deviation (n − 1) over the "
           "seeds that finished. \"runs\": the number of seeds, or how many ended in each state; "
           "runs that diverged, ran out of memory, failed or are unfinished are counted there "
           "and left out of the means. GMACs and params: the matched model's; \"vs budget\": its "
           "deviation from the budget. Train time and img/s: mean over finished runs (a run's "
           "img/s is its median training throughput over epochs).", "",
           "Comparisons (scipy.stats): Δ top-1 = row minus the other row, in percentage points; "
           "a paired t test over the seeds both finished when they share two or more (the CI "
           "and Δ then refer to those seeds), Welch's t test otherwise; "
           f"{100 * (1 - level):g}% t confidence interval of Δ; p: two-sided; P(row beats): "
           "the share of shared seeds on which the row is ahead (paired), else the share of "
           "run pairs (Mann-Whitney U / n·m; ties count ½); n: seeds compared. A difference "
           "with no spread between seeds (identical per-seed differences) is given p = 0.", ""]
    if any(a["speed_train_img_s"] or a["speed_infer_img_s"] for a in summary):
        devices = sorted({a["speed_device"] for a in summary if a["speed_device"]})
        md += ["Train/infer img/s (bench): throughput measured after training by `mpbench "
               f"bench` on the run's device ({', '.join(devices) or 'device not recorded'}); "
               "\"train speed vs\": the row's training img/s relative to that row (the suite's "
               "reference, else the budget's best mean).", ""]
    pubs = [a for a in summary if a["published"]]
    if pubs:
        md += ["Published top-1 (Δ): the number published for exactly this configuration, "
               "beside the measured mean (Δ = measured − published, pp). Sources:", ""]
        seen = set()
        for a in pubs:
            if a["label"] in seen:
                continue
            seen.add(a["label"])
            md.append(f"- {_md_escape(a['label'])}: {a['published']['top1']:.2f}% — "
                      f"{_md_escape(a['published']['source'])}")
        md.append("")
    if fig_entries:
        md += ["## Figures", ""]
        for e in fig_entries:
            md += [f"### {e['title']}", "", f"![{e['title']}](figures/{e['files'][0]})", ""]
            if e.get("caption"):
                md += [e["caption"], ""]
    failures = [r for r in rs.rows if r["status"] not in ("done", "pending", "partial")]
    if failures:
        md += ["## Runs that did not finish", "", "| run | status | epochs | error |",
               "|---|---|---:|---|"]
        for r in failures:
            err = _md_escape(r["error"].splitlines()[0][:160]) if r["error"] else ""
            md += [f"| {r['run_id']} | {r['status']} | {r['epochs']} | {err} |"]
        md += [""]
    if notes:
        md += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    md += ["---", "", "Regenerate: `mpbench report` (every report under `reports/`, from the "
           "results stored beside it) or `mpbench report RUNS_DIR --out DIR`. The tables as data: "
           "[summary.csv](summary.csv), as LaTeX: [table.tex](table.tex).", ""]
    return "\n".join(md)


def _comparison_sections(rows: list[dict], dataset: str) -> list[str]:
    """Per budget: every row against the best mean, and against the reference row."""
    md = []
    on = f", {dataset}" if dataset else ""
    budgets = []
    for a in rows:
        if a["budget_gmacs"] not in budgets:
            budgets.append(a["budget_gmacs"])
    for b in budgets:
        group = [a for a in rows if a["budget_gmacs"] == b]
        if not any(a["top1_by_seed"] for a in group) or len(group) < 2:
            continue
        where = f"{fmt_budget(b)} GMACs" if b is not None else "models as given"
        md += [f"### Budget {where}{on}: each row against the best mean "
               f"({_md_escape(group[0]['best_label'] or '—')})", "",
               comparison_table(group, "vs_best")]
        ref = next((a["ref_label"] for a in group if a["ref_label"]), "")
        if ref:
            md += [f"### Budget {where}{on}: each row against the reference ({_md_escape(ref)})",
                   "", comparison_table(group, "vs_ref")]
    return md


def compare_labels(runs_dir: str | Path, label_a: str, label_b: str, *,
                   budget: float | None = None, level: float | None = None) -> list[dict]:
    """``label_a`` against ``label_b`` in each (data set, budget) where both have rows (only
    ``budget`` when given): the report's statistics for any pair. Unknown labels or a budget
    with neither are a one-line :class:`UserError`. Reads only; writes nothing."""
    import difflib

    rs = load_results(runs_dir)
    opts = suite_comparison_options(rs.suite)
    if level is not None:
        if not 0.0 < level < 1.0:
            raise UserError(f"--level: {level:g} is not between 0 and 1")
        opts["level"] = level
    summary = aggregate(rs.rows, _label_order(rs), **opts)
    labels = sorted({a["label"] for a in summary})
    for lab in (label_a, label_b):
        if lab not in labels:
            close = difflib.get_close_matches(lab, labels, n=3)
            raise UserError(f"{rs.root}: no results are labelled '{lab}' ("
                            + (f"did you mean {', '.join(repr(c) for c in close)}?" if close
                               else f"labels: {', '.join(labels)}") + ")")
    keys = sorted({(a["dataset"], _budget_key(a["budget_gmacs"])) for a in summary})
    if budget is not None:
        budgets = sorted({a["budget_gmacs"] for a in summary if a["budget_gmacs"] is not None})
        keys = [k for k in keys if k[1][0] == 0 and math.isclose(k[1][1], budget, rel_tol=1e-9)]
        if not keys:
            raise UserError(f"--budget: no results at {budget:g} GMACs (budgets: "
                            + (", ".join(f"{b:g}" for b in budgets) or "none") + ")")
    out = []
    for key in keys:
        rows = {a["label"]: a for a in summary
                if (a["dataset"], _budget_key(a["budget_gmacs"])) == key}
        a, b = rows.get(label_a), rows.get(label_b)
        if a is None or b is None:
            continue
        rec = {"dataset": key[0], "budget_gmacs": a["budget_gmacs"], "a": label_a, "b": label_b,
               "split": a["split"] or "test", "level": opts["level"],
               "mean_a": a["top1_mean"], "std_a": a["top1_std"], "seeds_a": sorted(a["top1_by_seed"]),
               "mean_b": b["top1_mean"], "std_b": b["top1_std"], "seeds_b": sorted(b["top1_by_seed"])}
        if a["top1_by_seed"] and b["top1_by_seed"]:
            c = _compare_rows(a, b, opts["level"])
            nan = (lambda v: None if v is None or math.isnan(v) else v)
            rec.update(test=c.test, n_a=c.n_a, n_b=c.n_b, n_pairs=c.n_pairs, diff=nan(c.diff),
                       ci_low=nan(c.ci_low), ci_high=nan(c.ci_high), p_value=nan(c.p_value),
                       p_a_beats_b=nan(c.p_a_beats_b), significant=c.significant,
                       reason=c.reason or None)
        else:
            rec.update(test="none", n_a=len(a["top1_by_seed"]), n_b=len(b["top1_by_seed"]),
                       n_pairs=0, diff=None, ci_low=None, ci_high=None, p_value=None,
                       p_a_beats_b=None, significant=False, reason="no finished runs for "
                       + (label_a if not a["top1_by_seed"] else label_b))
        out.append(rec)
    if not out:
        raise UserError(f"{rs.root}: '{label_a}' and '{label_b}' never share a budget")
    return out


def format_comparison(rec: dict) -> str:
    """One comparison as a few readable lines (``mpbench compare``)."""
    where = (f"{fmt_budget(rec['budget_gmacs'])} GMACs" if rec["budget_gmacs"] is not None
             else "as given")
    lines = [f"{rec['dataset']}, budget {where}: {rec['a']} vs {rec['b']} ({rec['split']} top-1)",
             f"  {rec['a']}: {fmt_acc(rec['mean_a'], rec['std_a'])} % over seeds "
             f"{' '.join(map(str, rec['seeds_a'])) or '—'}",
             f"  {rec['b']}: {fmt_acc(rec['mean_b'], rec['std_b'])} % over seeds "
             f"{' '.join(map(str, rec['seeds_b'])) or '—'}"]
    if rec["test"] == "none":
        d = "" if rec["diff"] is None else f"Δ {rec['diff']:+.2f} pp; "
        lines.append(f"  {d}no test possible: {rec['reason']}")
        return "\n".join(lines)
    n = (f"{rec['n_pairs']} shared seeds" if rec["test"] == "paired"
         else f"{rec['n_a']} vs {rec['n_b']} runs")
    verdict = ((f"{rec['a']} better" if rec["diff"] > 0 else f"{rec['a']} worse")
               if rec["significant"] else "not significant")
    lines += [f"  Δ top-1 ({rec['a']} − {rec['b']}): {rec['diff']:+.2f} pp, "
              f"{100 * (1 - rec['level']):g}% CI [{rec['ci_low']:+.2f}, {rec['ci_high']:+.2f}]",
              f"  {'paired' if rec['test'] == 'paired' else 'Welch'} t test, {n}: "
              f"p = {fmt_p(rec['p_value'])}; P({rec['a']} beats {rec['b']}) = "
              f"{rec['p_a_beats_b']:.2f}; at level {rec['level']:g}: {verdict}"]
    return "\n".join(lines)


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
