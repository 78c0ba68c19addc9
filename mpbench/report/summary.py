"""The per-budget summary frame: one row per (data set, budget, model configuration label),
mean ± sample standard deviation (n - 1) of top-1/top-5 over the seeds that finished, every
run counted by its status, and the rows of each budget compared (:func:`add_significance`).

Hook points for new report columns: ``ROW_FIELDS`` (functions ``(done_runs, all_runs) ->
dict`` whose keys are added to each summary row) and ``SUMMARY_STEPS`` (functions ``(summary)
-> None`` run over the whole frame after the comparisons).
"""
from __future__ import annotations

import math
from typing import Callable

from mpbench.report.compute_equivalent import add_compute_multipliers
from mpbench.report.calibration import score_fields, score_significance
from mpbench.report.formatting import budget_key
from mpbench.report.results import STATUS_ORDER, ResultSet
from mpbench.report.memory import memory_fields

__all__ = ["aggregate", "add_significance", "compare_rows", "budget_key", "status_text",
           "suite_comparison_options", "label_order", "SPEED_COLUMNS", "ROW_FIELDS",
           "SUMMARY_STEPS"]

SPEED_COLUMNS = ("speed_train_img_s", "speed_infer_img_s")
# extra summary fields per row: f(done runs, all runs) -> {field: value}
ROW_FIELDS: list[Callable[[list[dict], list[dict]], dict]] = [score_fields]
# whole-frame steps after add_significance: f(summary) -> None
SUMMARY_STEPS: list[Callable[[list[dict]], None]] = [add_compute_multipliers,
                                                      score_significance]


def _mean(xs: list[float]) -> float | None:
    return math.fsum(xs) / len(xs) if xs else None


def _std(xs: list[float]) -> float | None:
    """Sample standard deviation (n - 1); None below two values."""
    if len(xs) < 2:
        return None
    m = math.fsum(xs) / len(xs)
    return math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (len(xs) - 1))


# what a row's runs ended as: "no top-1" is a finished run whose top-1 is NaN or missing
ROW_STATES = ("done", "no top-1", *STATUS_ORDER[1:])


def status_text(counts: dict[str, int]) -> str:
    """``"3"`` when every run finished with a top-1, else e.g. ``"2 done, 1 diverged"``."""
    total = sum(counts.values())
    if counts.get("done", 0) == total:
        return str(total)
    return ", ".join(f"{counts[s]} {s}" for s in ROW_STATES if counts.get(s))


def aggregate(rows: list[dict], label_order: list[str] | None = None, *, level: float = 0.05,
              reference: str | None = None, published: dict[str, dict] | None = None,
              correction: str = "holm") -> list[dict]:
    """One summary row per (data set, budget, label); sorted; compared within each budget
    (:func:`add_significance`: the best mark only where significant at ``level`` after the
    multiple-test ``correction``, every row against the best and against the ``reference``
    label); ``published``: label -> the suite entry's ``reference`` ({top1, source}), printed
    beside the measured mean."""
    order = {lab: i for i, lab in enumerate(label_order or [])}
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["budget_gmacs"], r["label"]), []).append(r)
    out = []
    for (dataset, budget, label), runs in groups.items():
        runs = sorted(runs, key=lambda r: r["seed"])
        done = [r for r in runs if r["status"] == "done"]
        basis = done or runs
        counts = {s: 0 for s in ROW_STATES}
        for r in runs:
            state = r["status"] if r["status"] in STATUS_ORDER else "failed"
            counts["no top-1" if state == "done" and r["top1"] is None else state] += 1
        top1 = [r["top1"] for r in done if r["top1"] is not None]
        top5 = [r["top5"] for r in done if r["top5"] is not None]
        val1 = [r["val_top1"] for r in done if r["val_top1"] is not None]
        first = basis[0]
        row = {
            "dataset": dataset, "budget_gmacs": budget, "label": label, "model": first["model"],
            "family": first["family"], "knob": first["knob"], "knob_value": first["knob_value"],
            "gmacs": _mean([r["gmacs"] for r in basis if r["gmacs"] is not None]),
            "deviation": _mean([r["deviation"] for r in basis if r["deviation"] is not None]),
            "params": _mean([r["params"] for r in basis if r["params"] is not None]),
            "runs": len(runs), "n_done": counts["done"], "n_no_top1": counts["no top-1"],
            "n_diverged": counts["diverged"],
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
        }
        for fields in ROW_FIELDS:
            row.update(fields(done, runs))
        out.append(row)
    out.sort(key=lambda a: (a["dataset"], budget_key(a["budget_gmacs"]),
                            order.get(a["label"], len(order)), a["label"]))
    add_significance(out, level=level, reference=reference, published=published,
                     correction=correction)
    for step in SUMMARY_STEPS:
        step(out)
    return out


