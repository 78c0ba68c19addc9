"""A run's curves in TensorBoard and MLflow while it trains (the suite's ``tracking:`` section).

:class:`RunTracker` is a training callback (:mod:`mpbench.training.callbacks`) that the runner
builds on rank 0 only: through its hooks it sees every step's loss and learning rate, and the
runner hands it every epoch's metrics after ``metrics.json`` is written. A tracker is a convenience, never a
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
    """Fans a run's steps and epochs out to its trackers, switching off any that fails.

    Per-step points come through the callback hooks alone (the trainer loop knows nothing of
    tracking): ``on_loaders`` wraps the training loader to see each batch's labels and step
    number, ``on_epoch_start`` puts a forward hook on the model (the batch's logits) and a
    step hook on the optimizer, which takes the step's learning rate and the batch's loss
    (the trainer's own ``loss_fn`` on the logits the step trained on, without gradients; under
    DDP rank 0's shard). Epochs come from the runner, after ``metrics.json`` is written
    (:meth:`log_epoch`)."""

    def __init__(self, trackers: list, note: Callable[[str], None], out_hint: str = "OUT",
                 label_smoothing: float = 0.0):
        self.trackers, self.note, self.out_hint = list(trackers), note, out_hint
        self.label_smoothing = float(label_smoothing)
        self.steps: list[tuple[int, torch.Tensor, float]] = []
        self.batch: tuple[int, torch.Tensor] | None = None  # (step, labels) being trained on
        self.logits = None
        self.hooked: set[int] = set()  # ids of the optimizers already hooked
        self.model = None
        self.handles: list = []  # the hooks, removed when the trackers close

    def wants_steps(self) -> bool:
        return any(hasattr(t, "log_steps") for t in self.trackers)

    def guard(self, tracker, what: str, fn: Callable[[], object]) -> None:
        try:
            fn()
        except Exception as exc:  # a tracker never fails the run: one line, then it is off
            self.drop(tracker, what, exc)

    def drop(self, tracker, what: str, exc: BaseException) -> None:
        self.trackers = [t for t in self.trackers if t is not tracker]
        self.note(warning(tracker.name, what, exc, self.out_hint))

    def on_loaders(self, train_loader, eval_loader):
        if not self.wants_steps():
            return train_loader, eval_loader
        return StepLabels(train_loader, self), eval_loader

    def on_epoch_start(self, model, optimizer, epoch) -> None:
        if not self.wants_steps() or id(optimizer) in self.hooked:
            return
        self.hooked.add(id(optimizer))
        self.model = model
        self.handles += [model.register_forward_hook(self.keep_logits),
                         optimizer.register_step_post_hook(self.after_step)]

    def keep_logits(self, module, inputs, output) -> None:
        if self.batch is not None and self.logits is None:  # a training batch's forward
            self.logits = output

    def after_step(self, optimizer, args, kwargs) -> None:
        if self.batch is None or self.logits is None or not self.wants_steps():
            self.batch = self.logits = None
            return
        (step, y), logits = self.batch, self.logits
        self.batch = self.logits = None
        try:
            from mpbench.training.trainer import loss_fn
            with torch.no_grad():
                loss = loss_fn(self.model, logits, y, self.label_smoothing).detach()
        except Exception as exc:  # never the run's problem
            for t in [t for t in self.trackers if hasattr(t, "log_steps")]:
                self.drop(t, "computing a step's loss", exc)
            return
        self.steps.append((step, loss, float(optimizer.param_groups[0]["lr"])))
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

    def log_epoch(self, metrics: dict) -> None:
        """One epoch's metrics (the runner calls this after writing ``metrics.json``)."""
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
        self.close_all()

    def close_all(self) -> None:
        self.trackers = []
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def end_quietly(self) -> None:
        """Close the trackers without changing the run's state (a replay of an unfinished run)."""
        self.flush_steps()
        for t in list(self.trackers):
            self.guard(t, "closing", lambda t=t: t.close())
        self.close_all()

    def end(self, status: str, reason: str | None = None) -> None:
        """The attempt stopped without a result (interrupted, diverged, out of memory); the
        steps it trained are logged first (after SIGTERM the resume starts after them)."""
        try:
            self.flush_steps()
        except Exception:  # e.g. the device is gone (out of memory): the steps are lost
            self.steps = []
        for t in list(self.trackers):
            self.guard(t, "closing", lambda t=t: t.end(status, reason))
        self.close_all()


class StepLabels:
    """The training loader, telling its :class:`RunTracker` each batch's step and labels."""

    def __init__(self, loader, tracker: RunTracker):
        self.loader, self.tracker = loader, tracker
        self.epoch, self.first = 0, 0

    def __getattr__(self, name):  # device, epoch_skipped, skipped_files, ... of the loader
        return getattr(self.loader, name)

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int, first: int = 0) -> None:
        self.epoch, self.first = int(epoch), int(first)
        if first:
            self.loader.set_epoch(epoch, first)
        else:
            self.loader.set_epoch(epoch)

    def __iter__(self):
        n = len(self.loader)
        for i, (x, y) in enumerate(self.loader, start=self.first):
            self.tracker.batch, self.tracker.logits = (self.epoch * n + i, y), None
            yield x, y
        self.tracker.batch = self.tracker.logits = None


def warning(name: str, what: str, exc: BaseException, out_hint: str) -> str:
    detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return (f"tracking: {name} {what} failed ({type(exc).__name__}: {detail}); training goes on "
            f"without it; replay later with `mpbench sync-tracking {out_hint}`")


def open_tracker(tracking: TrackingConfig, suite_name: str, run_dir: Path, config: dict,
                 note: Callable[[str], None], *, attempt: int | None = 0, live: bool = True,
                 fresh: bool = False, label_smoothing: float = 0.0,
                 out_hint: str = "OUT") -> RunTracker:
    """The trackers ``tracking`` asks for, each opened under a guard (one that cannot start
    is reported and left out). ``attempt``: the divergence retry this is (a retry is a new
    MLflow run, tagged); None continues whatever run the run directory names (a replay).
    ``live``: a training process (marks the MLflow run running and counts resumes).
    ``fresh``: training starts from scratch, so event files of an earlier attempt are moved
    aside (their steps would hide the new ones)."""
    run = RunTracker([], note, out_hint, label_smoothing)
    opening = []
    if tracking.tensorboard:
        opening.append(("tensorboard", lambda: TensorBoardTracker(run_dir, config, fresh=fresh)))
    if tracking.mlflow is not None:
        def start_mlflow():
            return MlflowTracker(tracking.mlflow, tracking.mlflow_experiment or suite_name,
                                 run_dir, config, attempt=attempt, live=live, fresh=fresh)
        opening.append(("mlflow", start_mlflow))
    for name, start in opening:
        try:
            run.trackers.append(start())
        except Exception as exc:
            note(warning(name, "start", exc, out_hint))
    return run
