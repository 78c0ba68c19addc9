"""Memory for runs that finished before it was measured (``mpbench bench --memory-of``).

Memory depends only on the architecture, the batch size and the device, never on the
weights, so it can be measured after the fact: :func:`fill_memory` adds the memory columns
to each finished run's ``result.json`` (atomically, holding the run's lock, so a concurrent
``mpbench run`` on the same directory is safe) and rebuilds ``results.csv``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from mpbench.bench.memory import MemoryJob, format_mb
from mpbench.suite.memory import (MEM_TIMEOUT_MAX_S, MEMORY_COLUMNS, count_activations_m,
                                  measure_quietly)

__all__ = ["fill_memory"]


def fill_memory(out: str | Path, *, device: str = "auto", data_root=None, force: bool = False,
                echo: Callable[[str], None] = print) -> dict:
    """Add the :data:`MEMORY_COLUMNS` to every finished run of ``out`` (an ``mpbench run``
    output directory, or a report's ``results/`` copy) that lacks them (``force``: to all),
    measured here on ``device`` at each run's batch size; one measurement per distinct
    architecture and batch. Returns counts (``filled``, ``skipped``, ``busy``, ``failed``)."""
    from mpbench.complexity.counting import freeze
    from mpbench.complexity.matching import suite_geometry
    from mpbench.config import Suite
    from mpbench.errors import UserError
    from mpbench.plugins import load_run_plugins
    from mpbench.storage import atomic_write_json, read_json
    from mpbench.suite.runner import claim, write_results_csv
    from mpbench.training.device import resolve_device

    out = Path(out)
    if not (out / "suite.json").exists():
        raise UserError(f"{out}: no suite.json here; give an `mpbench run` output directory "
                        f"(or a report's results/ folder)")
    suite = Suite.model_validate(read_json(out / "suite.json"))
    input_size, suite_classes = suite_geometry(suite, data_root, source=str(out / "suite.json"))
    dev = resolve_device(str(device))
    counts = {"filled": 0, "skipped": 0, "busy": 0, "failed": 0}
    measured: dict = {}
    for run_dir in sorted(p for p in (out / "runs").glob("*") if p.is_dir()):
        if not (run_dir / "result.json").exists():
            continue  # unfinished or failed: its training will measure it
        row = read_json(run_dir / "result.json")
        if not force and all(row.get(k) is not None for k in MEMORY_COLUMNS):
            counts["skipped"] += 1
            continue
        with claim(run_dir) as mine:
            if not mine:
                echo(f"{run_dir.name}: held by another process, left as it is")
                counts["busy"] += 1
                continue
            config = read_json(run_dir / "config.json")
            load_run_plugins(config)
            args = config["args"]
            classes = int(args.get("num_classes", 0)) or suite_classes
            batch = int(config["recipe"]["batch_size"]) // int(row.get("world_size") or 1)
            note = lambda msg, name=run_dir.name: echo(f"{name}: {msg}")  # noqa: E731
            job = MemoryJob(config["model"], dict(args), batch, input_size, classes,
                            config["recipe"].get("amp", "auto"),
                            config["recipe"].get("channels_last", "auto"),
                            tuple(config.get("plugins") or ()), config.get("suite_file"))
            key = freeze({k: v for k, v in job.__dict__.items() if k not in ("source",)})
            if key not in measured:
                measured[key] = {"activations_m": count_activations_m(job.model, job.args, input_size,
                                                               classes, note),
                                 **measure_quietly(job, dev, MEM_TIMEOUT_MAX_S, note)}
            mem = measured[key]
            if mem.get("train_peak_mem_mb") is None:
                counts["failed"] += 1
                continue
            row.update({k: mem.get(k) for k in mem if k != "mem_time_s"})
            atomic_write_json(run_dir / "result.json", row)
            counts["filled"] += 1
            echo(f"{run_dir.name}: activations {row['activations_m']:.3f}M, train "
                 f"{format_mb(row['train_peak_mem_mb'])}, infer "
                 f"{format_mb(row['infer_peak_mem_mb'])} at batch {batch} ({row['mem_method']})")
    write_results_csv(out)
    return counts