def compare_rows(a: dict, b: dict, level: float):
    """Top-1 of row ``a`` minus row ``b`` (:func:`mpbench.report.stats.compare`): paired over
    the seeds both finished when they share two or more, Welch otherwise."""
    from mpbench.report.stats import compare

    sa, sb = sorted(a["top1_by_seed"]), sorted(b["top1_by_seed"])
    return compare([a["top1_by_seed"][s] for s in sa], [b["top1_by_seed"][s] for s in sb],
                   seeds_a=sa, seeds_b=sb, level=level)


def add_significance(summary: list[dict], *, level: float = 0.05, reference: str | None = None,
                     published: dict[str, dict] | None = None, correction: str = "holm") -> None:
    """Per (data set, budget): ``best`` (the best mean, only where it is significantly ahead
    of every other row), ``tied_best`` (otherwise: the best mean and every row not
    significantly worse, :func:`mpbench.report.stats.rank_with_ties`), ``vs_best``/``vs_ref``
    (this row minus the best-mean / the reference row: a
    :class:`~mpbench.report.stats.Comparison`, None for that row itself or without finished
    runs; each family of k - 1 comparisons corrected by ``correction``, holm or none), the
    published number and the training speed relative to the reference row (else the
    best-mean row)."""
    from mpbench.report.stats import correct, rank_with_ties

    published = published or {}
    for a in summary:
        a.update(best=False, tied_best=False, vs_best=None, vs_ref=None, best_label="",
                 ref_label="", significance_level=level, significance_correction=correction,
                 train_speed_rel=None, train_speed_vs="")
        pub = published.get(a["label"])
        a["published"] = pub
        a["published_diff"] = (a["top1_mean"] - pub["top1"]
                               if pub and a["top1_mean"] is not None else None)
    for key in sorted({(a["dataset"], budget_key(a["budget_gmacs"])) for a in summary}):
        rows = [a for a in summary if (a["dataset"], budget_key(a["budget_gmacs"])) == key]
        group = [a for a in rows if a["top1_by_seed"]]
        if not group:
            continue
        by_label = {a["label"]: a for a in group}
        tied = rank_with_ties({k: list(v["top1_by_seed"].values()) for k, v in by_label.items()},
                              seeds={k: list(v["top1_by_seed"]) for k, v in by_label.items()},
                              level=level, correction=correction)
        top = by_label[tied[0]]
        if len(group) > 1:  # a lone row is best of nothing
            if len(tied) == 1:
                top["best"] = True
            else:
                for lab in tied:
                    by_label[lab]["tied_best"] = True
        ref = by_label.get(reference) if reference else None
        vs_best = correct({a["label"]: compare_rows(a, top, level)
                           for a in group if a is not top}, correction)
        vs_ref = correct({a["label"]: compare_rows(a, ref, level)
                          for a in group if a is not ref}, correction) if ref is not None else {}
        for a in group:
            a["best_label"] = top["label"]
            a["vs_best"] = vs_best.get(a["label"])
            if ref is not None:
                a["ref_label"] = ref["label"]
                a["vs_ref"] = vs_ref.get(a["label"])
        base = ref if ref is not None else top
        for a in rows:
            if a["speed_train_img_s"] and base["speed_train_img_s"]:
                a["train_speed_rel"] = a["speed_train_img_s"] / base["speed_train_img_s"]
                a["train_speed_vs"] = base["label"]



def suite_comparison_options(suite: dict) -> dict:
    """:func:`aggregate`'s ``level``, ``correction``, ``reference`` and ``published`` from a
    stored suite (suites made before ``significance_correction`` existed get holm)."""
    return {"level": float(suite.get("significance_level") or 0.05),
            "correction": suite.get("significance_correction") or "holm",
            "reference": suite.get("reference"),
            "published": {m.get("label") or m.get("name"): m["reference"]
                          for m in suite.get("models") or [] if m.get("reference")}}


def label_order(rs: ResultSet) -> list[str]:
    models = rs.suite.get("models") or []
    return [m.get("label") or m.get("name") for m in models]


ROW_FIELDS.append(memory_fields)  # report.memory: activations, peak memory
