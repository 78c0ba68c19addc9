"""Run the ``mpbench`` CLI and hold it inside a training step until a signal has come.

    python tests/signal_inject.py MARKER N [mpbench arguments ...]

At the N-th training loss (N counts batches across epochs and runs) the process writes the
file MARKER and then waits, still inside that batch, until the file ``MARKER.sent`` exists
(at most 60 s): the test sends its signal in between, so the signal lands mid-epoch at a
known batch without any timing luck. Everything else is the real CLI.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import mpbench.training.trainer as trainer

MARKER, NTH = Path(sys.argv[1]), int(sys.argv[2])
real_loss_fn = trainer.loss_fn
calls = 0


def loss_fn(*args, **kwargs):
    global calls
    calls += 1
    if calls == NTH:
        MARKER.write_text("in batch\n")
        deadline = time.monotonic() + 60
        while not MARKER.with_name(MARKER.name + ".sent").exists() and time.monotonic() < deadline:
            time.sleep(0.01)  # the signal's Python handler runs in here
    return real_loss_fn(*args, **kwargs)


trainer.loss_fn = loss_fn

if __name__ == "__main__":
    from mpbench.cli import main
    sys.exit(main(sys.argv[3:]))
