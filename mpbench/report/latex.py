"""The LaTeX (booktabs) tables of a report: one tabular per data set."""
from __future__ import annotations

import math

from mpbench.report.formatting import (correction_name, extra_columns, fmt_budget,
                                       fmt_duration, fmt_gmacs, fmt_p, fmt_params, fmt_published,
                                       fmt_rate, fmt_rel, split_name)
from mpbench.report.summary import SPEED_COLUMNS

__all__ = ["latex_table", "latex_escape"]

_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(c, c) for c in str(text))


def _latex_acc(mean, std) -> str:
    if mean is None:
        return "--"
    return f"{mean:.2f} $\\pm$ {std:.2f}" if std is not None else f"{mean:.2f}"


def _latex_cmp(c, corrected: bool) -> list[str]:
    """Δ [CI], p, (adjusted p,) and P(beats) cells of a comparison (``--`` where there is
    none); a difference with no spread has no t interval (an exact rank test gave p)."""
    cells = _latex_cmp_all(c)
    return cells if corrected else cells[:2] + cells[3:]


def _latex_cmp_all(c) -> list[str]:
    if c is None:
        return ["--", "--", "--", "--"]
    if c.test == "none":
        return [f"${c.diff:+.2f}$ (no test)" if not math.isnan(c.diff) else "--", "--", "--",
                "--" if math.isnan(c.p_a_beats_b) else f"{c.p_a_beats_b:.2f}"]
    ci = ("(no spread)" if math.isnan(c.ci_low)
          else f"[${c.ci_low:+.2f}$, ${c.ci_high:+.2f}$]")
    return [f"${c.diff:+.2f}$ {ci}", fmt_p(c.p_value), fmt_p(c.p_adjusted),
            f"{c.p_a_beats_b:.2f}"]


def latex_table(summary: list[dict], caption: str = "") -> str:
    """booktabs tabular of one data set's rows; a \\midrule between budgets. Beside top-1:
    the difference to the budget's best mean with its CI, p and P(row beats best) (and the
    same against the suite's reference row, when it names one)."""
    extra, split = extra_columns(summary), split_name(summary)
    has_ref = any(a["ref_label"] for a in summary)
    level = summary[0]["significance_level"] if summary else 0.05
    ci = f"{100 * (1 - level):g}\\% CI"
    method = summary[0].get("significance_correction", "none") if summary else "none"
    corrected = method != "none"
    adj = [f"$p$ ({correction_name(method)})"] if corrected else []
    head = ["Budget (GMACs)", "Model", "Family", "GMACs", "Params (M)",
            (f"{split.capitalize()} top-1 (\\%)" if split else "Top-1 (\\%)"),
            f"$\\Delta$ best [{ci}]", "$p$", *adj, "$P$(beats)"]
    cols = "lllrrrrrr" + "r" * corrected
    if has_ref:
        adj_ref = [f"$p$ (ref, {correction_name(method)})"] if corrected else []
        head += [f"$\\Delta$ ref [{ci}]", "$p$ (ref)", *adj_ref, "$P$(beats ref)"]
        cols += "rrr" + "r" * corrected
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
    lines.append(f"% $^\\star$: best mean, significantly ahead of every other row of its budget "
                 f"(p < {level:g}" + (f", {correction_name(method)}-adjusted" if corrected else "")
                 + "); $^\\approx$: tied for best (not significantly worse than the best mean)")
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
                 fmt_params(a["params"]).replace("—", "--"), top1, *_latex_cmp(a["vs_best"], corrected)]
        if has_ref:
            cells += _latex_cmp(a["vs_ref"], corrected)
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
