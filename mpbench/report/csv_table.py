"""``summary.csv``: the summary frame's rows, unformatted (fixed float formats)."""
from __future__ import annotations

import math
from typing import Any

from mpbench.report.compute_equivalent import CSV_COLUMNS as COMPUTE_EQUIVALENT_COLUMNS
from mpbench.report.calibration import SCORE_SUMMARY_COLUMNS
from mpbench.report.memory import CSV_COLUMNS as MEMORY_COLUMNS

__all__ = ["summary_csv", "SUMMARY_COLUMNS"]

SUMMARY_COLUMNS = [
    "dataset", "budget_gmacs", "label", "model", "family", "knob", "knob_value", "gmacs",
    "deviation", "params", "runs", "n_done", "n_no_top1", "n_diverged", "n_oom", "n_failed", "n_pending",
    "status", "seeds", "epochs", "top1_mean", "top1_std", "top5_mean", "top5_std",
    "train_time_s", "img_per_s", "best", "tied_best", "split", "val_top1_mean", "val_top1_std",
    "significance_level", "significance_correction",
    *[f"vs_{w}_{k}" for w in ("best", "ref") for k in ("label", "test", "exact", "n", "diff",
                                                      "ci_low", "ci_high", "p", "p_adj",
                                                      "p_beats")],
    "published_top1", "published_diff", "published_source",
    "speed_train_img_s", "speed_infer_img_s", "speed_device", "train_speed_rel", "train_speed_vs",
    *COMPUTE_EQUIVALENT_COLUMNS,
    *SCORE_SUMMARY_COLUMNS,
]
SUMMARY_COLUMNS += MEMORY_COLUMNS  # report.memory


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
            row[f"{key}_exact"] = c.exact if c is not None else ""
            row[f"{key}_n"] = (c.n_pairs if c.test == "paired" else f"{c.n_a}/{c.n_b}") \
                if c is not None else ""
            for k, attr in (("diff", "diff"), ("ci_low", "ci_low"), ("ci_high", "ci_high"),
                            ("p", "p_value"), ("p_adj", "p_adjusted"),
                            ("p_beats", "p_a_beats_b")):
                v = getattr(c, attr) if c is not None else None
                row[f"{key}_{k}"] = None if v is None or math.isnan(v) else \
                    (f"{v:.6g}" if k in ("p", "p_adj") else float(v))
        pub = a.get("published") or {}
        row["published_top1"], row["published_source"] = pub.get("top1"), pub.get("source", "")
        w.writerow([_csv_value(row[c]) for c in SUMMARY_COLUMNS])
    return buf.getvalue()
