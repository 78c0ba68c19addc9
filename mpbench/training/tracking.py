"""A run's curves in TensorBoard and MLflow while it trains (the suite's ``tracking:`` section).

:class:`RunTracker` is a training callback (:mod:`mpbench.training.callbacks`) that the runner
builds on rank 0 only: the trainer hands it every step's loss and learning rate and every
epoch's metrics (after ``metrics.json`` is written). A tracker is a convenience, never a
dependency of the run: every call is guarded, and the first failure writes one warning line
to the run's log and switches that tracker off for the rest of the run, so a dead server costs
one short timeout (:func:`mpbench.training.mlflow_tracker.short_timeouts`), never the run.
What a tracker missed is still in ``metrics.json``; ``mpbench sync-tracking`` replays it.
Both ways log only the epochs (and steps) a tracker does not have yet, so a resumed run or a
second replay never logs anything twice.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable

import torch

from mpbench.config import SuiteError, TrackingConfig
from mpbench.training.callbacks import Callback
from mpbench.training.mlflow_tracker import MlflowTracker
from mpbench.training.tensorboard_tracker import TensorBoardTracker

__all__ = ["RunTracker", "check_tracking", "open_tracker", "STEP_FLUSH"]

#: per-step losses are read off the device this many at a time (one sync per read)
STEP_FLUSH = 50
PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow"}


def check_tracking(tracking: TrackingConfig, source: str) -> None:
    """One-line :class:`SuiteError` (exit 2) if ``tracking:`` asks for a missing package."""
    wanted = [f for f, on in (("tensorboard", tracking.tensorboard),
                              ("mlflow", tracking.mlflow is not None)) if on]
    for field in wanted:
        if importlib.util.find_spec(PACKAGES[field]) is None:
            raise SuiteError(f"{source}: tracking.{field}: needs the {PACKAGES[field]} package, "
                             f"which is not installed (pip install 'mpbench[tracking]')")


class RunTracker(Callback):
    """Fans a run's steps and epochs out to its trackers, switching off any that fails."""

    def __init__(self, trackers: list, note: Callable[[str], None], out_hint: str = "OUT"):
        self.trackers, self.note, self.out_hint = list(trackers), note, out_hint
        self.steps: list[tuple[int, torch.Tensor, float]] = []

    def guard(self, tracker, what: str, fn: Callable[[], object]) -> None:
        try:
            fn()
        except Exception as exc:  # a tracker never fails the run: one line, then it is off
            self.trackers = [t for t in self.trackers if t is not tracker]
            self.note(warning(tracker.name, what, exc, self.out_hint))

    def on_step(self, step: int, loss: torch.Tensor, lr: float) -> None:
        if any(t.name == "tensorboard" for t in self.trackers):
            self.steps.append((step, loss, lr))
            if len(self.steps) >= STEP_FLUSH:
                self.flush_steps()

    def flush_steps(self) -> None:
        if not self.steps:
            return
        losses = torch.stack([s[1].float() for s in self.steps]).cpu().tolist()  # one sync
        steps = [(s[0], v, s[2]) for s, v in zip(self.steps, losses)]
        self.steps = []
        for t in [t for t in self.trackers if hasattr(t, "log_steps")]:
            self.guard(t, "logging steps", lambda t=t: t.log_steps(steps))

    def on_epoch_end(self, metrics: dict) -> None:
        self.flush_steps()
        for t in list(self.trackers):
            self.guard(t, f"logging epoch {metrics['epoch']}", lambda t=t: t.log_epoch(metrics))

    def catch_up(self, history: list[dict]) -> None:
        """Log the stored epochs a tracker lacks (a resume after a kill, or a replay)."""
        for metrics in history:
            for t in list(self.trackers):
                self.guard(t, f"logging epoch {metrics['epoch']}", lambda t=t: t.log_epoch(metrics))

    def finish(self, row: dict, run_dir: Path) -> None:
        self.flush_steps()
        for t in list(self.trackers):
            self.guard(t, "finishing", lambda t=t: t.finish(row, Path(run_dir)))
        self.trackers = []

    def end_quietly(self) -> None:
        """Close the trackers without changing the run's state (a replay of an unfinished run)."""
        self.flush_steps()
        for t in list(self.trackers):
            self.guard(t, "closing", lambda t=t: t.close())
        self.trackers = []

    def end(self, status: str, reason: str | None = None) -> None:
        """The attempt stopped without a result (interrupted, diverged, out of memory)."""
        self.steps = []
        for t in list(self.trackers):
            self.guard(t, "closing", lambda t=t: t.end(status, reason))
        self.trackers = []


def warning(name: str, what: str, exc: BaseException, out_hint: str) -> str:
    detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return (f"tracking: {name} {what} failed ({type(exc).__name__}: {detail}); training goes on "
            f"without it; replay later with `mpbench sync-tracking {out_hint}`")


def open_tracker(tracking: TrackingConfig, suite_name: str, run_dir: Path, config: dict,
                 note: Callable[[str], None], *, attempt: int | None = 0, live: bool = True,
                 out_hint: str = "OUT") -> RunTracker:
    """The trackers ``tracking`` asks for, each opened under a guard (one that cannot start
    is reported and left out). ``attempt``: the divergence retry this is (a retry is a new
    MLflow run, tagged); None continues whatever run the run directory names (a replay).
    ``live``: a training process (marks the MLflow run running and counts resumes)."""
    run = RunTracker([], note, out_hint)
    opening = []
    if tracking.tensorboard:
        opening.append(("tensorboard", lambda: TensorBoardTracker(run_dir, config)))
    if tracking.mlflow is not None:
        def start_mlflow():
            return MlflowTracker(tracking.mlflow, tracking.mlflow_experiment or suite_name,
                                 run_dir, config, attempt=attempt, live=live)
        opening.append(("mlflow", start_mlflow))
    for name, start in opening:
        try:
            run.trackers.append(start())
        except Exception as exc:
            note(warning(name, "start", exc, out_hint))
    return run
