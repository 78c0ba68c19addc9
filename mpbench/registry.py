"""Model registry: the one piece of global state in mpbench.

Each variant is a small builder function registered by decorator, as in timm. The entry
records the variant's family, its default arguments and the *complexity knob* that FLOP
matching turns to land a model on a budget. Every registered builder is also registered
with timm, so ``timm.create_model("cifar_resnet56")`` works too.

Both ``create_model``s build through timm's ``build_model_with_cfg``, so every model gets
timm's model contract where the model supports it: a ``pretrained_cfg``/``default_cfg``
(the registration's ``input_size``/``default_cfg``: CIFAR's 3x32x32 and channel statistics
unless the model says otherwise; ``first_conv``, ``classifier`` and ``pool_size`` read off
the built model), ``features_only=True`` through timm's ``FeatureGetterNet`` (it needs the
model's ``forward_intermediates``/``feature_info``; a ``feature_cfg`` picks timm's other
wrappers: ``fx`` and ``hook`` on every model but an ensemble; ``list``/``dict`` with
``flatten_sequential=True`` where ``forward_features`` runs its modules in sequence), and ``pretrained=True`` refused (no hub
weights). A model without timm's methods (a plain ``nn.Sequential`` plugin) still gets its
``pretrained_cfg``; what needs the methods (``features_only``, ``num_classes=0``,
``global_pool``) raises :class:`TimmContractError` naming them. In timm's registry the models
are filed under their builder's full module name (``timm.list_models(module=
"mpbench.baselines.resnet")``), never under one of timm's own.
"""
from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import torch.nn as nn

from mpbench.errors import UserError

__all__ = [
    "Knob", "ModelEntry", "UnknownModelError", "TimmContractError", "register_model",
    "create_model", "get_entry", "list_models", "list_families", "cifar_cfg", "imagenet_cfg",
    "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR100_MEAN", "CIFAR100_STD",
]

# Keyword arguments timm.create_model passes to every entrypoint that builders never see.
_TIMM_ONLY_KWARGS = ("cache_dir", "pretrained_model_args")

# Per-channel mean/std of the training images in [0, 1] (all pixels of a channel pooled),
# what mpbench.data.datasets.channel_stats computes for the real CIFAR training sets.
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # timm.data's
CIFAR_INPUT_SIZE = (3, 32, 32)


def cifar_cfg(num_classes: int = 100, **overrides: Any) -> dict:
    """timm ``pretrained_cfg`` of a CIFAR model: 3x32x32, no crop, CIFAR-10's channel
    statistics for 10 classes and CIFAR-100's otherwise."""
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if num_classes == 10 else (CIFAR100_MEAN, CIFAR100_STD)
    return dict(input_size=CIFAR_INPUT_SIZE, crop_pct=1.0, crop_mode="center",
                interpolation="bilinear", mean=mean, std=std, num_classes=num_classes,
                first_conv="stem.0", classifier="fc", **overrides)


def imagenet_cfg(num_classes: int = 1000, input_size: tuple = (3, 224, 224),
                 **overrides: Any) -> dict:
    """timm ``pretrained_cfg`` of an ImageNet-shaped model (timm's usual defaults)."""
    return dict(input_size=tuple(input_size), crop_pct=0.875, crop_mode="center",
                interpolation="bilinear", mean=IMAGENET_MEAN, std=IMAGENET_STD,
                num_classes=num_classes, first_conv="conv1", classifier="fc", **overrides)


