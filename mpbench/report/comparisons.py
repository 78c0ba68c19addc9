"""Comparison tables (each row against its budget's best mean and against the suite's
reference row) and ``mpbench compare``'s any-pair comparison."""
from __future__ import annotations

import math
from pathlib import Path

from mpbench.errors import UserError
from mpbench.report.compute_equivalent import multiplier_against, multiplier_lines
from mpbench.report.formatting import (BEST_MARK, correction_name, fmt_acc, fmt_budget, fmt_n,
                                       fmt_p, fmt_pp, md_escape, test_name)
from mpbench.report.results import load_results
from mpbench.report.summary import (aggregate, budget_key, compare_rows, label_order,
                                    suite_comparison_options)

__all__ = ["comparison_rows", "comparison_table", "comparison_sections", "compare_labels",
           "format_comparison", "COMPARISON_HEAD"]


def _verdict(a: dict, c, against: str) -> str:
    if c is None:
        return "no finished runs" if not a["top1_by_seed"] else "—"
    if c.test == "none":
        return "no test possible (fewer than 2 seeds)"
    if not c.significant:
        return "tied best" if against == "best" and a["tied_best"] else "not significant"
    return "better" if c.diff > 0 else "worse"


def _corrected(summary: list[dict]) -> bool:
    return bool(summary) and summary[0].get("significance_correction", "none") != "none"


def comparison_rows(summary: list[dict], key: str) -> list[list[str]]:
    """Cells of the "vs best" (key ``vs_best``) or "vs reference" (``vs_ref``) table; with a
    multiple-test correction, the adjusted p right after the raw p."""
    rows = _comparison_rows(summary, key)
    if not _corrected(summary):
        return [r[:5] + r[6:] for r in rows]
    return rows


def _comparison_rows(summary: list[dict], key: str) -> list[list[str]]:
    out = []
    against = "best" if key == "vs_best" else "ref"
    for a in summary:
        c = a[key]
        other = a["best_label"] if key == "vs_best" else a["ref_label"]
        if c is None:
            if a["top1_by_seed"] and other == a["label"]:
                mark = (BEST_MARK + " best" if a["best"] else "tied best" if a["tied_best"]
                        else "best mean") if key == "vs_best" else "reference"
                out.append([a["label"], "(itself)", "", "", "", "", "",
                            str(len(a["top1_by_seed"])), "", mark])
            elif not a["top1_by_seed"]:
                out.append([a["label"], other or "—", "—", "—", "—", "—", "—", "0", "—",
                            "no finished runs"])
            continue
        ci = "—" if math.isnan(c.ci_low) else f"[{c.ci_low:+.2f}, {c.ci_high:+.2f}]"
        pb = "—" if math.isnan(c.p_a_beats_b) else f"{c.p_a_beats_b:.2f}"
        out.append([a["label"], other, fmt_pp(c.diff), ci, fmt_p(c.p_value),
                    fmt_p(c.p_adjusted), pb, fmt_n(c), test_name(c), _verdict(a, c, against)])
    return out


COMPARISON_HEAD = ["model", "vs", "Δ top-1 (pp)", "95% CI (pp)", "p", "P(row beats)", "n",
                   "test", "verdict"]


