"""TensorBoard event files of one run (:mod:`mpbench.training.tracking`), written on rank 0.

On a resume the event files already there are read back first, and only newer steps and
epochs are written, so a killed and resumed run shows each step once; an attempt that starts
from scratch moves earlier event files aside (:func:`set_aside`).
"""
from __future__ import annotations

from pathlib import Path

from mpbench.training.tracked_metrics import epoch_scalars

__all__ = ["TensorBoardTracker", "logged_events", "model_text"]


class TensorBoardTracker:
    """Event files under ``<run_dir>/tensorboard/``: ``step/loss``, ``step/lr`` per optimizer
    step, ``epoch/<metric>`` per epoch (the epoch as step), the model's MACs/params as text."""

    name = "tensorboard"

    def __init__(self, run_dir: Path, config: dict, fresh: bool = False):
        from torch.utils.tensorboard import SummaryWriter

        self.logdir = Path(run_dir) / "tensorboard"
        if fresh:
            set_aside(self.logdir)
        self.epochs, self.last_step, has_text = logged_events(self.logdir)
        self.writer = SummaryWriter(str(self.logdir), flush_secs=30)
        if not has_text:
            self.writer.add_text("model", model_text(config), 0)

    def log_steps(self, steps: list[tuple[int, float, float]]) -> None:
        for step, loss, lr in steps:
            if step > self.last_step:
                self.writer.add_scalar("step/loss", loss, step)
                self.writer.add_scalar("step/lr", lr, step)
                self.last_step = step

    def log_epoch(self, metrics: dict) -> None:
        if metrics["epoch"] in self.epochs:
            return
        for name, value in epoch_scalars(metrics).items():
            self.writer.add_scalar(f"epoch/{name}", value, metrics["epoch"])
        self.epochs.add(metrics["epoch"])
        self.writer.flush()

    def finish(self, row: dict, run_dir: Path) -> None:
        self.close()

    def end(self, status: str, reason: str | None = None) -> None:
        self.close()

    def close(self) -> None:
        self.writer.close()


def set_aside(logdir: Path) -> None:
    """Move event files of an attempt that training no longer continues (a divergence retry,
    a lost checkpoint) into ``logdir/previous-<n>/``: TensorBoard shows them as their own
    run, and the new attempt's steps are not mistaken for ones already logged."""
    old = sorted(p for p in logdir.glob("events.out.tfevents.*") if p.is_file()) \
        if logdir.is_dir() else []
    if not old:
        return
    n = 1
    while (logdir / f"previous-{n}").exists():
        n += 1
    (logdir / f"previous-{n}").mkdir()
    for p in old:
        p.rename(logdir / f"previous-{n}" / p.name)


def logged_events(logdir: Path) -> tuple[set[int], int, bool]:
    """(epochs, last optimizer step, model text written?) already in ``logdir``'s event files."""
    if not logdir.is_dir() or not any(logdir.iterdir()):
        return set(), -1, False
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    epochs = {int(e.step) for e in acc.Scalars("epoch/train_loss")} \
        if "epoch/train_loss" in tags["scalars"] else set()
    steps = [e.step for e in acc.Scalars("step/loss")] if "step/loss" in tags["scalars"] else []
    return epochs, max(steps, default=-1), any(t.startswith("model") for t in tags["tensors"])


def model_text(config: dict) -> str:
    gmacs, params = config.get("gmacs"), config.get("params")
    parts = [f"**{config.get('label') or config.get('model')}** ({config.get('model')})"]
    if gmacs is not None:
        parts.append(f"{gmacs:.4f} GMACs")
    if params is not None:
        parts.append(f"{params / 1e6:.3f}M params")
    if config.get("args"):
        parts.append("args " + ", ".join(f"{k}={v}" for k, v in config["args"].items()))
    return "; ".join(parts)
