"""Loading a suite output directory (``mpbench run --out``) for a report::

    results.csv, suite.json, plan.json, runs/<run_id>/{config,metrics,result|failure}.json,
    tune/<study>/study.json (a tuned suite's trials)

into a :class:`ResultSet` whose rows are normalised (numbers or None, never NaN or "") so that
results made before a column existed load and report it as "not measured"; and copying what a
report needs of it (no checkpoints) beside the report.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mpbench.errors import UserError
from mpbench.report.formatting import as_number
from mpbench.report.memory import run_fields as memory_run_fields

__all__ = ["ResultSet", "load_results", "copy_results", "read_json", "STATUS_ORDER",
           "RUN_FILES", "ANALYSIS_FILES", "TUNE_FILES"]

STATUS_ORDER = ("done", "diverged", "oom", "failed", "partial", "pending")
# files of a run that a report needs (never checkpoints)
RUN_FILES = ("config.json", "metrics.json", "result.json", "failure.json")
# a tuned suite's trial records (mpbench.suite.tune writes one per study): the Tuning section's
TUNE_FILES = ("study.json",)
# scores beyond top-1 (mpbench.training.metrics, .robustness; None in older results)
SCORE_COLUMNS = ("nll", "ece", "brier", "superclass_top1", "corrupt_top1")
ANALYSIS_FILES = ("path_usage_class.csv", "path_usage_superclass.csv", "specialisation.csv")



@dataclass
class ResultSet:
    """Everything a report needs from one suite output directory."""

    root: Path
    suite: dict
    rows: list[dict]                       # one per planned or finished run
    metrics: dict[str, list[dict]] = field(default_factory=dict)  # run_id -> per-epoch dicts
    configs: dict[str, dict] = field(default_factory=dict)        # run_id -> config.json


def read_json(path: Path) -> Any:
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
    suite = read_json(root / "suite.json") or {}
    plan = read_json(root / "plan.json") or []

    seen = {r.get("run_id") for r in rows}
    for p in plan:  # planned runs without a result are shown as pending, not dropped
        if p.get("run_id") in seen:
            continue
        metrics = read_json(root / "runs" / p["run_id"] / "metrics.json") or []
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
        cfg = read_json(root / "runs" / run_id / "config.json") if run_id else None
        if cfg:
            out.configs[run_id] = cfg
        metrics = read_json(root / "runs" / run_id / "metrics.json") if run_id else None
        if isinstance(metrics, list):
            out.metrics[run_id] = metrics
        out.rows.append(_normalise_row(r))
    out.rows.sort(key=lambda r: (r["run_id"], r["seed"]))
    return out


def _normalise_row(r: dict) -> dict:
    budget = as_number(r.get("budget_gmacs"))
    seed = as_number(r.get("seed"))
    status = str(r.get("status") or "failed")
    return {
        "run_id": str(r.get("run_id") or ""), "suite": str(r.get("suite") or ""),
        "label": str(r.get("label") or r.get("model") or ""), "model": str(r.get("model") or ""),
        "family": str(r.get("family") or ""), "dataset": str(r.get("dataset") or ""),
        "budget_gmacs": budget, "gmacs": as_number(r.get("gmacs")), "params": as_number(r.get("params")),
        "deviation": as_number(r.get("deviation")), "knob": str(r.get("knob") or ""),
        "knob_value": "" if r.get("knob_value") is None else str(r.get("knob_value")),
        "seed": int(seed) if seed is not None else -1, "epochs": int(as_number(r.get("epochs")) or 0),
        "top1": as_number(r.get("top1")), "top5": as_number(r.get("top5")),
        "train_time_s": as_number(r.get("train_time_s")), "img_per_s": as_number(r.get("img_per_s")),
        "status": status, "device": str(r.get("device") or ""),
        "finished_at": str(r.get("finished_at") or ""), "error": str(r.get("error") or ""),
        "init": str(r.get("init") or ""), "init_mode": str(r.get("init_mode") or ""),
        **memory_run_fields(r),  # activations, peak memory (None in older results)
        # newer result columns (absent in older results: None / "")
        "split": str(r.get("split") or ""), "val_top1": as_number(r.get("val_top1")),
        "val_top5": as_number(r.get("val_top5")),
        "speed_train_img_s": as_number(r.get("speed_train_img_s")),
        "speed_infer_img_s": as_number(r.get("speed_infer_img_s")),
        "speed_device": str(r.get("speed_device") or ""),
        # a tuned suite's final runs (mpbench.suite.tune): the chosen values as JSON
        "tuned": str(r.get("tuned") or ""), "tune_trials": as_number(r.get("tune_trials")),
        "tune_best_val_top1": as_number(r.get("tune_best_val_top1")),
        "tune_cost_s": as_number(r.get("tune_cost_s")),
        **{k: as_number(r.get(k)) for k in SCORE_COLUMNS},
        "corrupt_set": str(r.get("corrupt_set") or ""),
    }



def copy_results(src: Path, dest: Path) -> None:
    """Copy what a report needs from a suite output directory (no checkpoints) to ``dest``."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in ("results.csv", "suite.json", "plan.json"):
        if (src / name).exists():
            shutil.copyfile(src / name, dest / name)
    for study_dir in sorted(p for p in (src / "tune").glob("*") if p.is_dir()):
        for name in TUNE_FILES:
            if (study_dir / name).exists():
                (dest / "tune" / study_dir.name).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(study_dir / name, dest / "tune" / study_dir.name / name)
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
