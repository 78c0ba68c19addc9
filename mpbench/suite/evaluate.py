"""``mpbench evaluate``: the scores beyond top-1 for runs that finished before they existed.

A finished run's final checkpoint holds its trained weights; evaluating it again gives NLL,
ECE, Brier score, superclass top-1 (test set, and the validation split where there is one)
and top-1 under corruptions, exactly as a new run records them after its last epoch. Its
training fields (top-1 included) are kept as trained; the new fields are added to
``result.json`` (written atomically) and ``results.csv`` is rebuilt. Runs that have the
fields already are skipped, so an interrupted ``evaluate`` resumes where it stopped.
"""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from mpbench.errors import UserError
from mpbench.storage import atomic_write_json, read_json

__all__ = ["is_evaluated", "evaluate_run", "evaluate_runs"]


def is_evaluated(result: dict) -> bool:
    """True when a result already has the scores (a run made since they exist, or evaluated)."""
    return result.get("nll") is not None and "corrupt_top1" in result


def evaluate_run(run_dir: Path, data, device, note: Callable[[str], None] = lambda m: None) -> dict:
    """The evaluation fields of one finished run, from its checkpoint (nothing is written)."""
    import torch

    from mpbench.config import DatasetConfig, Recipe
    from mpbench.data.superclasses import superclass_map
    from mpbench.suite.runner import evaluation_fields, load_run
    from mpbench.training.callbacks import recipe_callbacks
    from mpbench.training.device import autocast_for, use_channels_last
    from mpbench.training.robustness import evaluate_corruptions
    from mpbench.training.trainer import evaluate, make_loaders, make_val_loader

    model, config = load_run(run_dir)
    recipe = Recipe.model_validate(config["recipe"])
    dataset = DatasetConfig.model_validate(config["dataset"])
    channels_last = use_channels_last(recipe.channels_last, model, device)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    _, test = make_loaders(data, recipe, device, config.get("seed", 0), channels_last)
    val = make_val_loader(data, recipe, device, channels_last)
    for cb in recipe_callbacks(recipe):
        _, test = cb.on_loaders(test, test)
        if val is not None:
            _, val = cb.on_loaders(val, val)
    autocast, coarse_of = autocast_for(device, recipe), superclass_map(data)
    entry = evaluate(model, test, autocast, coarse_of=coarse_of)
    if val is not None:
        entry.update(evaluate(model, val, autocast, "val", coarse_of))
    fields = evaluation_fields([entry])
    fields["evaluated_top1"] = entry["test_top1"]  # beside the trained run's own top1
    fields.update(evaluate_corruptions(model, data, recipe, dataset, device, note))
    return fields


def log(run_dir: Path, message: str) -> None:
    """A line in the run's log.txt, as the runner writes them."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    with open(run_dir / "log.txt", "a") as f:
        f.write(f"{stamp} {message}\n")


def evaluate_runs(runs_dir: str | Path, *, data_root=None, device: str = "auto",
                  force: bool = False, echo: Callable[[str], None] = print) -> dict:
    """Evaluate every finished run of an ``mpbench run`` output directory that lacks the
    scores (all of them with ``force``); returns counts. Runs another process holds are
    left alone; results.csv is rebuilt at the end (and after each run)."""
    from mpbench.data import load_dataset
    from mpbench.suite.runner import claim, write_results_csv
    from mpbench.training.device import resolve_device

    out = Path(runs_dir)
    if not (out / "runs").is_dir():
        raise UserError(f"{out}: no runs/ folder here; give an `mpbench run` output directory")
    dev = resolve_device(device)
    run_dirs = sorted(p for p in (out / "runs").iterdir() if (p / "result.json").exists())
    counts = {"evaluated": 0, "skipped": 0, "not_done": 0, "busy": 0}
    cache: dict[str, object] = {}
    for i, run_dir in enumerate(run_dirs, 1):
        head = f"[{i}/{len(run_dirs)}] {run_dir.name}"
        result = read_json(run_dir / "result.json")
        if result.get("status") != "done":
            counts["not_done"] += 1
            echo(f"{head}: {result.get('status')}, nothing to evaluate")
            continue
        if is_evaluated(result) and not force:
            counts["skipped"] += 1
            echo(f"{head}: evaluated earlier, skipped")
            continue
        with claim(run_dir) as mine:
            if not mine:
                counts["busy"] += 1
                echo(f"{head}: held by another process, left alone")
                continue
            dataset = read_json(run_dir / "config.json")["dataset"]
            key = json.dumps(dataset, sort_keys=True)
            if key not in cache:
                cache.clear()  # one data set in memory at a time
                cache[key] = load_dataset(dataset, data_root)
            t0 = time.perf_counter()

            def note(msg: str) -> None:
                log(run_dir, f"evaluate: {msg}")
            fields = evaluate_run(run_dir, cache[key], dev, note)
            result = {**read_json(run_dir / "result.json"), **fields,
                      "evaluated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                      "evaluated_device": str(dev)}
            atomic_write_json(run_dir / "result.json", result)
            log(run_dir, f"evaluate: nll {fields['nll']:.4f} ece {fields['ece']:.4f} "
                          f"corrupt_top1 {fields['corrupt_top1']}")
        write_results_csv(out)
        counts["evaluated"] += 1
        corrupt = fields["corrupt_top1"]
        echo(f"{head}: nll {fields['nll']:.3f} ece {fields['ece']:.3f} brier "
             f"{fields['brier']:.3f} corrupt_top1 "
             f"{'-' if corrupt is None else f'{corrupt:.2f}'} "
             f"({time.perf_counter() - t0:.0f}s)")
    write_results_csv(out)
    return counts
