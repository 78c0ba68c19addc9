"""Untuned and tuned rankings side by side (``mpbench report TUNED_DIR --untuned UNTUNED_DIR``).

Does tuning change the ranking? Per (data set, budget), the models both output directories
trained: each one's rank and mean top-1 untuned and tuned, and Kendall's tau between the two
orders (``scipy.stats.kendalltau``, tau-b: 1 = the same order, -1 = reversed). Ranks are
among the models both sides finished (so that they are comparable); a model on one side only
is listed without a rank. Whether a single rank difference is more than seed noise is what
each side's own comparison tables say.
"""
from __future__ import annotations

import math

from mpbench.errors import UserError
from mpbench.report.formatting import fmt_acc, fmt_budget, fmt_pp, md_escape
from mpbench.report.results import ResultSet
from mpbench.report.summary import aggregate, budget_key, label_order, suite_comparison_options
from mpbench.report.tuning import is_tuned

__all__ = ["ranking_tables", "side_by_side_section", "check_pair", "summarise"]


def summarise(rs: ResultSet) -> list[dict]:
    return aggregate(rs.rows, label_order(rs), **suite_comparison_options(rs.suite))


def _ranks(means: dict[str, float]) -> dict[str, int]:
    """1 = the highest mean; equal means share the better rank (1, 1, 3)."""
    return {k: 1 + sum(v > m for v in means.values()) for k, m in means.items()}


def ranking_tables(tuned: list[dict], untuned: list[dict]) -> list[dict]:
    """Per (data set, budget) present in either: ``rows`` (label, family, both means and
    ranks, Δ), ``n`` (models ranked on both sides), ``tau``/``p`` (None below two models or
    when a side has no spread), ``changed`` (the two orders differ), ``best`` per side."""
    from scipy.stats import kendalltau

    def key(a):
        return (a["dataset"], budget_key(a["budget_gmacs"]))

    out = []
    for k in sorted({key(a) for a in tuned} | {key(a) for a in untuned}):
        t = {a["label"]: a for a in tuned if key(a) == k}
        u = {a["label"]: a for a in untuned if key(a) == k}
        both = [lab for lab in t if lab in u and t[lab]["top1_mean"] is not None
                and u[lab]["top1_mean"] is not None]
        ur = _ranks({lab: u[lab]["top1_mean"] for lab in both})
        tr = _ranks({lab: t[lab]["top1_mean"] for lab in both})
        labels = list(u) + [lab for lab in t if lab not in u]
        rows = []
        for lab in labels:
            a, b = u.get(lab), t.get(lab)
            um, tm = (a or {}).get("top1_mean"), (b or {}).get("top1_mean")
            rows.append({"label": lab, "family": (a or b)["family"],
                         "untuned_mean": um, "untuned_std": (a or {}).get("top1_std"),
                         "tuned_mean": tm, "tuned_std": (b or {}).get("top1_std"),
                         "untuned_rank": ur.get(lab), "tuned_rank": tr.get(lab),
                         "delta": tm - um if um is not None and tm is not None else None})
        rows.sort(key=lambda r: (r["untuned_rank"] or math.inf, r["tuned_rank"] or math.inf,
                                 r["label"]))
        tau = p = None
        if len(both) >= 2:
            res = kendalltau([u[lab]["top1_mean"] for lab in both],
                             [t[lab]["top1_mean"] for lab in both])
            if not math.isnan(res.statistic):
                tau, p = float(res.statistic), float(res.pvalue)
        first = next(iter([*u.values(), *t.values()]))
        out.append({"dataset": k[0], "budget_gmacs": first["budget_gmacs"], "rows": rows, "n": len(both), "tau": tau, "p": p,
                    "changed": any(ur[lab] != tr[lab] for lab in both),
                    "best_untuned": sorted(lab for lab in both if ur[lab] == 1),
                    "best_tuned": sorted(lab for lab in both if tr[lab] == 1)})
    return out


def check_pair(tuned: ResultSet, untuned: ResultSet, where: str = "--untuned") -> None:
    """One-line errors for a pair that cannot be put side by side: ``tuned`` is not a tuned
    suite's results or ``untuned`` is, or the two share no model at any budget."""
    if not is_tuned(tuned):
        raise UserError(f"{tuned.root}: not a tuned suite's results (no tune: in suite.json, "
                        f"no tuned column); {where} puts untuned results beside tuned ones")
    if is_tuned(untuned):
        raise UserError(f"{where} {untuned.root}: these are a tuned suite's results (suite.json "
                        "has tune:); give the untuned suite's output directory")
    a = {(r["dataset"], budget_key(r["budget_gmacs"]), r["label"]) for r in tuned.rows}
    b = {(r["dataset"], budget_key(r["budget_gmacs"]), r["label"]) for r in untuned.rows}
    if not a & b:
        raise UserError(f"{where} {untuned.root}: no model of {tuned.root} at the same data set "
                        "and budget; nothing to put side by side")


def side_by_side_section(ctx) -> list[str]:
    """``## Untuned vs tuned``: one table per budget and Kendall's tau."""
    other = getattr(ctx, "untuned", None)
    if other is None:
        return []
    tables = ranking_tables(ctx.summary, summarise(other))
    multi = len({t["dataset"] for t in tables}) > 1
    md = ["## Untuned vs tuned", "",
          f"The same models trained with the suite's shared recipe (untuned: "
          f"`{md_escape(str(other.suite.get('name') or other.root.name))}`) and after equal "
          "tuning (this report). Rank 1 = the highest mean top-1, among the models both sides "
          "finished; Δ = tuned − untuned mean (pp); Kendall's tau-b between the two orders "
          "(1: the same order, −1: reversed; p: scipy's test of no association, which few "
          "models cannot make small). Whether one row is ahead of another beyond seed noise is "
          "for each side's own comparison tables.", ""]
    for t in tables:
        where = (f"{fmt_budget(t['budget_gmacs'])} GMACs" if t["budget_gmacs"] is not None
                 else "models as given") + (f", {t['dataset']}" if multi else "")
        md += [f"### Budget {where}", "",
               "| model | family | untuned rank | untuned top-1 (%) | tuned rank | "
               "tuned top-1 (%) | Δ (pp) |", "|---|---|---:|---:|---:|---:|---:|"]
        for r in t["rows"]:
            cells = [r["label"], r["family"],
                     "—" if r["untuned_rank"] is None else str(r["untuned_rank"]),
                     fmt_acc(r["untuned_mean"], r["untuned_std"]),
                     "—" if r["tuned_rank"] is None else str(r["tuned_rank"]),
                     fmt_acc(r["tuned_mean"], r["tuned_std"]), fmt_pp(r["delta"])]
            md.append("| " + " | ".join(md_escape(c) for c in cells) + " |")
        md.append("")
        if t["n"] < 2:
            md += [f"Ranking: {t['n']} model(s) finished on both sides, no ranking to compare.",
                   ""]
            continue
        tau = ("Kendall's tau undefined (no spread on one side)" if t["tau"] is None
               else f"Kendall's tau = {t['tau']:.3f} (p = {t['p']:.3g}, {t['n']} models)")
        verdict = ("**the ranking changed**" if t["changed"] else "the ranking is unchanged")
        best = ("" if t["best_untuned"] == t["best_tuned"] else
                f"; best untuned: {', '.join(t['best_untuned'])}, best tuned: "
                f"{', '.join(t['best_tuned'])}")
        md += [f"{tau}: {verdict}{md_escape(best)}.", ""]
    return md
