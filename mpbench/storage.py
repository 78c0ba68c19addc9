"""Crash-safe file writes: temp file in the same folder, fsync, rename.

A reader (or a resumed run) sees either the old file or the new one, never half of one. A
process killed mid-write leaves only a hidden ``.<name>.*.tmp`` file, which
:func:`remove_stale_temps` clears once the folder's owner holds its lock.
"""
from __future__ import annotations

import errno
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def previous(path: Path) -> Path:
    """Where :func:`atomic_write_bytes` keeps the file it replaced (``keep_previous=True``)."""
    return path.with_name(path.name + ".prev")


def _link_previous(path: Path) -> None:
    """Make ``<path>.prev`` the current file without a moment where ``path`` is missing.

    A hard link gives the current file a second name; the rename that follows replaces only
    the main name. Where hard links are not supported, fall back to a rename.
    """
    link = path.with_name(f".{path.name}.prev.tmp")
    link.unlink(missing_ok=True)
    try:
        os.link(path, link)
        os.replace(link, previous(path))
    except OSError:
        link.unlink(missing_ok=True)
        os.replace(path, previous(path))


def atomic_write_bytes(path: str | Path, data: bytes, *, durable: bool = True,
                       keep_previous: bool = False) -> None:
    """Write ``path`` whole or not at all; ``keep_previous`` keeps the old one as ``.prev``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        if keep_previous and path.exists():
            _link_previous(path)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # a failed write() names no file; say which one
        raise
    if durable:
        _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str, *, durable: bool = True) -> None:
    atomic_write_bytes(path, text.encode(), durable=durable)


def atomic_write_json(path: str | Path, obj: Any, *, durable: bool = True) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n",
                      durable=durable)


def atomic_torch_save(path: str | Path, obj: Any, *, keep_previous: bool = False) -> None:
    import io
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue(), keep_previous=keep_previous)


def verify_torch_file(path: str | Path) -> None:
    """Raise ValueError if a ``torch.save`` file is truncated or any byte of it changed.

    ``torch.save`` writes a zip archive with a CRC-32 per member, but ``torch.load`` does not
    check them (a flipped bit in a weight loads silently); :meth:`zipfile.ZipFile.testzip`
    reads every member and does.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"not a complete torch file ({exc})") from exc
    if bad is not None:
        raise ValueError(f"checksum mismatch in member {bad}")


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the temp files of interrupted writes in ``folder``; call it holding the lock
    of everything written there, so no live writer's temp file can be among them."""
    stale = [p for p in Path(folder).glob(".*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())
