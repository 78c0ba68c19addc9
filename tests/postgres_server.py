"""A real, throw-away PostgreSQL server for the tuning tests (initdb + pg_ctl on a free port).

PostgreSQL refuses to run as root: as root, the cluster belongs to the ``postgres`` user that
the distribution's package creates, in a directory of its own under the temp dir. Outside CI
(``CI`` unset) a machine without PostgreSQL skips; in CI it fails.
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _unavailable(why: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"PostgreSQL is required in CI: {why} (.ci/run installs it)")
    pytest.skip(f"PostgreSQL not available here: {why}")


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server, create a database, yield its SQLAlchemy URL; stop and delete it after."""
    bins = _bin_dir()
    if bins is None:
        _unavailable("no initdb (install the postgresql package)")
    as_root = os.geteuid() == 0
    prefix: list[str] = []
    if as_root:
        try:
            import pwd
            owner = pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("running as root and there is no postgres user to run the server")
        prefix = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="mpbench-pg-"))
    if as_root:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    data, port = root / "data", _free_port()
    run = lambda *cmd: subprocess.run([*prefix, *map(str, cmd)], check=True,  # noqa: E731
                                      capture_output=True, text=True, timeout=120)
    try:
        run(bins / "initdb", "-D", data, "-A", "trust", "-U", "mpbench", "--no-sync")
        run(bins / "pg_ctl", "start", "-w", "-D", data, "-l", root / "server.log", "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off")
        run(bins / "createdb", "-h", "127.0.0.1", "-p", port, "-U", "mpbench", "mpbench_test")
        yield f"postgresql://mpbench@127.0.0.1:{port}/mpbench_test"
    except subprocess.CalledProcessError as exc:
        log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
        raise RuntimeError(f"{exc.cmd} failed: {exc.stderr}\n{log}") from None
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*prefix, str(bins / "pg_ctl"), "stop", "-D", str(data), "-m",
                            "immediate"], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