class TimmContractError(UserError, TypeError):
    """A timm feature was asked of a model that lacks the methods it needs."""


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
    input_size: tuple | None = None  # None: CIFAR's (3, 32, 32)
    default_cfg: dict = field(default_factory=dict)  # timm pretrained_cfg keys, over the above

    def args(self, **overrides) -> dict:
        """Defaults merged with overrides: the full argument set that defines the model."""
        return {**self.defaults, **overrides}

    def build(self, **overrides) -> nn.Module:
        """The bare builder call (no timm cfg); :func:`create_model` is the full build."""
        return self.fn(**self.args(**overrides))

    def pretrained_cfg(self, num_classes: int | None = None) -> dict:
        """timm ``pretrained_cfg`` for this variant built with ``num_classes`` (None: its
        default): ``input_size`` 3x32x32 gives :func:`cifar_cfg`, any other
        :func:`imagenet_cfg`; the registration's ``default_cfg`` keys override either."""
        if num_classes is None:
            num_classes = self.default_num_classes()
        size = tuple(self.default_cfg.get("input_size", self.input_size or CIFAR_INPUT_SIZE))
        if size[-2:] == CIFAR_INPUT_SIZE[-2:]:
            cfg = cifar_cfg(num_classes, architecture=self.name)
        else:
            cfg = imagenet_cfg(num_classes, size, architecture=self.name)
        cfg.update(input_size=size, **{k: v for k, v in self.default_cfg.items()
                                       if k != "input_size"})
        return cfg

    def default_num_classes(self) -> int:
        if "num_classes" in self.defaults:
            return int(self.defaults["num_classes"])
        param = _parameters(self.fn).get("num_classes")
        if param is not None and isinstance(param.default, int):
            return param.default
        return -1  # unknown: timm then passes none to the builder


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
    input_size: tuple | None = None,
    default_cfg: dict | None = None,
    **defaults: Any,
):
    """Register a model builder. Use as ``@register_model(family=..., knob=..., **defaults)``.

    ``defaults`` are the variant's arguments; ``create_model(name, **overrides)`` calls the
    builder with defaults updated by overrides. With ``timm=True`` the variant is also a
    timm entrypoint. ``input_size`` (C, H, W; default CIFAR's (3, 32, 32), which also picks
    CIFAR channel statistics; any other size picks ImageNet's) and ``default_cfg`` (timm
    ``pretrained_cfg`` keys such as ``mean``, ``crop_pct``) make the model's timm
    ``pretrained_cfg`` (:meth:`ModelEntry.pretrained_cfg`).
    """

    def wrap(builder: Callable) -> Callable:
        model_name = name or builder.__name__
        doc = inspect.getdoc(builder) or ""
        entry = ModelEntry(model_name, family, builder, dict(defaults), knob, doc.split("\n")[0],
                           tuple(input_size) if input_size else None, dict(default_cfg or {}))
        _REGISTRY[model_name] = entry
        if timm:
            _register_with_timm(entry)
        return builder

    return wrap(fn) if fn is not None else wrap


