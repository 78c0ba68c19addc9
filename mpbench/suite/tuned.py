"""A suite with ``tune:``: every model x budget's trials first, then its final runs.

The final runs of a model x budget are its seeds, trained on the full recipe with the best
trial's values (their config, and so their fingerprint, carries them) and the test set
evaluated once at the end; they start only once that study has finished every trial. Workers
that share an output directory share the trials and then the final runs; rerunning the same
command resumes both.
"""
from __future__ import annotations

import time
import traceback
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Callable

from mpbench.config import Suite
from mpbench.storage import atomic_write_json, read_json
from mpbench.suite.plan import RunPlan
from mpbench.suite.runner import check_existing, is_claimed, output_lock, run_suite
from mpbench.suite.tune import (study_dir_name, study_outcome, take_trial, tune_epochs,
                                run_trial)


def study_groups(plans: list[RunPlan]) -> dict[str, list[RunPlan]]:
    """The plans of each model x budget (one study each), in suite order."""
    groups: dict[str, list[RunPlan]] = {}
    for p in plans:
        groups.setdefault(study_dir_name(p), []).append(p)
    return groups


def tuned_plans(suite: Suite, plans: list[RunPlan], out: Path,
                source: str = "<suite>") -> list[RunPlan]:
    """``plans`` with the final runs of every finished study carrying its outcome."""
    out_plans = []
    for group in study_groups(plans).values():
        outcome = study_outcome(suite, group[0], out, source)
        out_plans += [replace(p, tune=outcome) if outcome else p for p in group]
    return out_plans


def tune_suite(suite: Suite, plans: list[RunPlan], out: Path, *, data_root=None,
               device: str = "auto", progress: bool | None = None,
               echo: Callable[[str], None] = print, source: str = "<suite>") -> dict:
    """Train every trial this worker can claim, then the final runs of finished studies;
    returns counts (trials by outcome, final runs by outcome)."""
    from mpbench.data import load_dataset
    from mpbench.training.device import resolve_device

    dev = resolve_device(device)
    groups = study_groups(plans)
    for group in groups.values():  # refuse a changed suite before anything is written
        study_outcome(suite, group[0], out, source)
    check_existing(tuned_plans(suite, plans, out, source), suite, out, source)
    with output_lock(out):  # status reads the plan before any trial has finished
        atomic_write_json(out / "suite.json", suite.model_dump(mode="json"))
        atomic_write_json(out / "plan.json", [p.as_dict() for p in plans])
    counts = {"trials": 0, "trials_pruned": 0, "trials_diverged": 0, "trials_failed": 0,
              "trials_busy": 0}
    t0, data, broken = time.perf_counter(), None, set()
    final: dict = {}
    for second_look in (False, True):  # a busy study's worker may have died meanwhile
        busy = 0
        for key, group in groups.items():
            while key not in broken:
                with ExitStack() as stack:
                    kind, study, number = take_trial(suite, group[0], out, stack, source)
                    if kind == "busy":
                        busy += 1
                    if kind in ("busy", "done"):
                        break
                    if data is None:
                        data = load_dataset(suite.dataset, data_root)
                    echo(f"{key}: trial {number} ({'taken over' if kind == 'resume' else 'new'}) "
                         f"on {dev}")
                    try:
                        record = run_trial(suite, group[0], out, study, number, data, dev,
                                           progress, echo)
                    except Exception as exc:  # left RUNNING: the next `mpbench run` resumes it
                        trial_dir = out / "tune" / key / f"trial-{number}"
                        with open(trial_dir / "log.txt", "a") as f:
                            f.write("failed:\n" + traceback.format_exc())
                        echo(f"{key}: trial {number} FAILED ({type(exc).__name__}: {exc})")
                        counts["trials_failed"] += 1
                        broken.add(key)
                        break
                counts["trials"] += 1
                if record["state"] != "complete":
                    counts[f"trials_{record['state']}"] += 1
        ready = tuned_plans(suite, plans, out, source)
        only = [p.run_id for p in ready if p.tune is not None]
        check_existing(ready, suite, out, source)
        if only:
            res = run_suite(suite, ready, out, data_root=data_root, device=device,
                            progress=progress, echo=echo, source=source, only=only)
            for k, v in res.items():
                if k != "wall_s" and not second_look:
                    final[k] = v
                elif k != "wall_s":
                    final[k] = final.get(k, 0) + v if k != "busy" else v
        counts["trials_busy"] = busy
        if not busy:
            break
    waiting = sum(1 for p in tuned_plans(suite, plans, out, source) if p.tune is None)
    return {**counts, **final, "waiting_for_tuning": waiting,
            "failed": final.get("failed", 0) + counts["trials_failed"],
            "wall_s": time.perf_counter() - t0}


