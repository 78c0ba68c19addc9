"""Calibration and robustness scores in the summary frame (hooks of :mod:`mpbench.report.summary`).

Per row: mean ± sample std over the finished seeds of NLL, ECE, Brier score, superclass
top-1 and corruption top-1 (:data:`SCORES`), with the main table's significance treatment,
per score: the best of each budget marked only where it is significantly ahead of every
other row after the suite's correction (:func:`mpbench.report.stats.rank_with_ties`), and
every row compared with one row of its budget (the suite's reference, else the budget's
best-top-1 row), paired over shared seeds, the budget's comparisons corrected together
(:func:`mpbench.report.stats.correct`). A score a row's runs never measured (results made
before it existed) stays None: "not measured", never 0.

Kept apart from :mod:`mpbench.report.summary` (which lists these functions in its hooks),
so it imports only the layers below it.
"""
from __future__ import annotations

import math
import statistics

from mpbench.report.formatting import budget_key
from mpbench.report.stats import compare, correct, rank_with_ties

__all__ = ["SCORES", "HIGHER_IS_BETTER", "score_fields", "score_significance",
           "SCORE_SUMMARY_COLUMNS"]

#: score -> True where higher is better (top-1s), False where lower is (losses, errors)
HIGHER_IS_BETTER = {"nll": False, "ece": False, "brier": False, "superclass_top1": True,
                    "corrupt_top1": True}
SCORES = tuple(HIGHER_IS_BETTER)
_PER_SCORE = ("mean", "std", "n", "best", "tied_best", "vs_label", "vs_test", "vs_n", "vs_diff",
              "vs_p", "vs_p_adj", "vs_significant")
#: the summary.csv columns these hooks add (report.csv_table.SUMMARY_COLUMNS)
SCORE_SUMMARY_COLUMNS = [f"{m}_{k}" for m in SCORES for k in _PER_SCORE] + ["corrupt_set"]


def score_fields(done: list[dict], runs: list[dict]) -> dict:
    """``{score}_by_seed``, ``_mean``, ``_std`` (n - 1; None below two), ``_n`` per score over
    the finished runs that measured it, and ``corrupt_set`` (the corrupted sets' names)."""
    out: dict = {}
    for m in SCORES:
        by_seed = {r["seed"]: r[m] for r in done if r.get(m) is not None}
        xs = list(by_seed.values())
        out.update({f"{m}_by_seed": by_seed, f"{m}_n": len(xs),
                    f"{m}_mean": math.fsum(xs) / len(xs) if xs else None,
                    f"{m}_std": statistics.stdev(xs) if len(xs) > 1 else None})
    out["corrupt_set"] = " ".join(sorted({r.get("corrupt_set") or "" for r in done} - {""}))
    return out


def _against(a: dict, b: dict, m: str, level: float):
    sa, sb = sorted(a[f"{m}_by_seed"]), sorted(b[f"{m}_by_seed"])
    return compare([a[f"{m}_by_seed"][s] for s in sa], [b[f"{m}_by_seed"][s] for s in sb],
                   seeds_a=sa, seeds_b=sb, level=level)


def _nan(v: float) -> float | None:
    return None if v is None or math.isnan(v) else float(v)


def score_significance(summary: list[dict]) -> None:
    """Per (data set, budget) and score: ``_best``/``_tied_best`` marks and the comparison
    with the budget's reference row (``ref_label``, else ``best_label``, set by
    ``add_significance``) as flat fields ``_vs_label``, ``_vs_diff`` (row minus that row, in
    the score's units), ``_vs_p``, ``_vs_p_adj`` (the suite's correction over the budget's
    comparisons), ``_vs_significant``."""
    for a in summary:
        for m in SCORES:
            a.update({f"{m}_{k}": None for k in _PER_SCORE[5:]})
            a[f"{m}_best"] = a[f"{m}_tied_best"] = False
    keys = sorted({(a["dataset"], budget_key(a["budget_gmacs"])) for a in summary})
    for key in keys:
        rows = [a for a in summary if (a["dataset"], budget_key(a["budget_gmacs"])) == key]
        level = rows[0].get("significance_level", 0.05)
        method = rows[0].get("significance_correction", "holm")
        against = next((a["ref_label"] for a in rows if a.get("ref_label")), "") or \
            next((a["best_label"] for a in rows if a.get("best_label")), "")
        for m in SCORES:
            group = {a["label"]: a for a in rows if a[f"{m}_by_seed"]}
            if not group:
                continue
            sign = 1.0 if HIGHER_IS_BETTER[m] else -1.0  # rank_with_ties: higher is better
            tied = rank_with_ties({k: [sign * v for v in a[f"{m}_by_seed"].values()]
                                   for k, a in group.items()},
                                  seeds={k: list(a[f"{m}_by_seed"]) for k, a in group.items()},
                                  level=level, correction=method)
            if len(group) > 1:
                for lab in tied:
                    group[lab][f"{m}_best" if len(tied) == 1 else f"{m}_tied_best"] = True
            other = group.get(against)
            if other is None:
                continue
            family = correct({k: _against(a, other, m, level) for k, a in group.items()
                              if a is not other}, method)
            for k, c in family.items():
                group[k].update({
                    f"{m}_vs_label": against, f"{m}_vs_test": c.exact or c.test,
                    f"{m}_vs_n": c.n_pairs if c.test == "paired" else f"{c.n_a}/{c.n_b}",
                    f"{m}_vs_diff": _nan(c.diff), f"{m}_vs_p": _nan(c.p_value),
                    f"{m}_vs_p_adj": _nan(c.p_adjusted),
                    f"{m}_vs_significant": bool(c.significant) if c.test != "none" else None})
