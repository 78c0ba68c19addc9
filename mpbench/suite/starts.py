"""Where a suite's runs start from: the ``init:`` of a model entry, checked at planning,
applied to a fresh run's model and recorded beside its result.

The loading itself (sources, key mapping, upcycling) is :mod:`mpbench.training.init`; this
module only connects it to suite entries and run directories.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch.nn as nn

from mpbench.config import SuiteError
from mpbench.errors import UserError
from mpbench.registry import create_model
from mpbench.storage import atomic_write_json
from mpbench.training.distributed import is_main
from mpbench.training.init import INIT_FILE, apply_init, summary, upcycle_noise

__all__ = ["spec_for", "init_config", "check_init", "init_run", "init_result_fields"]


def spec_for(suite, plan):
    """The suite's model entry a plan came from (labels are unique within a suite), or None."""
    return next((s for s in suite.models if s.display == plan.label), None)


def init_config(spec) -> dict:
    """What goes into a run's config.json about its start (empty from scratch)."""
    if spec is None or spec.init is None:
        return {}
    noise = upcycle_noise(spec.upcycle_noise) if spec.init_mode == "upcycle" else 0.0
    return {"init": {"source": spec.init, "mode": spec.init_mode, "strict": spec.init_strict,
                     "upcycle_noise": noise}}


def check_init(spec, args: dict, field: str) -> None:
    """Plan-time check: build the model and initialise it once; any problem is a SuiteError
    naming ``field`` (``suite.yaml: models[i].init``), before anything is written."""
    try:
        model = create_model(spec.name, **args)
        apply_init(model, spec.init, mode=spec.init_mode, strict=spec.init_strict,
                   noise=spec.upcycle_noise)
    except UserError as exc:
        raise SuiteError(f"{field}: {exc}") from None
    if (spec.init_mode == "upcycle" and upcycle_noise(spec.upcycle_noise) == 0
            and getattr(model, "route", "none") != "none"):
        base = field[:-len(".init")] if field.endswith(".init") else field
        raise SuiteError(f"{base}.upcycle_noise: 0 leaves a routed model's paths identical, so "
                         f"its gates never move (use > 0, or route: none)")


def init_run(model: nn.Module, spec, seed: int, run_dir: Path,
             note: Callable[[str], None]) -> dict | None:
    """Initialise a fresh run's model from ``spec.init`` (if any), log the report and keep it
    as ``init.json`` (rank 0 only, under torchrun). None when the entry has no init."""
    if spec is None or spec.init is None:
        return None
    report = apply_init(model, spec.init, mode=spec.init_mode, strict=spec.init_strict,
                        noise=spec.upcycle_noise, seed=seed)
    if is_main():
        atomic_write_json(run_dir / INIT_FILE, report)
    note(summary(report))
    return report


def init_result_fields(run_dir: Path) -> dict:
    """Columns for the result row (lists as ';'-joined keys): what the run started from."""
    path = run_dir / INIT_FILE
    if not path.exists():
        return {}
    r = json.loads(path.read_text())
    return {"init": r["source"], "init_mode": r["mode"], "init_sha256": r.get("sha256"),
            "init_head": r["head"], "init_loaded": r["loaded"],
            "init_missing": ";".join(r["missing"]), "init_unexpected": ";".join(r["unexpected"]),
            "init_mismatched": ";".join(r["mismatched"])}