def comparison_table(summary: list[dict], key: str) -> str:
    head = list(COMPARISON_HEAD)
    level = summary[0]["significance_level"] if summary else 0.05
    head[3] = f"{100 * (1 - level):g}% CI (pp)"
    align = ["---", "---", "---:", "---:", "---:", "---:", "---:", "---|---"]
    if _corrected(summary):
        head.insert(5, f"p ({correction_name(summary[0]['significance_correction'])})")
        align.insert(5, "---:")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    for cells in comparison_rows(summary, key):
        lines.append("| " + " | ".join(md_escape(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def comparison_sections(rows: list[dict], dataset: str) -> list[str]:
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
               f"({md_escape(group[0]['best_label'] or '—')})", "",
               comparison_table(group, "vs_best")]
        ref = next((a["ref_label"] for a in group if a["ref_label"]), "")
        if ref:
            md += [f"### Budget {where}{on}: each row against the reference ({md_escape(ref)})",
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
    summary = aggregate(rs.rows, label_order(rs), **opts)
    labels = sorted({a["label"] for a in summary})
    for lab in (label_a, label_b):
        if lab not in labels:
            close = difflib.get_close_matches(lab, labels, n=3)
            raise UserError(f"{rs.root}: no results are labelled '{lab}' ("
                            + (f"did you mean {', '.join(repr(c) for c in close)}?" if close
                               else f"labels: {', '.join(labels)}") + ")")
    keys = sorted({(a["dataset"], budget_key(a["budget_gmacs"])) for a in summary})
    if budget is not None:
        budgets = sorted({a["budget_gmacs"] for a in summary if a["budget_gmacs"] is not None})
        keys = [k for k in keys if k[1][0] == 0 and math.isclose(k[1][1], budget, rel_tol=1e-9)]
        if not keys:
            raise UserError(f"--budget: no results at {budget:g} GMACs (budgets: "
                            + (", ".join(f"{b:g}" for b in budgets) or "none") + ")")
    out = []
    for key in keys:
        rows = {a["label"]: a for a in summary
                if (a["dataset"], budget_key(a["budget_gmacs"])) == key}
        a, b = rows.get(label_a), rows.get(label_b)
        if a is None or b is None:
            continue
        rec = {"dataset": key[0], "budget_gmacs": a["budget_gmacs"], "a": label_a, "b": label_b,
               "split": a["split"] or "test", "level": opts["level"],
               "report_correction": opts["correction"],
               "mean_a": a["top1_mean"], "std_a": a["top1_std"], "seeds_a": sorted(a["top1_by_seed"]),
               "mean_b": b["top1_mean"], "std_b": b["top1_std"], "seeds_b": sorted(b["top1_by_seed"]),
               "multiplier": multiplier_against(summary, a, label_b)}
        if a["top1_by_seed"] and b["top1_by_seed"]:
            c = compare_rows(a, b, opts["level"])
            nan = (lambda v: None if v is None or math.isnan(v) else v)
            rec.update(test=c.test, n_a=c.n_a, n_b=c.n_b, n_pairs=c.n_pairs, diff=nan(c.diff),
                       ci_low=nan(c.ci_low), ci_high=nan(c.ci_high), p_value=nan(c.p_value),
                       p_a_beats_b=nan(c.p_a_beats_b), significant=c.significant,
                       reason=c.reason or None, exact=c.exact or None, correction="none")
        else:
            rec.update(test="none", n_a=len(a["top1_by_seed"]), n_b=len(b["top1_by_seed"]),
                       n_pairs=0, diff=None, ci_low=None, ci_high=None, p_value=None,
                       p_a_beats_b=None, significant=False, exact=None, correction="none",
                       reason="no finished runs for "
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
             f"{' '.join(map(str, rec['seeds_b'])) or '—'}", *multiplier_lines(rec)]
    if rec["test"] == "none":
        d = "" if rec["diff"] is None else f"Δ {rec['diff']:+.2f} pp; "
        lines.append(f"  {d}no test possible: {rec['reason']}")
        return "\n".join(lines)
    n = (f"{rec['n_pairs']} shared seeds" if rec["test"] == "paired"
         else f"{rec['n_a']} vs {rec['n_b']} runs")
    verdict = ((f"{rec['a']} better" if rec["diff"] > 0 else f"{rec['a']} worse")
               if rec["significant"] else "not significant")
    ci = ("no t interval (no spread between seeds)" if rec["ci_low"] is None else
          f"{100 * (1 - rec['level']):g}% CI [{rec['ci_low']:+.2f}, {rec['ci_high']:+.2f}]")
    test = {"sign": "exact sign test (no spread: t undefined)",
            "mann-whitney": "exact Mann-Whitney test (no spread: t undefined)"}.get(
        rec.get("exact") or "", f"{'paired' if rec['test'] == 'paired' else 'Welch'} t test")
    lines += [f"  Δ top-1 ({rec['a']} − {rec['b']}): {rec['diff']:+.2f} pp, {ci}",
              f"  {test}, {n}: "
              f"p = {fmt_p(rec['p_value'])}; P({rec['a']} beats {rec['b']}) = "
              f"{rec['p_a_beats_b']:.2f}; at level {rec['level']:g}: {verdict}",
              "  (one pair chosen in advance: p uncorrected"
              + ("; the report's tables adjust each budget's comparisons with Holm's method)"
                 if rec.get("report_correction") == "holm" else ")")]
    return "\n".join(lines)
