"""When the trainer checkpoints inside an epoch: a clock and the stop signals.

:class:`CheckpointClock` says at a batch boundary whether a mid-epoch checkpoint is due:
every ``recipe.checkpoint_every_min`` minutes since the last one, when a stop signal arrived,
or (tests only) every ``MPBENCH_CHECKPOINT_EVERY_BATCHES`` batches. Under DDP the ranks
agree (one tiny all-reduce per batch): any rank's reason is every rank's.

:class:`StopSignals` turns SIGTERM and SIGUSR1 (SLURM's warning before pre-emption,
``#SBATCH --signal=USR1@120``) into a flag the loop reads at the next batch boundary; the
trainer then checkpoints and raises :class:`mpbench.errors.Interrupted`. A handler someone
else installed is left alone: under submitit (``mpbench run --launcher slurm``) SIGTERM
stays submitit's and its USR2 still checkpoints-and-requeues the job (which then resumes from
the last epoch or mid-epoch checkpoint). Only in the main thread; restored on exit.
"""
from __future__ import annotations

import os
import signal
import threading
import time

import torch

EVERY_BATCHES_ENV = "MPBENCH_CHECKPOINT_EVERY_BATCHES"
SIGNALS = ("SIGTERM", "SIGUSR1")


class CheckpointClock:
    def __init__(self, every_min: float):
        self.every_s = float(every_min) * 60
        self.every_batches = int(os.environ.get(EVERY_BATCHES_ENV) or 0)
        self.last = time.monotonic()

    def due(self, next_batch: int, stopping: bool) -> bool:
        want = (stopping or time.monotonic() - self.last >= self.every_s
                or (self.every_batches > 0 and next_batch % self.every_batches == 0))
        from mpbench.training import distributed as ddp
        if ddp.is_distributed():
            want = bool(ddp.all_reduce_sum(torch.tensor(float(want)))[0] > 0)
        return want

    def saved(self) -> None:
        self.last = time.monotonic()


class StopSignals:
    """``with StopSignals() as stop:`` ... ``stop.signum`` is None until a signal came."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        self.signum = signum

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for name in SIGNALS:
                sig = getattr(signal, name, None)
                if sig is not None and signal.getsignal(sig) in (signal.SIG_DFL, None):
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
