"""Run the ``mpbench`` CLI with one injected fault at the N-th atomic write of one file.

    python tests/fault_inject.py NAME N MODE [mpbench arguments ...]

NAME is a file name (``checkpoint.pt``, ``result.json``, ``results.csv``); the fault hits the
N-th call of :func:`mpbench.storage.atomic_write_bytes` for a file of that name. The real
write code runs; only ``os.fsync`` and ``os.replace`` are intercepted while it does, so the
files left behind are those a real crash at that point leaves:

- ``torn``: SIGKILL inside the write, the temp file holding half of the bytes;
- ``unrenamed``: SIGKILL with the temp file complete but not yet renamed over ``NAME``
  (for a checkpoint: after ``.prev`` was linked);
- ``renamed``: SIGKILL right after the rename, before anything else happens;
- ``enospc``: ``fsync`` fails with ENOSPC (a full disk), as it does on many file systems.
"""
from __future__ import annotations

import errno
import os
import signal
import sys
from pathlib import Path

import mpbench.storage as storage

NAME, NTH, MODE = sys.argv[1], int(sys.argv[2]), sys.argv[3]
MODES = ("torn", "unrenamed", "renamed", "enospc")
assert MODE in MODES, f"MODE must be one of {MODES}"

armed: dict = {"path": None}
calls = 0
real_write, real_fsync, real_replace = storage.atomic_write_bytes, os.fsync, os.replace


def _die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def fsync(fd: int) -> None:
    if armed["path"] is not None and MODE in ("torn", "enospc"):
        if MODE == "enospc":
            armed["path"] = None
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        os.ftruncate(fd, os.fstat(fd).st_size // 2)
        real_fsync(fd)
        _die()
    real_fsync(fd)


def replace(src, dst) -> None:
    if armed["path"] is not None and Path(dst) == armed["path"]:
        if MODE == "unrenamed":
            _die()
        real_replace(src, dst)
        if MODE == "renamed":
            _die()
        return
    real_replace(src, dst)


def atomic_write_bytes(path, data, **kw):
    global calls
    if Path(path).name == NAME:
        calls += 1
        if calls == NTH:
            armed["path"] = Path(path)
            try:
                return real_write(path, data, **kw)
            finally:
                armed["path"] = None
    return real_write(path, data, **kw)


os.fsync, os.replace = fsync, replace
storage.atomic_write_bytes = atomic_write_bytes

if __name__ == "__main__":
    from mpbench.cli import main
    sys.exit(main(sys.argv[4:]))
