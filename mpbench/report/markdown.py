"""The markdown results table of one data set (rows grouped by budget, the best marked)."""
from __future__ import annotations

from mpbench.report.formatting import (BEST_MARK, TIED_MARK, extra_columns, fmt_acc, fmt_budget,
                                       fmt_dev, fmt_duration, fmt_gmacs, fmt_knob, fmt_params,
                                       fmt_published, fmt_rate, fmt_rel, md_escape, split_name)

__all__ = ["markdown_table", "TABLE_HEAD"]

TABLE_HEAD = ["budget (GMACs)", "model", "family", "knob", "GMACs", "vs budget", "params (M)",
              "top-1 (%)", "top-5 (%)", "runs", "train time", "img/s"]



def _head(summary: list[dict]) -> list[str]:
    extra, split = extra_columns(summary), split_name(summary)
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



def markdown_table(summary: list[dict]) -> str:
    """One markdown table (rows of one data set), rows grouped by budget; the best mean marked
    ★ where it is significantly ahead of the runner-up, else every tied row "(tied best)"."""
    extra, head = extra_columns(summary), _head(summary)
    align = ["---"] * 4 + ["---:"] * (len(head) - 4)
    align[head.index("runs")] = "---"
    if extra["split"]:
        align[head.index("split")] = "---"
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    prev = object()
    for a in summary:
        cells = [md_escape(c) for c in _cells(a, a["budget_gmacs"] != prev, extra)]
        prev = a["budget_gmacs"]
        if a["best"]:
            cells[1] = f"**{cells[1]}** {BEST_MARK}"
            cells[7] = f"**{cells[7]}**"
        elif a["tied_best"]:
            cells[1] = f"{cells[1]} {TIED_MARK}"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
