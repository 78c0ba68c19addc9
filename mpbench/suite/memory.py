"""A run's memory axis: activations and peak training/inference memory, per run.

:func:`run_memory` is called by :func:`mpbench.suite.runner.execute_run` next to the run's
speed measurement (and apart from it: memory is measured in its own steps, see
:mod:`mpbench.bench.memory`). Runs that finished before it existed get it from
:mod:`mpbench.suite.backfill`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from mpbench.bench.memory import (MEMORY_FIELDS, MemoryJob, format_mb, measure_memory,
                                  memory_enabled)

__all__ = ["run_memory", "MEMORY_COLUMNS", "memory_timeout", "run_geometry", "count_activations_m",
           "measure_quietly"]

#: the result columns this module fills; ``None`` (in a report: "not measured") otherwise
MEMORY_COLUMNS = ("activations_m",) + MEMORY_FIELDS
#: the longest a measurement may take: a fork-server start (~10 s on a loaded 2-core
#: machine) plus two training steps and two inference batches, with room to spare
MEM_TIMEOUT_S = 120.0
MEM_TIMEOUT_MAX_S = 900.0


def memory_timeout(step_s: float | None) -> float:
    """Seconds a run's measurement may take: :data:`MEM_TIMEOUT_S` plus ten of its own
    training steps, at most :data:`MEM_TIMEOUT_MAX_S`."""
    return min(MEM_TIMEOUT_MAX_S, MEM_TIMEOUT_S + 10 * (step_s or 0.0))


def count_activations_m(model: str, args: dict, input_size, num_classes: int,
                 note: Callable[[str], None]) -> float | None:
    from mpbench.complexity.activations import activations_model

    try:
        return activations_model(model, args, input_size=input_size,
                                 num_classes=num_classes) / 1e6
    except Exception as exc:  # a count must never cost the run
        note(f"activations not counted ({type(exc).__name__}: {exc})")
        return None


def measure_quietly(job: MemoryJob, device: torch.device, timeout_s: float,
             note: Callable[[str], None]) -> dict:
    """:func:`measure_memory` with every RNG restored and failures turned into a note."""
    from mpbench.training.trainer import rng_state, set_rng_state

    state = rng_state()
    try:
        return measure_memory(job, device, timeout_s=timeout_s)
    except Exception as exc:  # out of memory, killed, timed out: the run is kept
        note(f"memory not measured ({type(exc).__name__}: {exc})")
        return {}
    finally:
        set_rng_state(state)


def run_geometry(data, recipe) -> tuple[int, int, int]:
    """The shape of one training image as the run's model sees it (a recipe ``input_size``
    resizes batches on the device)."""
    c, h, w = data.image_size
    size = getattr(recipe, "input_size", None)
    return (c, size, size) if size else (c, h, w)


def run_memory(plan, suite, data, device: torch.device, res, note: Callable[[str], None],
               source: str | None = None) -> dict:
    """The :data:`MEMORY_COLUMNS` of a finished run: activations at batch 1 and the peaks at
    the run's (per-rank) batch size on its device. Under torchrun only rank 0 measures.
    ``MPBENCH_MEMORY=off`` skips the peaks (activations are still counted)."""
    from mpbench.training.distributed import is_main, shard_batch_size

    out = dict.fromkeys(MEMORY_COLUMNS)
    if not is_main():
        return out
    input_size = run_geometry(data, suite.recipe)
    classes = int(plan.args.get("num_classes", data.num_classes))
    out["activations_m"] = count_activations_m(plan.model, plan.args, input_size, classes, note)
    if not memory_enabled():
        note("memory not measured (MPBENCH_MEMORY=off); fill it in with "
             "`mpbench bench --memory-of RUNS_DIR`")
        return out
    epoch_s = sorted(h["epoch_time_s"] for h in res.history) if res is not None else []
    steps = max(1, len(data.train_y) // suite.recipe.batch_size)
    step_s = epoch_s[len(epoch_s) // 2] / steps if epoch_s else None
    job = MemoryJob(plan.model, dict(plan.args), shard_batch_size(suite.recipe.batch_size),
                    input_size, classes, suite.recipe.amp, suite.recipe.channels_last,
                    tuple(suite.plugins), str(Path(source).resolve()) if source else None)
    mem = measure_quietly(job, device, memory_timeout(step_s), note)
    if mem:
        out.update({k: mem.get(k) for k in mem if k not in ("mem_time_s",)})
        note(f"memory: train {format_mb(mem['train_peak_mem_mb'])}, infer "
             f"{format_mb(mem['infer_peak_mem_mb'])} at batch {job.batch_size} "
             f"({mem['mem_method']}, {mem['mem_time_s']:.1f}s)")
    return out
