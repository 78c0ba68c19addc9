"""The report's "Calibration and robustness" section: per data set, a table of NLL, ECE, Brier
score, corruption top-1 (and superclass top-1 where a row has it) per row and budget, the
best of each budget marked as in the main table, and per budget each row compared with the
suite's reference row (else the budget's best-top-1 row). Fields from
:mod:`mpbench.report.calibration`; a score a row's runs did not measure reads "not measured".
"""
from __future__ import annotations

from mpbench.report.calibration import HIGHER_IS_BETTER, SCORES
from mpbench.report.formatting import (BEST_MARK, TIED_MARK, correction_name, fmt_budget, fmt_p,
                                       md_escape)

__all__ = ["calibration_section", "NOT_MEASURED", "SCORE_TITLES"]

NOT_MEASURED = "not measured"
#: score -> (column title, scale of the shown value, decimals)
SCORE_TITLES = {"nll": ("NLL", 1.0, 3), "ece": ("ECE (%)", 100.0, 2), "brier": ("Brier", 1.0, 3),
                "superclass_top1": ("superclass top-1 (%)", 1.0, 2),
                "corrupt_top1": ("corruption top-1 (%)", 1.0, 2)}


def _shown(summary: list[dict]) -> list[str]:
    """The scores shown: superclass top-1 only where some row has it (CIFAR-100)."""
    return [m for m in SCORES if m != "superclass_top1"
            or any(a["superclass_top1_mean"] is not None for a in summary)]


def _cell(a: dict, m: str) -> str:
    mean = a[f"{m}_mean"]
    if mean is None:
        return NOT_MEASURED
    _, scale, dec = SCORE_TITLES[m]
    std = a[f"{m}_std"]
    text = f"{scale * mean:.{dec}f}" + ("" if std is None else f" ± {scale * std:.{dec}f}")
    if a[f"{m}_n"] < a["n_done"]:
        text += f" ({a[f'{m}_n']} of {a['n_done']} seeds)"
    if a[f"{m}_best"]:
        return f"**{text}** {BEST_MARK}"
    return f"{text} {TIED_MARK}" if a[f"{m}_tied_best"] else text


def _table(rows: list[dict], shown: list[str]) -> list[str]:
    head = ["budget (GMACs)", "model", "family"] + [SCORE_TITLES[m][0] for m in shown] + ["runs"]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] * 3 + ["---:"] * len(shown) + ["---"]) + "|"]
    last = object()
    for a in rows:
        first, last = a["budget_gmacs"] != last, a["budget_gmacs"]
        cells = [fmt_budget(a["budget_gmacs"]) if first else "", a["label"], a["family"]]
        cells += [_cell(a, m) for m in shown] + [a["status"]]
        lines.append("| " + " | ".join(md_escape(c) for c in cells) + " |")
    return lines + [""]


def _verdict(a: dict, m: str) -> str:
    sig = a[f"{m}_vs_significant"]
    if sig is None:
        return "no test (fewer than 2 seeds)"
    if not sig:
        return "not significant"
    ahead = (a[f"{m}_vs_diff"] > 0) == HIGHER_IS_BETTER[m]
    return "better" if ahead else "worse"


def _comparison(rows: list[dict], shown: list[str], corrected: str, vs: str) -> list[str]:
    """Cells "Δ (p adjusted) verdict" of each row against ``vs``, the budget's comparison row
    (a row without the score: "not measured")."""
    p_name = "p" if corrected == "none" else f"p ({correction_name(corrected)})"
    head = ["model", "vs"] + [f"Δ {SCORE_TITLES[m][0]}, {p_name}" for m in shown]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] * 2 + ["---:"] * len(shown)) + "|"]
    for a in rows:
        if a["label"] == vs:
            continue
        cells = [a["label"], vs]
        for m in shown:
            if a[f"{m}_vs_label"] is None:
                cells.append(NOT_MEASURED if a[f"{m}_mean"] is None else "—")
                continue
            _, scale, dec = SCORE_TITLES[m]
            diff = a[f"{m}_vs_diff"]
            d = "—" if diff is None else f"{scale * diff:+.{dec}f}"
            cells.append(f"{d} ({fmt_p(a[f'{m}_vs_p_adj'])}) {_verdict(a, m)}")
        lines.append("| " + " | ".join(md_escape(c) for c in cells) + " |")
    return lines + [""]


