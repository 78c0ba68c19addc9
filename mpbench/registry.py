"""Model registry: the one piece of global state in mpbench.

Each variant is a small builder function registered by decorator, as in timm. The entry
records the variant's family, its default arguments and the *complexity knob* that FLOP
matching turns to land a model on a budget. Every registered builder is also registered
with timm, so ``timm.create_model("cifar_resnet56")`` works too.
"""
from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import torch.nn as nn

from mpbench.errors import UserError

__all__ = [
    "Knob", "ModelEntry", "UnknownModelError", "register_model", "create_model",
    "get_entry", "list_models", "list_families",
]

# Keyword arguments timm.create_model passes to every entrypoint; mpbench builders ignore them.
_TIMM_ONLY_KWARGS = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


@dataclass(frozen=True)
class Knob:
    """The argument FLOP matching searches to put a model on a budget.

    ``kind='int'``: an integer argument (width, base width, per-path width); candidate values
    are multiples of ``step`` between ``low`` and ``high``. ``step`` may be a function of the
    model's other arguments (e.g. per-path width must divide by ``paths``).
    ``kind='float'``: a continuous multiplier in [low, high].
    ``kind='choice'``: a discrete argument such as depth; candidates are ``values``.
    ``adjust`` (choice knobs): a float argument (e.g. the base ``width``) that matching
    fine-tunes after taking the nearest choice, within ``adjust_range`` times its configured
    value, so that a depth-matched model still lands within tolerance (see
    :mod:`mpbench.complexity.matching`).
    MACs must grow monotonically with the knob (and with ``adjust``): matching relies on it.
    """

    name: str
    kind: Literal["int", "float", "choice"] = "int"
    low: float = 1
    high: float = 4096
    step: int | Callable[[dict], int] = 1
    values: tuple = ()
    adjust: str | None = None
    adjust_range: tuple[float, float] = (0.8, 1.25)

    def step_for(self, args: dict) -> int:
        return self.step(args) if callable(self.step) else int(self.step)

    def describe(self) -> str:
        if self.kind == "choice":
            lo, hi = self.adjust_range
            extra = (f", then {self.adjust} x{lo:g}..x{hi:g}" if self.adjust else "")
            return f"{self.name} in {list(self.values)}{extra}"
        step = "" if self.kind == "float" else (
            ", step depends on args" if callable(self.step) else f", step {self.step}")
        return f"{self.name} ({self.kind}, {self.low:g}..{self.high:g}{step})"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    fn: Callable[..., nn.Module]
    defaults: dict = field(default_factory=dict)
    knob: Knob | None = None
    doc: str = ""

    def args(self, **overrides) -> dict:
        """Defaults merged with overrides: the full argument set that defines the model."""
        return {**self.defaults, **overrides}

    def build(self, **overrides) -> nn.Module:
        return self.fn(**self.args(**overrides))


class UnknownModelError(UserError, KeyError):
    """Raised for a name nobody registered; its message lists the closest names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    fn: Callable | None = None,
    *,
    family: str,
    knob: Knob | None = None,
    name: str | None = None,
    timm: bool = True,
    **defaults: Any,
):
    """Register a model builder. Use as ``@register_model(family=..., knob=..., **defaults)``.

    ``defaults`` are the variant's arguments; ``create_model(name, **overrides)`` calls the
    builder with defaults updated by overrides. With ``timm=True`` the variant is also a
    timm entrypoint (timm's own keyword arguments such as ``pretrained`` are dropped).
    """

    def wrap(builder: Callable) -> Callable:
        model_name = name or builder.__name__
        doc = inspect.getdoc(builder) or ""
        entry = ModelEntry(model_name, family, builder, dict(defaults), knob, doc.split("\n")[0])
        _REGISTRY[model_name] = entry
        if timm:
            _register_with_timm(entry)
        return builder

    return wrap(fn) if fn is not None else wrap


def _register_with_timm(entry: ModelEntry) -> None:
    from timm.models import _registry as timm_registry

    def entrypoint(pretrained: bool = False, **kwargs):
        if pretrained:
            raise ValueError(
                f"{entry.name}: mpbench models have no hub weights; "
                "fine-tune from a checkpoint with a suite's `init:` instead")
        for key in _TIMM_ONLY_KWARGS:
            kwargs.pop(key, None)
        return entry.build(**kwargs)

    entrypoint.__name__ = entry.name
    entrypoint.__qualname__ = entry.name
    entrypoint.__module__ = entry.fn.__module__
    entrypoint.__doc__ = entry.doc
    timm_registry.register_model(entrypoint)


def get_entry(name: str) -> ModelEntry:
    _ensure_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `mpbench list`"
        raise UnknownModelError(f"unknown model '{name}'{hint}") from None


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build a registered model by name; overrides update its default arguments."""
    return get_entry(name).build(**overrides)


def list_models(family: str | None = None) -> list[ModelEntry]:
    _ensure_builtin()
    return sorted((e for e in _REGISTRY.values() if family in (None, e.family)),
                  key=lambda e: (e.family, e.name))


def list_families() -> list[str]:
    return sorted({e.family for e in list_models()})


def _ensure_builtin() -> None:
    """Load installed packages' entry-point models. The built-in ones registered themselves
    when ``mpbench`` was imported (``mpbench/__init__.py`` imports ``models`` and
    ``baselines``, as timm's does): this module, a leaf, never imports a model module."""
    from mpbench.plugins import load_entry_points

    load_entry_points()