def tune_status(out: Path) -> list[dict]:
    """Trials done / running / pending per model x budget, from the output directory alone."""
    suite = read_json(out / "suite.json") if (out / "suite.json").exists() else {}
    if not suite.get("tune"):
        return []
    planned = suite["tune"].get("trials", 16)
    rows = []
    for plan in read_json(out / "plan.json"):
        key = study_dir_name(RunPlan(**plan))
        if any(r["study"] == key for r in rows):
            continue
        study_dir = out / "tune" / key
        dirs = sorted(study_dir.glob("trial-*")) if study_dir.exists() else []
        done = [read_json(d / "trial.json") for d in dirs if (d / "trial.json").exists()]
        running = sum(1 for d in dirs if not (d / "trial.json").exists() and is_claimed(d))
        best = max((t["value"] for t in done if t["value"] is not None), default=None)
        rows.append({"study": key, "label": plan["label"], "budget_gmacs": plan["budget_gmacs"],
                     "trials": planned, "done": len(done), "running": running,
                     "pending": max(0, planned - len(done) - running),
                     "pruned": sum(t["state"] == "pruned" for t in done), "best_val_top1": best})
    return rows


def trial_plan_text(suite: Suite, plans: list[RunPlan], out: Path, train_images: int | None) -> str:
    """``--dry-run``: the studies, their budget and a cost estimate in training MACs (3x the
    forward MACs per image: forward + backward) and in final-run equivalents."""
    tune = suite.tune
    epochs = tune_epochs(suite)
    groups = study_groups(plans)
    lines = [f"tuning: {len(groups)} studies x {tune.trials} trials x {epochs} epochs "
             f"(sampler {tune.sampler}, pruner {tune.pruner}, seed {tune.seed}), storage "
             f"{tune.storage or out / 'tune' / 'optuna.db'}",
             "space: " + ", ".join(f"{k}={v if isinstance(v, list) else v.model_dump()}"
                                   for k, v in tune.space.items())]
    total_trial = total_final = 0.0
    for key, group in groups.items():
        trial_pmac = 3 * group[0].gmacs * 1e9 * (train_images or 0) * epochs * tune.trials / 1e15
        final_pmac = 3 * group[0].gmacs * 1e9 * (train_images or 0) * suite.recipe.epochs \
            * len(group) / 1e15
        total_trial, total_final = total_trial + trial_pmac, total_final + final_pmac
        lines.append(f"  {key:<38} {tune.trials} trials then {len(group)} final runs"
                     + (f"  ~{trial_pmac:.3g} PMAC tuning, {final_pmac:.3g} PMAC final"
                        if train_images else ""))
    ratio = tune.trials * epochs / (len(suite.seeds) * suite.recipe.epochs)
    lines.append(f"cost estimate: tuning = {ratio:.2f} x the final runs' training "
                 f"({tune.trials} x {epochs} trial epochs vs {len(suite.seeds)} x "
                 f"{suite.recipe.epochs} per row; pruning only lowers it)"
                 + (f"; {total_trial:.3g} + {total_final:.3g} PMAC of training in all "
                    f"({train_images} training images)" if train_images else ""))
    return "\n".join(lines)


def train_image_count(suite: Suite) -> int | None:
    """Training images per epoch where the suite says (None for an image folder's full set)."""
    ds = suite.dataset
    total = {"cifar10": 50000, "cifar100": 50000, "synthetic": ds.num_train}.get(ds.name)
    if ds.train_subset is not None:
        total = ds.train_subset if total is None else min(total, ds.train_subset)
    return None if total is None else total - (ds.val_split or 0)