def _legend(summary: list[dict], shown: list[str]) -> list[str]:
    from mpbench.data.corruptions import BUILTIN_SET

    sets = sorted({s for a in summary for s in (a["corrupt_set"] or "").split()})
    named = []
    for s in sets:
        named.append(f"`{s}`: mpbench's own built-in set, not CIFAR-10-C (Gaussian noise, "
                     "Gaussian blur, JPEG compression, contrast, brightness; 3 severities each, "
                     "generated from the test images with fixed seeds, identical for every run)"
                     if s == BUILTIN_SET else
                     f"`{s}` (Hendrycks & Dietterich 2019, the `.npy` files of "
                     "`dataset.corruptions_root`; every corruption at 5 severities)")
    level = summary[0].get("significance_level", 0.05)
    method = summary[0].get("significance_correction", "holm")
    text = ("Scores of the test set after the last epoch, mean ± sample standard deviation "
            "(n − 1) over the seeds that finished and measured them. NLL: mean negative "
            "log-likelihood of the softmax (lower is better). ECE: expected calibration error, "
            "top-label, 15 equal-width confidence bins, L1, in percent (lower is better). "
            "Brier: Σ_k (p_k − [k = y])², mean over images (0 best, 2 worst). ")
    if "superclass_top1" in shown:
        text += ("Superclass top-1: the fine prediction's superclass is the true superclass "
                 "(CIFAR-100's 20 published superclasses; other data sets' own coarse labels). ")
    text += ("Corruption top-1: top-1 under common corruptions, mean over corruptions and "
             "severities, on " + ("; ".join(named) if named else
                                  f"the built-in set `{BUILTIN_SET}` (mpbench's own, not CIFAR-10-C) "
                                  "or CIFAR-10-C / CIFAR-100-C when `dataset.corruptions_root` "
                                  "names them") + ". ")
    text += (f"{BEST_MARK} and **bold**: the budget's best for that score, significantly ahead "
             f"of every other row (p < {level:g}, "
             + ("after Holm's correction over the budget's rows" if method == "holm" else
                "no multiple-test correction") + f"); {TIED_MARK}: "
             "not significantly behind the best. Comparisons: row minus the named row, in the "
             "column's units; a paired t test over shared seeds (Welch otherwise; an exact "
             "rank test where the t test is undefined), as in the main table"
             + ("; p adjusted by Holm's method over the budget's rows, for each score"
                if method == "holm" else "") + f". \"{NOT_MEASURED}\": the runs were made "
             "before these scores existed (or with `recipe.corruptions: false`); `mpbench "
             "evaluate RUNS_DIR` scores finished runs from their checkpoints, then `mpbench "
             "report` shows them.")
    return [text, ""]


def calibration_section(ctx) -> list[str]:
    """``## Calibration and robustness``, or nothing when the summary is empty."""
    summary = ctx.summary
    if not summary:
        return []
    shown = _shown(summary)
    method = summary[0].get("significance_correction", "holm")
    md = ["## Calibration and robustness", ""]
    datasets = ctx.datasets
    for ds in datasets:
        rows = [a for a in summary if a["dataset"] == ds]
        if len(datasets) > 1:
            md += [f"### {ds}", ""]
        md += _table(rows, shown)
        budgets = list(dict.fromkeys(a["budget_gmacs"] for a in rows))
        for b in budgets:
            group = [a for a in rows if a["budget_gmacs"] == b]
            vs = next((a[f"{m}_vs_label"] for a in group for m in shown
                       if a[f"{m}_vs_label"]), "")
            if not vs:  # no score measured for two rows of this budget: nothing compared
                continue
            where = f"{fmt_budget(b)} GMACs" if b is not None else "models as given"
            on = f", {ds}" if len(datasets) > 1 else ""
            md += [f"#### Budget {where}{on}: scores against {md_escape(vs)}", ""]
            md += _comparison(group, shown, method, vs)
    return md + _legend(summary, shown)
