"""Fine-tuning and upcycling: start a run from weights instead of from scratch (DESIGN.md §4).

A suite's model entry names its starting point with ``init:``

- a checkpoint file: an mpbench ``checkpoint.pt`` (its ``"model"``), a bare ``state_dict``,
  a timm/torchvision ``.pth`` (``"state_dict"``/``"model"`` wrappers and ``module.`` prefixes
  are unwrapped) or a ``.safetensors`` file;
- a finished mpbench run directory (its ``checkpoint.pt``; the run must have a ``done``
  result, so a half-trained network is never mistaken for a trained one);
- ``timm:<name>``, timm's pretrained weights for ``<name>`` (downloaded from the hub, or read
  from its cache). Offline, the one-line error names the file to fetch.

Relative paths are taken from the working directory, like ``dataset.root`` and ``--out``.
Everything is loaded with ``weights_only=True`` (or safetensors): a checkpoint cannot run code.

``init_mode: finetune`` copies every tensor whose name and shape match. The classifier is
replaced (kept as freshly initialised) when its shape differs, i.e. when the data set has
another number of classes. Missing, unexpected and mis-shaped keys are written to the run's
log, ``init.json`` and result row; ``init_strict: true`` makes any of them an error (a replaced
head excepted). Whatever the mode, an init that fills less than half of the backbone is an
error: that is the wrong checkpoint, not a fine-tuning start. timm/torchvision ImageNet
ResNets (``conv1``, ``bn1``, ``layer1``...) are renamed onto the CIFAR ResNets' names (``stem``,
``stages``), so e.g. ``cifar_resnet18`` can start from ImageNet weights (its 3x3 stem stays
untrained and is reported as mis-shaped).

``init_mode: upcycle`` builds a multi-path ``mp_resnet`` from a trained single-path
``CifarResNet`` of the same depth and per-path width (or, for the ImageNet-stem
``mp_resnet_imagenet`` family, a timm/torchvision ``resnet50`` state dict: conv1/bn1/layer1..4/fc)
(:func:`mpbench.models.mp_resnet.load_single_path`): the weights go into every path, routing
starts neutral, and the upcycled network computes the single-path function at init up to
``upcycle_noise`` (relative std of the noise on the path convolutions, default
``mp_resnet.UPCYCLE_NOISE`` = 0.01), which breaks the symmetry of the identical paths.
Without it every gate value gets the same gradient and the gates never move, so planning
refuses ``upcycle_noise: 0`` for a routed model (:func:`mpbench.suite.starts.check_init`).

The training side (``Recipe.freeze_backbone_epochs``, ``Recipe.input_size``) is two trainer
callbacks (:mod:`mpbench.training.callbacks`); what a suite entry asks for and what a run records
about its start is :mod:`mpbench.suite.starts`.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from mpbench.errors import UserError

__all__ = ["InitError", "InitSource", "resolve_source", "load_source_state", "apply_init",
           "summary", "classifier", "head_keys", "INIT_FILE", "upcycle_noise"]

TIMM_PREFIX = "timm:"
INIT_FILE = "init.json"
MIN_BACKBONE_FRACTION = 0.5  # below this share of backbone elements loaded: wrong checkpoint


class InitError(UserError, ValueError):
    """An ``init:`` source that cannot be used; the message is one line."""


@dataclass(frozen=True)
class InitSource:
    kind: str            # "file" | "run" | "timm"
    spec: str            # as written in the suite
    path: Path | None    # resolved checkpoint file (file, run); None for timm
    run_dir: Path | None = None


# --------------------------------------------------------------------------- sources

def resolve_source(spec: str) -> InitSource:
    """Where ``init: spec`` points; checks it exists (and a run finished) without loading it."""
    if spec.startswith(TIMM_PREFIX):
        name = spec[len(TIMM_PREFIX):].strip()
        if not name:
            raise InitError(f"'{spec}': give a timm model name, e.g. timm:resnet18.a1_in1k")
        return InitSource("timm", spec, None)
    path = Path(spec).expanduser()
    if not path.exists():
        raise InitError(f"{spec} does not exist (relative paths are taken from the working "
                        f"directory {Path.cwd()}); give a checkpoint file or a finished run "
                        f"directory")
    if path.is_dir():
        if not (path / "config.json").exists():
            raise InitError(f"{spec} is a directory but not an mpbench run (no config.json)")
        result = path / "result.json"
        if not result.exists():
            raise InitError(f"{spec}: run has not finished (no result.json); wait for it, or "
                            f"point init at its checkpoint.pt to start from a partial run")
        status = json.loads(result.read_text()).get("status")
        if status != "done":
            raise InitError(f"{spec}: run ended with status '{status}', not 'done'")
        if not (path / "checkpoint.pt").exists():
            raise InitError(f"{spec}: finished run has no checkpoint.pt")
        return InitSource("run", spec, path / "checkpoint.pt", path)
    return InitSource("file", spec, path)


_CACHE: dict[tuple, dict[str, torch.Tensor]] = {}


def load_source_state(source: InitSource) -> dict[str, torch.Tensor]:
    """The source's tensors by name (never modified: callers copy). Cached per file version."""
    if source.kind == "timm":
        key = ("timm", source.spec)
    else:
        st = source.path.stat()
        key = (str(source.path.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _CACHE:
        state = _load_timm(source.spec) if source.kind == "timm" else _load_file(source)
        _CACHE.clear()  # one source at a time: planning then training the same entry
        _CACHE[key] = state
    return _CACHE[key]


def _load_file(source: InitSource) -> dict[str, torch.Tensor]:
    path = source.path
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            obj: Any = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise InitError(f"{source.spec}: cannot load with weights_only=True "
                        f"({type(exc).__name__}: {first[:200]})") from None
    return _state_dict_of(obj, source.spec)


def _state_dict_of(obj: Any, spec: str) -> dict[str, torch.Tensor]:
    """Unwrap the usual checkpoint containers and DDP/compile prefixes."""
    if isinstance(obj, dict) and not _is_state_dict(obj):
        for key in ("model", "state_dict", "model_state_dict", "module"):
            if key in obj and isinstance(obj[key], dict) and _is_state_dict(obj[key]):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not _is_state_dict(obj):
        raise InitError(f"{spec}: no state_dict in it (expected tensors by name, or a dict with "
                        f"'model' or 'state_dict')")
    out = {}
    for k, v in obj.items():
        k = re.sub(r"^(module\.|_orig_mod\.)+", "", k)
        out[k] = v
    return out


def _is_state_dict(d: dict) -> bool:
    return bool(d) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in d.items())


def timm_weights_hint(name: str) -> str:
    """Which file to fetch for timm's pretrained ``name`` (hub id or URL)."""
    try:
        from timm.models import get_pretrained_cfg
        cfg = get_pretrained_cfg(name)
    except Exception:
        cfg = None
    if cfg is not None and getattr(cfg, "hf_hub_id", None):
        fname = getattr(cfg, "hf_hub_filename", None) or "model.safetensors"
        return f"https://huggingface.co/{cfg.hf_hub_id} ({fname})"
    if cfg is not None and getattr(cfg, "url", None):
        return cfg.url
    return f"the pretrained weights of timm's {name}"


def _load_timm(spec: str) -> dict[str, torch.Tensor]:
    import timm

    name = spec[len(TIMM_PREFIX):].strip()
    if not timm.is_model(name.split(".")[0]):
        raise InitError(f"{spec}: timm has no model '{name.split('.')[0]}'")
    if not timm.is_model_pretrained(name) and "." in name:
        raise InitError(f"{spec}: timm has no pretrained tag '{name}' (see timm.list_pretrained)")
    try:
        model = timm.create_model(name, pretrained=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise InitError(
            f"{spec}: pretrained weights unavailable ({type(exc).__name__}: {first}); fetch "
            f"{timm_weights_hint(name)} where the hub is reachable and set init: to that local "
            f"file (timm itself reads one with pretrained_cfg_overlay=dict(file=...))") from None
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- applying

def classifier(model: nn.Module) -> nn.Module:
    get = getattr(model, "get_classifier", None)
    if get is None:
        raise InitError(f"{type(model).__name__} has no get_classifier(); a head cannot be "
                        f"told from the backbone")
    return get()


def head_keys(model: nn.Module) -> set[str]:
    """State-dict names of the classifier's parameters and buffers."""
    head_ids = {id(m) for m in classifier(model).modules()}
    keys = set()
    for name, m in model.named_modules():
        if id(m) in head_ids:
            prefix = f"{name}." if name else ""
            keys.update(prefix + k for k in list(m._parameters) + list(m._buffers)
                        if getattr(m, k, None) is not None)
    return keys


_RESNET_STAGE = re.compile(r"^layer(\d+)\.")


def remap_resnet_keys(src: dict[str, torch.Tensor], target: dict) -> dict[str, torch.Tensor]:
    """timm/torchvision ResNet names -> CIFAR ResNet names, when the source has the first and
    the target the second (``conv1``/``bn1`` -> ``stem.0``/``stem.1``, ``layerN`` ->
    ``stages.N-1``; the blocks inside are timm's in both)."""
    if not any(k.startswith("layer1.") for k in src) or not any(k.startswith("stages.") for k in target):
        return src
    out = {}
    for k, v in src.items():
        if k.startswith("conv1."):
            k = "stem.0." + k[len("conv1."):]
        elif k.startswith("bn1."):
            k = "stem.1." + k[len("bn1."):]
        else:
            k = _RESNET_STAGE.sub(lambda m: f"stages.{int(m.group(1)) - 1}.", k)
        out[k] = v
    return out


def _is_counter(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def finetune_init(model: nn.Module, src: dict[str, torch.Tensor], strict: bool = False) -> dict:
    """Copy matching tensors of ``src`` into ``model``; returns what was (not) loaded."""
    target = model.state_dict()
    src = remap_resnet_keys(src, target)
    head = head_keys(model)
    take, unexpected, mismatched = {}, [], []
    head_mismatch = False
    for k, v in src.items():
        if k not in target:
            if not _is_counter(k):
                unexpected.append(k)
        elif target[k].shape != v.shape:
            if k in head:
                head_mismatch = True
            else:
                mismatched.append(f"{k} {tuple(v.shape)}->{tuple(target[k].shape)}")
        else:
            take[k] = v
    if head_mismatch:  # a new head: none of the old one, so weight and bias stay consistent
        old = {k: tuple(src[k].shape) for k in sorted(head) if k in src}
        for k in head:
            take.pop(k, None)
    missing = [k for k in target if k not in take and k not in head and not _is_counter(k)
               and not any(m.startswith(k + " ") for m in mismatched)]
    head_missing = sorted(k for k in head if k not in src)
    if head_mismatch:
        head_state = "replaced " + ", ".join(f"{k} {old[k]}->{tuple(target[k].shape)}" for k in old)
    elif head_missing:
        head_state = "new (not in source: " + ", ".join(head_missing) + ")"
    else:
        head_state = "loaded"
    backbone = [k for k in target if k not in head and target[k].is_floating_point()]
    total = sum(target[k].numel() for k in backbone) or 1
    loaded = sum(target[k].numel() for k in backbone if k in take)
    fraction = loaded / total
    if fraction < MIN_BACKBONE_FRACTION:
        raise InitError(f"it fills only {100 * fraction:.0f}% of {type(model).__name__}'s "
                        f"backbone weights ({len(unexpected)} unexpected, {len(mismatched)} "
                        f"mis-shaped keys, e.g. {(unexpected + mismatched + [''])[0]}); wrong "
                        f"model or checkpoint?")
    if strict and (missing or unexpected or mismatched):
        parts = [f"{n} {what} (e.g. {keys[0]})" for n, what, keys in (
            (len(missing), "missing", missing), (len(unexpected), "unexpected", unexpected),
            (len(mismatched), "mis-shaped", mismatched)) if n]
        raise InitError("init_strict: " + ", ".join(parts))
    model.load_state_dict(take, strict=False)
    return {"loaded": len(take), "backbone_fraction": round(fraction, 6), "head": head_state,
            "missing": missing, "unexpected": unexpected, "mismatched": mismatched}


def single_from_state(src: dict[str, torch.Tensor], spec: str = "init") -> nn.Module:
    """A plain ``CifarResNet`` shaped like the state dict of one (for upcycling from a file)."""
    from mpbench.baselines.resnet import CifarResNet

    try:
        stem = src["stem.0.weight"]
        layers: dict[int, int] = {}
        for k in src:
            m = re.match(r"^stages\.(\d+)\.(\d+)\.", k)
            if m:
                s, b = int(m.group(1)), int(m.group(2))
                layers[s] = max(layers.get(s, 0), b + 1)
        stages = [layers[s] for s in range(len(layers))]
        block = "bottleneck" if "stages.0.0.conv3.weight" in src else "basic"
        widths = [src[f"stages.{s}.0.conv1.weight"].shape[0] for s in range(len(stages))]
        geometry = dict(stem_width=stem.shape[0], num_classes=src["fc.weight"].shape[0],
                        in_chans=stem.shape[1])
        if stem.shape[-1] == 7:  # timm/torchvision ImageNet stem (conv1 7x7/2 + max-pool)
            from mpbench.models.mp_resnet_imagenet import single_path_imagenet
            model = single_path_imagenet(block, stages, widths, **geometry)
        else:
            model = CifarResNet(block, stages, widths, **geometry)
        model.load_state_dict(src)
    except (KeyError, RuntimeError, ValueError) as exc:
        msg = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise InitError(f"{spec}: upcycling needs a plain single-path ResNet checkpoint "
                        f"(CIFAR stem/stages/fc, or timm's conv1/bn1/layer1..4/fc): {msg}") from None
    return model


def upcycle_init(model: nn.Module, source: InitSource, src: dict[str, torch.Tensor],
                 noise: float | None = None, seed: int = 0) -> dict:
    from mpbench.baselines.resnet import CifarResNet
    from mpbench.models.mp_resnet import MPResNet, load_single_path

    if not isinstance(model, MPResNet):
        raise InitError(f"init_mode: upcycle builds a multi-path network; "
                        f"{type(model).__name__} is not one (use an mp_resnet model)")
    if source.kind == "run":
        from mpbench.plugins import load_run_plugins
        from mpbench.registry import create_model

        config = json.loads((source.run_dir / "config.json").read_text())
        load_run_plugins(config)
        single = create_model(config["model"], **config["args"])
        single.load_state_dict(src)
        if not isinstance(single, CifarResNet) and any(k.startswith("layer1.") for k in src):
            # a timm ImageNet ResNet (e.g. timm_resnet50): rebuilt from its state dict
            single = single_from_state(remap_resnet_keys(src, {"stages.": None}), source.spec)
        if not isinstance(single, CifarResNet):
            raise InitError(f"{source.spec}: upcycling needs a plain single-path CIFAR ResNet, "
                            f"the run trained {config['model']}")
    else:
        single = single_from_state(remap_resnet_keys(src, {"stages.": None}), source.spec)
    head = "loaded (divided over paths)"
    if single.num_classes != model.num_classes:
        head = f"replaced ({single.num_classes} -> {model.num_classes} classes)"
        single.reset_classifier(model.num_classes)
    noise = upcycle_noise(noise)
    gen = torch.Generator().manual_seed(seed)
    try:
        load_single_path(model, single, noise_std=noise, generator=gen)
    except ValueError as exc:
        raise InitError(f"{source.spec}: {exc}") from None
    gates = sorted(k for k in model.state_dict() if ".route" in k)
    return {"loaded": len(single.state_dict()), "backbone_fraction": 1.0, "head": head,
            "missing": [], "unexpected": [], "mismatched": [], "paths": model.paths,
            "noise": noise, "gates_neutral": len(gates)}


def upcycle_noise(noise: float | None) -> float:
    """``upcycle_noise`` as used: None (not given) is ``mp_resnet.UPCYCLE_NOISE``."""
    from mpbench.models.mp_resnet import UPCYCLE_NOISE

    return UPCYCLE_NOISE if noise is None else float(noise)


def apply_init(model: nn.Module, init: str, *, mode: str = "finetune", strict: bool = False,
               noise: float | None = None, seed: int = 0) -> dict:
    """Initialise ``model`` in place from ``init``; returns the report (see module doc).
    ``noise`` (upcycle only): None is :data:`~mpbench.models.mp_resnet.UPCYCLE_NOISE`."""
    source = resolve_source(init)
    src = load_source_state(source)
    if mode == "upcycle":
        report = upcycle_init(model, source, src, noise, seed)
    elif mode == "finetune":
        report = finetune_init(model, src, strict)
    else:
        raise InitError(f"init_mode must be finetune or upcycle, got {mode!r}")
    return {"source": init, "kind": source.kind, "mode": mode,
            "path": str(source.path.resolve()) if source.path else None,
            "sha256": file_digest(source.path) if source.path else None, **report}


def summary(report: dict) -> str:
    """One log line."""
    def keys(name):
        v = report[name]
        return f"{len(v)} {name}" + (f" ({', '.join(v[:5])}{', ...' if len(v) > 5 else ''})" if v else "")
    extra = (f"; {report['paths']} paths, noise {report['noise']:g}, {report['gates_neutral']} "
             f"gate tensors set neutral" if report["mode"] == "upcycle" else "")
    return (f"init ({report['mode']}) from {report['source']}: {report['loaded']} tensors loaded, "
            f"{100 * report['backbone_fraction']:.1f}% of backbone; head {report['head']}; "
            f"{keys('missing')}, {keys('unexpected')}, {keys('mismatched')}{extra}")
