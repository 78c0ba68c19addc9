"""``mpbench sync-tracking``: replay stored runs into TensorBoard / MLflow after the fact.

For runs trained while a tracker was down, and for runs made before ``tracking:`` was on:
each run directory's ``metrics.json`` (and ``result.json`` once finished) goes through the
same trackers a live run uses (:func:`mpbench.training.tracking.open_tracker`), which log
only what they do not have yet, so a second replay changes nothing. Runs that a live process
is training are left alone.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from mpbench.config import Suite, TrackingConfig
from mpbench.errors import UserError
from mpbench.storage import read_json
from mpbench.suite.runner import is_claimed
from mpbench.training.tracking import open_tracker

__all__ = ["sync_tracking", "tracking_of"]


def tracking_of(out: Path, tensorboard: bool | None = None, mlflow: str | None = None,
                experiment: str | None = None) -> tuple[TrackingConfig, str]:
    """The tracking to replay into: the suite's (``out/suite.json``), with these overrides."""
    if not (out / "suite.json").exists():
        raise UserError(f"{out}: no suite.json here; is this an `mpbench run` output directory?")
    suite = Suite.model_validate(read_json(out / "suite.json"))
    base = suite.tracking
    fields = {"tensorboard": base.tensorboard if tensorboard is None else tensorboard,
              "mlflow": base.mlflow if mlflow is None else mlflow,
              "mlflow_experiment": experiment if experiment is not None else base.mlflow_experiment}
    try:
        tracking = TrackingConfig(**fields)
    except ValueError as exc:
        from pydantic import ValidationError
        msg = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise UserError(f"--mlflow: {msg.removeprefix('Value error, ')}") from None
    if not tracking.tensorboard and tracking.mlflow is None:
        raise UserError(f"{out}: nothing to sync to: the suite has no tracking: section; give "
                        f"--tensorboard and/or --mlflow URI")
    return tracking, suite.name


def sync_tracking(out: str | Path, tracking: TrackingConfig, suite_name: str,
                  echo: Callable[[str], None] = print) -> dict:
    """Replay every run directory of ``out``; returns counts (synced, busy, empty, failed)."""
    out = Path(out)
    counts = {"synced": 0, "busy": 0, "empty": 0, "failed": 0}
    for run_dir in sorted(p for p in (out / "runs").glob("*") if p.is_dir()):
        if not (run_dir / "config.json").exists() or not (run_dir / "metrics.json").exists():
            counts["empty"] += 1
            continue
        if is_claimed(run_dir):
            echo(f"{run_dir.name}: being trained; its own process logs it")
            counts["busy"] += 1
            continue
        failures: list[str] = []
        tracker = open_tracker(tracking, suite_name, run_dir, read_json(run_dir / "config.json"),
                               failures.append, attempt=None, live=False, out_hint=str(out))
        history = read_json(run_dir / "metrics.json")
        tracker.catch_up(history)
        if (run_dir / "result.json").exists():
            tracker.finish(read_json(run_dir / "result.json"), run_dir)
        else:
            tracker.end_quietly()
        for line in failures:
            echo(f"{run_dir.name}: {line}")
        counts["failed" if failures else "synced"] += 1
        if not failures:
            echo(f"{run_dir.name}: {len(history)} epoch(s)"
                 + (", finished" if (run_dir / "result.json").exists() else ", unfinished"))
    return counts