def _parameters(fn: Callable) -> dict:
    try:
        return dict(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return {}


def _accepts(fn: Callable, name: str) -> bool:
    params = _parameters(fn)
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _missing(model: nn.Module, names) -> list[str]:
    return [n for n in names if not hasattr(model, n)]


def _contract_error(entry: ModelEntry, what: str, missing: list[str]) -> TimmContractError:
    return TimmContractError(
        f"{entry.name}: {what} needs timm's model methods, and this model "
        f"({entry.fn.__module__}.{entry.fn.__name__}) lacks {', '.join(missing)}; build it on "
        "mpbench.baselines.resnet.ClassifierNet (see docs/adding-a-baseline.md) or leave the "
        "option out")


def _first_conv(model: nn.Module) -> str | None:
    return next((n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)


def _classifier_name(model: nn.Module):
    get = getattr(model, "get_classifier", None)
    if get is None:
        last = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        return last[-1] if last else None
    heads = get()
    names = {id(m): n for n, m in model.named_modules()}
    if isinstance(heads, nn.ModuleList):  # an ensemble: every member's
        found = tuple(names[id(h)] for h in heads if id(h) in names)
        return found or None
    return names.get(id(heads))


def _check_feature_modules(entry: ModelEntry, model: nn.Module, feature_cfg: dict) -> None:
    """timm's wrappers other than the getter take maps from the modules ``feature_info``
    names; an ensemble's maps are its members' concatenated, which no one module holds."""
    from timm.models._features import FeatureGetterNet

    cls = feature_cfg.get("feature_cls")
    if (cls.lower() == "getter" if isinstance(cls, str)
            else isinstance(cls, type) and issubclass(cls, FeatureGetterNet)):
        return
    names = dict(model.named_modules())
    absent = [i["module"] for i in model.feature_info if i.get("module") not in names]
    if absent:
        raise TimmContractError(
            f"{entry.name}: feature_cls={getattr(cls, '__name__', cls)!r} takes feature maps "
            f"from the modules feature_info names, and this model has no {', '.join(absent)} "
            "(its maps are computed, e.g. an ensemble's members' concatenated); use "
            "feature_cls='getter' (the default)")


def build(entry: ModelEntry, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Build ``entry`` through timm's ``build_model_with_cfg`` (see the module docstring).

    ``kwargs`` update the variant's defaults; timm's own options are understood
    (``pretrained_cfg``, ``pretrained_cfg_overlay``, ``features_only``, ``out_indices``,
    ``feature_cls``, ``feature_cfg``: its keys over mpbench's defaults, as timm merges
    them); ``global_pool`` and ``num_classes=0`` reach the builder.
    """
    from timm.models import build_model_with_cfg

    if pretrained:
        raise ValueError(
            f"{entry.name}: mpbench models have no hub weights; "
            "fine-tune from a checkpoint with a suite's `init:` instead")
    for key in _TIMM_ONLY_KWARGS:
        kwargs.pop(key, None)
    cfg = entry.pretrained_cfg(kwargs.get("num_classes"))
    given = kwargs.pop("pretrained_cfg", None)
    if isinstance(given, dict):
        cfg.update(given)
    elif given is not None and not hasattr(given, "to_dict"):  # a tag ('name.tag'): none exist
        raise ValueError(f"{entry.name}: no pretrained tag {given!r} (mpbench models have none)")
    elif given is not None:
        cfg.update(given.to_dict())
    features_only = bool(kwargs.get("features_only", False))
    # timm's wrapper options: the user's keys over mpbench's defaults (timm's getter over
    # every level), as timm's build_model_with_cfg merges ``out_indices``/``feature_cls``.
    feature_cfg = {"feature_cls": "getter", "out_indices": None,
                   **(kwargs.pop("feature_cfg", None) or {})}
    found: dict = {}

    def model_fn(**kw: Any) -> nn.Module:
        if kw.get("in_chans") == 3 and not _accepts(entry.fn, "in_chans"):
            kw.pop("in_chans")  # timm's default from input_size; the builder has no such knob
        pool = kw.pop("global_pool", None) if not _accepts(entry.fn, "global_pool") else None
        model = entry.build(**kw)
        if pool is not None:
            missing = _missing(model, ("reset_classifier", "forward_head"))
            if missing:
                raise _contract_error(entry, f"global_pool={pool!r}", missing)
            model.reset_classifier(getattr(model, "num_classes", kw.get("num_classes")), pool)
        if kw.get("num_classes") == 0:
            missing = _missing(model, ("forward_head", "reset_classifier", "num_features"))
            if missing:
                raise _contract_error(entry, "num_classes=0 (pooled features)", missing)
        if features_only:
            missing = _missing(model, ("forward_intermediates", "feature_info"))
            if missing:
                raise _contract_error(entry, "features_only=True", missing)
            if feature_cfg.get("out_indices") is None:  # every level; only the model knows
                feature_cfg["out_indices"] = tuple(range(len(model.feature_info)))
            _check_feature_modules(entry, model, feature_cfg)
        found.update(first_conv=_first_conv(model), classifier=_classifier_name(model))
        if getattr(model, "feature_info", None) and cfg.get("input_size"):
            r = model.feature_info[-1]["reduction"]
            found["pool_size"] = tuple(max(1, s // r) for s in cfg["input_size"][-2:])
        if isinstance(getattr(model, "num_classes", None), int) and cfg.get("num_classes", -1) < 0:
            found["num_classes"] = model.num_classes
        return model

    model = build_model_with_cfg(
        model_fn, entry.name, pretrained=False, pretrained_cfg=cfg,
        feature_cfg=feature_cfg, **kwargs)
    for key, value in found.items():  # what only the built model knows, unless registered
        if key not in entry.default_cfg and value is not None and (
                key in model.pretrained_cfg or key in ("pool_size", "num_classes")):
            model.pretrained_cfg[key] = value
    model.default_cfg = model.pretrained_cfg
    return model


def _register_with_timm(entry: ModelEntry) -> None:
    import sys

    from timm.models import _registry as timm_registry
    from timm.models import generate_default_cfgs

    def entrypoint(pretrained: bool = False, **kwargs):
        return build(entry, pretrained=pretrained, **kwargs)

    entrypoint.__name__ = entry.name
    entrypoint.__qualname__ = entry.name
    entrypoint.__module__ = entry.fn.__module__
    entrypoint.__doc__ = entry.doc
    module = sys.modules.get(entry.fn.__module__)
    saved_all = list(module.__all__) if hasattr(module, "__all__") else None
    timm_registry.register_model(entrypoint)
    # timm files a model under the last part of its module name ('resnet', timm's own) and
    # appends it to that module's __all__; mpbench's go under their full module name.
    if module is not None:
        if saved_all is None:
            del module.__all__
        else:
            module.__all__[:] = saved_all
    short = timm_registry._model_to_module.get(entry.name)
    if short is not None:
        timm_registry._module_to_models[short].discard(entry.name)
    timm_registry._model_to_module[entry.name] = entry.fn.__module__
    timm_registry._module_to_models[entry.fn.__module__].add(entry.name)
    default = generate_default_cfgs({entry.name: entry.pretrained_cfg()})[entry.name]
    timm_registry._model_default_cfgs[entry.name] = default
    timm_registry._model_pretrained_cfgs[entry.name] = default.cfgs[default.tags[0]]
    if entry.name not in timm_registry._model_with_tags[entry.name]:
        timm_registry._model_with_tags[entry.name].append(entry.name)


def get_entry(name: str) -> ModelEntry:
    _ensure_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `mpbench list`"
        raise UnknownModelError(f"unknown model '{name}'{hint}") from None


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build a registered model by name; overrides update its default arguments.

    The same build as ``timm.create_model(name, ...)`` (timm's options work here too), so the
    model carries its ``pretrained_cfg``; ``ModelEntry.build`` is the bare builder call.
    """
    return build(get_entry(name), **overrides)


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
