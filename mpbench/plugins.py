"""User models from outside mpbench: suite plugins and the ``mpbench.models`` entry points.

A plugin is an ordinary Python module that calls :func:`mpbench.registry.register_model` at
import time; importing it is all mpbench does. Two ways to get one imported:

**Suite plugins** (``plugins:`` in a suite). Each entry is either

- a *path to a ``.py`` file* (it ends in ``.py``): relative paths are taken from the suite
  file's directory, so a suite and its models can travel together; or
- a *module name* (``my_models`` or ``my_pkg.models``), imported with the usual import system.
  Because the ``mpbench`` command does not put the current directory on ``sys.path`` (Python
  only does that for ``python -m``), the suite's directory and the current directory are
  appended to ``sys.path`` (after everything installed, so they never shadow a package).

They are imported only when a suite names them, in the order given, once per process. A
failure is a one-line :class:`~mpbench.errors.UserError`:
``suites/x.yaml: plugins[0]: cannot import 'my_models': No module named 'my_models'``.

**Entry points** (group ``mpbench.models``). An installed package declares
``[project.entry-points."mpbench.models"] my_models = "my_pkg.models"``; installing the package
is the opt-in, so :func:`load_entry_points` imports every such module once, when the registry
is first used (every command then sees those models, as with pytest plugins). A broken entry
point must not break unrelated runs, so it is reported as a warning naming it and skipped.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Sequence

from mpbench.errors import UserError

__all__ = ["load_plugins", "load_run_plugins", "load_entry_points", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "mpbench.models"

_entry_points_loaded = False


def load_plugins(names: Sequence[str], source: str = "<suite>",
                 base_dir: str | Path | None = None) -> list[ModuleType]:
    """Import each plugin named by a suite; return the modules in order.

    ``source`` is the suite file (used in messages, and its directory resolves relative
    ``.py`` paths unless ``base_dir`` is given).
    """
    if base_dir is None:
        base_dir = Path(source).parent if not source.startswith("<") else Path.cwd()
    base_dir = Path(base_dir)
    modules = []
    for i, name in enumerate(names):
        try:
            if name.endswith(".py"):
                module = _import_file(base_dir / name)
            else:
                _extend_sys_path(base_dir)
                module = importlib.import_module(name)
        except Exception as exc:  # the plugin's own errors too: report, do not crash
            raise UserError(f"{source}: plugins[{i}]: cannot import '{name}': "
                            f"{_one_line(exc)}") from exc
        modules.append(module)
    return modules


def load_run_plugins(config: dict) -> None:
    """The plugin modules a stored run's ``config.json`` was trained with, so that its model
    can be rebuilt (reports, analysis, upcycling from a run directory)."""
    if config.get("plugins"):
        load_plugins(config["plugins"], config.get("suite_file") or "<run config>")


def load_entry_points(group: str = ENTRY_POINT_GROUP) -> list[str]:
    """Import every module registered under ``group`` (once); return the names imported."""
    global _entry_points_loaded
    if _entry_points_loaded and group == ENTRY_POINT_GROUP:
        return []
    if group == ENTRY_POINT_GROUP:
        _entry_points_loaded = True
    loaded = []
    for ep in importlib.metadata.entry_points(group=group):
        try:
            ep.load()
        except Exception as exc:
            warnings.warn(f"entry point '{ep.name} = {ep.value}' ({group}) failed to import "
                          f"and was skipped: {_one_line(exc)}", RuntimeWarning, stacklevel=2)
            continue
        loaded.append(ep.name)
    return loaded


def _import_file(path: Path) -> ModuleType:
    """Import a .py file under a name derived from its resolved path (once per process)."""
    path = path.expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]  # stable across processes
    name = f"mpbench_plugin_{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before exec: dataclasses and pickling look modules up
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _extend_sys_path(base_dir: Path) -> None:
    for d in (str(base_dir.resolve()), os.getcwd()):
        if d not in sys.path:
            sys.path.append(d)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, (ModuleNotFoundError, FileNotFoundError)) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
