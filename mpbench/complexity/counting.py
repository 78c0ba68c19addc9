"""Model complexity in MACs: one convention, measured with fvcore, stated everywhere.

Every complexity number mpbench prints, stores or matches on is produced here, so that "at
the same compute" means one thing (DESIGN.md §3).

The convention
--------------
* **MACs, not FLOPs.** fvcore's ``FlopCountAnalysis`` counts one multiply-add as one "flop";
  mpbench calls that unit a MAC and reports GMACs (1e9 MACs).
* **Batch 1, eval mode**, the suite's input size (``(3, 32, 32)`` by default) and class count.
* **Convolutions, linear layers, matmul / bmm**: fvcore's handles (bias not counted).
  **einsum** with two operands: the product of all its index sizes (one MAC per term, e.g.
  P per output element for the multi-path mixing); fvcore's handle, which halves numpy's
  approximate FLOP estimate, is off by one there.
* **Batch norm**: counted as fvcore counts it in eval mode, *not* folded into the preceding
  convolution: 1 MAC per element to normalise, plus 1 for the affine scale and shift (so 2 per
  element for the usual affine BN). The DESIGN.md §2 reference numbers were measured this way
  (ResNet-56: 126.8M MACs; folding BN away would give 125.8M), and it charges the batch norms
  inside routing gates like any other. Group / layer / instance norm: fvcore's handles.
* **Elementwise arithmetic** that fvcore skips (add, sub, mul, div and their in-place forms,
  residual additions included) and **gate nonlinearities** (sigmoid, softmax, tanh, SiLU, GELU,
  hard-sigmoid, exp, ...): 1 MAC per output element. This is what makes SE, SK, ResNeSt and
  the multi-path routers pay for their gating and mixing.
* **Reductions** (mean, sum, var, norm) and global average pooling: 1 MAC per input element;
  average pooling: kernel area per output element.
* **Zero cost**: ReLU-like activations and max-pooling (comparisons, as fvcore and published
  tables treat them) and data movement (view, cat, split, pad, dropout, ...).
* **Anything else is an error**: an operator without a handle, or a submodule whose forward
  never ran (its parameters would be counted but not its MACs), raises
  :class:`UnsupportedOpError` naming it. Register a handle for a new operator with
  :func:`register_op_handle`.

Parameters are fvcore's ``parameter_count`` (shared parameters once).

``count_model`` builds registered models without random initialisation (weights are left as
allocated): a 180M-parameter model then builds in milliseconds instead of seconds, which is
what makes budget matching fast. Counts depend only on shapes, so they are identical to
counting a normally built model (a test checks this).
"""
from __future__ import annotations

import inspect
import logging
import warnings
from collections import Counter
from dataclasses import dataclass, field
from math import prod
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

from mpbench.errors import UserError

__all__ = [
    "Complexity", "UnsupportedOpError", "count", "count_model", "estimate_model", "model_args",
    "register_op_handle", "freeze", "clear_cache", "cache_generation", "format_macs", "format_params",
    "MATMUL_OPS", "conv_layout", "build_for_count",
]

_log = logging.getLogger(__name__)

#: fvcore operator names (as they appear in ``Complexity.by_operator``) that are convolutions
#: or matrix products: the part of the count that ``torch.utils.flop_counter`` also measures.
MATMUL_OPS = ("conv", "linear", "addmm", "matmul", "mm", "bmm", "baddbmm", "einsum")

InputSize = Sequence[int]


class UnsupportedOpError(UserError):
    """The model runs an operator mpbench has no MAC handle for, or has a submodule whose
    forward never runs. Either would make its MACs wrong without anyone noticing."""


@dataclass(frozen=True)
class Complexity:
    """MACs and parameters of one model at batch 1.

    ``by_module`` maps every submodule name, top-level (``"stages"``) and nested
    (``"stages.0.1.conv1"``), to its MACs, in model order (the whole model is ``macs``);
    ``params_by_module`` likewise. ``by_operator`` groups MACs by operator (``conv``,
    ``batch_norm``, ``add``, ``sigmoid``, ...). Returned objects may be shared through a
    cache: treat them as read-only.
    """

    macs: int
    params: int
    by_module: dict[str, int]
    params_by_module: dict[str, int] = field(default_factory=dict)
    by_operator: dict[str, int] = field(default_factory=dict)
    input_size: tuple[int, ...] = (3, 32, 32)

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    @property
    def matmul_macs(self) -> int:
        """MACs of convolutions and matrix products only (what FlopCounterMode/2 measures)."""
        return sum(v for k, v in self.by_operator.items() if k in MATMUL_OPS)


# --------------------------------------------------------------------------- operator handles

def _shape(value: Any) -> list[int] | None:
    """Static shape of a traced tensor value, or None for non-tensors (ints, lists)."""
    try:
        if value.isCompleteTensor():
            return list(value.type().sizes())
    except RuntimeError:
        pass
    return None


def _numel(value: Any) -> int:
    shape = _shape(value)
    return prod(shape) if shape is not None else 0


def _per_output(op: str) -> Callable:
    """1 MAC per output element (elementwise arithmetic and gate nonlinearities)."""
    def handle(inputs: list, outputs: list) -> Counter:
        return Counter({op: _numel(outputs[0])})
    return handle


def _per_input(op: str) -> Callable:
    """1 MAC per input element (reductions: every element is accumulated once)."""
    def handle(inputs: list, outputs: list) -> Counter:
        return Counter({op: _numel(inputs[0])})
    return handle


def _zero(inputs: list, outputs: list) -> Counter:
    """Free: comparisons and data movement. An explicit handle, so it is never 'unsupported'."""
    return Counter()


def _int_list(value: Any) -> list[int]:
    """Constant int list argument of a traced op (e.g. a pooling kernel size)."""
    ivalue = value.toIValue()
    if ivalue is None and value.node().kind() == "prim::ListConstruct":
        ivalue = [v.toIValue() for v in value.node().inputs()]
    return [int(v) for v in ([ivalue] if isinstance(ivalue, int) else ivalue)]


def _avg_pool(inputs: list, outputs: list) -> Counter:
    """Kernel area per output element: each window's elements are accumulated once."""
    kernel = _int_list(inputs[1])
    ndim = len(_shape(outputs[0]) or [0, 0]) - 2
    area = prod(kernel) if len(kernel) > 1 else kernel[0] ** max(ndim, 1)
    return Counter({"avg_pool": _numel(outputs[0]) * area})


def _baddbmm(inputs: list, outputs: list) -> Counter:
    b, n, k = _shape(inputs[1])
    m = _shape(inputs[2])[-1]
    return Counter({"baddbmm": b * n * k * m})


_ELEMENTWISE = {  # 1 MAC per output element, grouped under one name per operator family
    "add": ("add", "add_", "sub", "sub_", "rsub"),
    "mul": ("mul", "mul_"),
    "div": ("div", "div_", "reciprocal", "reciprocal_"),
    "sigmoid": ("sigmoid", "sigmoid_", "hardsigmoid", "hardsigmoid_"),
    "softmax": ("softmax", "log_softmax", "_softmax"),
    "activation": ("tanh", "tanh_", "silu", "silu_", "gelu", "gelu_", "hardswish",
                   "hardswish_", "mish", "mish_", "elu", "elu_", "softplus"),
    "pointwise": ("exp", "exp_", "log", "sqrt", "rsqrt", "pow", "pow_", "neg", "abs", "square",
                  "addcmul", "addcmul_", "lerp", "lerp_"),
}
_REDUCTIONS = {"mean": ("mean",), "sum": ("sum",),
               "norm": ("var", "std", "var_mean", "std_mean", "norm", "linalg_vector_norm",
                        "logsumexp")}
_FREE = (
    # ReLU-like activations and max-pooling: comparisons, free as in fvcore
    "relu6", "leaky_relu", "leaky_relu_", "hardtanh", "hardtanh_", "threshold", "threshold_",
    "max_pool1d", "max_pool2d", "max_pool3d", "max_pool2d_with_indices",
    "adaptive_max_pool1d", "adaptive_max_pool2d", "amax", "amin", "argmax", "argmin",
    "minimum", "maximum", "where", "sign",
    # data movement and bookkeeping fvcore does not already ignore
    "repeat", "repeat_interleave", "expand_as", "view_as", "reshape_as", "unflatten", "movedim",
    "moveaxis", "clone", "pad", "reflection_pad2d", "replication_pad2d", "pixel_shuffle",
    "pixel_unshuffle", "channel_shuffle", "tensor_split", "unsafe_split", "unsafe_chunk",
    "index_select", "take_along_dim", "flip", "tile", "ones_like", "empty_like", "lift_fresh",
    "feature_dropout", "alpha_dropout", "feature_alpha_dropout", "dropout_", "identity",
    "contiguous", "alias", "resolve_conj", "resolve_neg", "scalar_tensor", "tensor",
)


def _einsum(inputs: list, outputs: list) -> Counter:
    """Two-operand einsum: one MAC per combination of all its indices (the product of every
    index's size), which is exact for a contraction such as the multi-path mixing
    ``bij,bichw->bjchw`` (P multiply-adds per output element). fvcore's own handle takes
    numpy's ``einsum_path`` FLOP estimate and halves it, which is off (by one MAC for the
    mixing, more for other equations); its handle is kept for other operand counts."""
    from fvcore.nn.jit_handles import einsum_flop_jit, get_shape

    equation = inputs[0].toIValue().replace(" ", "")
    shapes = [get_shape(v) for v in inputs[1].node().inputs()]
    operands = equation.split("->")[0].split(",")
    if len(operands) != 2 or "." in equation or any(s is None for s in shapes):
        return Counter({"einsum": int(einsum_flop_jit(inputs, outputs))})
    sizes: dict[str, int] = {}
    for letters, shape in zip(operands, shapes):
        sizes.update(zip(letters, shape))
    return Counter({"einsum": prod(sizes.values())})


def _default_handles() -> dict[str, Callable]:
    handles: dict[str, Callable] = {}
    for group, ops in _ELEMENTWISE.items():
        handles.update({f"aten::{op}": _per_output(group) for op in ops})
    for group, ops in _REDUCTIONS.items():
        handles.update({f"aten::{op}": _per_input(group) for op in ops})
    handles.update({f"aten::{op}": _zero for op in _FREE})
    handles.update({
        "aten::avg_pool1d": _avg_pool, "aten::avg_pool2d": _avg_pool,
        "aten::avg_pool3d": _avg_pool, "aten::baddbmm": _baddbmm, "aten::einsum": _einsum,
        "aten::adaptive_avg_pool1d": _per_input("adaptive_avg_pool"),
        "aten::adaptive_avg_pool3d": _per_input("adaptive_avg_pool"),
    })
    return handles


_EXTRA_HANDLES: dict[str, Callable] = _default_handles()


def register_op_handle(name: str, handle: Callable[[list, list], Any] | None) -> None:
    """Teach mpbench the MAC cost of an operator, e.g. ``register_op_handle("aten::cumsum",
    fn)``. ``fn(inputs, outputs)`` receives TorchScript values (see fvcore's ``jit_handles``)
    and returns a number or a Counter; ``None`` declares the operator free. Clears caches."""
    _EXTRA_HANDLES[name] = _zero if handle is None else handle
    clear_cache()


# --------------------------------------------------------------------------- counting

def _fvcore():
    """fvcore.nn, imported quietly: importing it scripts a loss with the deprecated
    ``torch.jit.script``, which warns on every fresh process."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import fvcore.nn
    return fvcore.nn


def _flop_analysis(model: nn.Module, x: torch.Tensor):
    analysis = _fvcore().FlopCountAnalysis(model, x).set_op_handle(**_EXTRA_HANDLES)
    return (analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            .tracer_warnings("none"))


def _has_own_forward(module: nn.Module) -> bool:
    """Containers and Identity legitimately run no code of their own (as fvcore decides)."""
    forward = type(module).forward
    return not any(forward is base.forward
                   for base in (nn.Module, nn.ModuleList, nn.ModuleDict, nn.Identity))


def _example_input(model: nn.Module, input_size: InputSize) -> torch.Tensor:
    tensor = next(model.parameters(), None)
    if tensor is None:
        tensor = next(model.buffers(), None)
    device = tensor.device if tensor is not None else torch.device("cpu")
    dtype = tensor.dtype if tensor is not None and tensor.is_floating_point() else torch.float32
    return torch.zeros((1, *input_size), device=device, dtype=dtype)


def _where(analysis, op: str, names: Iterable[str]) -> list[str]:
    """The innermost modules in which ``op`` ran."""
    hits = [n for n in names if n and analysis.unsupported_ops(n).get(op)]
    inner = [n for n in hits if not any(o.startswith(n + ".") for o in hits)]
    return inner or ["<top level>"]


def count(model: nn.Module, input_size: InputSize = (3, 32, 32)) -> Complexity:
    """MACs (per module and per operator) and parameters of ``model`` at batch 1, eval mode.

    The model is traced once on a zero input of shape ``(1, *input_size)`` on its own device;
    every module's train/eval flag is restored afterwards. Raises :class:`UnsupportedOpError`
    for operators without a handle and for submodules whose forward never ran.
    """
    input_size = tuple(int(s) for s in input_size)
    modes = {m: m.training for m in model.modules()}
    called: set[int] = set()
    hooks = [m.register_forward_pre_hook(lambda mod, _: called.add(id(mod)))
             for m in model.modules()]
    model.eval()
    x = _example_input(model, input_size)
    threads = torch.get_num_threads()
    try:
        analysis = _flop_analysis(model, x)
        if x.device.type == "cpu":
            # a batch-1 trace is too small to gain from threads, and on a busy machine extra
            # threads oversubscribe the cores: one thread counted 3-5x faster on 2 shared cores
            torch.set_num_threads(1)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            by_module = analysis.by_module()
    finally:
        torch.set_num_threads(threads)
        for h in hooks:
            h.remove()
        for m, training in modes.items():
            m.training = training

    name = type(model).__name__
    unsupported = analysis.unsupported_ops("")
    if unsupported:
        names = list(by_module)
        detail = "; ".join(f"{op} ({n}x, in {', '.join(_where(analysis, op, names)[:3])})"
                           for op, n in sorted(unsupported.items()))
        raise UnsupportedOpError(
            f"cannot count MACs of {name}: no handle for {detail}; declare its cost with "
            f"mpbench.complexity.register_op_handle()")
    uncalled = sorted(n for n, m in model.named_modules()
                      if n and id(m) not in called and _has_own_forward(m))
    if uncalled:
        more = f" (+{len(uncalled) - 3} more)" if len(uncalled) > 3 else ""
        raise UnsupportedOpError(
            f"cannot count MACs of {name}: submodule {', '.join(uncalled[:3])}{more} never ran "
            f"in forward (unused, or called via .forward() directly); its parameters would be "
            f"counted but not its MACs")

    params = _fvcore().parameter_count(model)
    module_names = [n for n, _ in model.named_modules() if n]
    return Complexity(
        macs=int(by_module[""]),
        params=int(params[""]),
        by_module={n: int(by_module.get(n, 0)) for n in module_names},
        params_by_module={n: int(params.get(n, 0)) for n in module_names},
        by_operator={k: int(v) for k, v in analysis.by_operator("").items()},
        input_size=input_size,
    )


# --------------------------------------------------------------------------- registered models

def freeze(value: Any) -> Any:
    """A hashable, order-independent form of an argument value (for cache keys)."""
    if isinstance(value, dict):
        return ("dict", tuple(sorted((str(k), freeze(v)) for k, v in value.items())))
    if isinstance(value, (list, tuple)):
        return ("seq", tuple(freeze(v) for v in value))
    if isinstance(value, (set, frozenset)):
        return ("set", tuple(sorted(repr(freeze(v)) for v in value)))
    try:
        hash(value)
    except TypeError:
        return ("repr", repr(value))
    return (type(value).__name__, value)


def _accepts(fn: Callable, arg: str) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == arg or p.kind is p.VAR_KEYWORD for p in params)


def model_args(entry, args: dict | None = None, *, input_size: InputSize = (3, 32, 32),
               num_classes: int = 100) -> dict:
    """The full keyword arguments that build ``entry`` for this input geometry.

    Registry defaults, updated by ``args``, plus ``num_classes`` and ``in_chans`` (from
    ``input_size[0]``), so that ``entry.fn(**result)`` rebuilds exactly the counted model. An
    ``args`` value for those two that contradicts the geometry is an error, not a silent pick;
    a registry default (an ImageNet ensemble's 1000 classes) gives way to the geometry.
    """
    full = entry.args(**(args or {}))
    for key, value in (("num_classes", int(num_classes)), ("in_chans", int(input_size[0]))):
        if key in (args or {}) and full[key] != value:
            raise UserError(f"{entry.name}: argument {key}={full[key]!r} contradicts the "
                            f"data ({key} {value}); drop it from the model's args")
        if _accepts(entry.fn, key):
            full[key] = value
        elif key == "num_classes" or value != 3:
            raise UserError(f"{entry.name}: builder {entry.fn.__name__} takes no '{key}' "
                            f"argument; mpbench passes it to every model")
    return full


class _SkipRandomInit(TorchDispatchMode):
    """Leave weights uninitialised: skip the in-place random fills that initialisers use.

    Counting depends on shapes only, and random initialisation is most of the build time of a
    wide model (2.4 s of 2.5 s for a width-256 ResNet-18). Skipping it also leaves the global
    RNG untouched, so counting a model never shifts a training run's random stream.
    """

    OPS = frozenset(getattr(torch.ops.aten, n) for n in (
        "normal_", "uniform_", "bernoulli_", "random_", "exponential_", "log_normal_",
        "cauchy_", "geometric_"))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in self.OPS:
            return args[0]
        return func(*args, **(kwargs or {}))


def _build_for_count(entry, full: dict) -> nn.Module:
    """Build on the CPU without random initialisation (see :class:`_SkipRandomInit`).

    (Building on the ``meta`` device and materialising with ``to_empty`` was slower for
    deep models: ``to_empty`` alone cost more than the whole build.)
    """
    try:
        with _SkipRandomInit():
            return entry.fn(**full)
    except Exception as exc:  # a builder that needs real values (e.g. data-dependent init)
        _log.debug("fast build of %s failed (%s); building normally", entry.name, exc)
        return _build(entry, full)


def build_for_count(name: str, args: dict | None = None, *, input_size: InputSize = (3, 32, 32),
                    num_classes: int = 100) -> nn.Module:
    """A registered model built as :func:`count_model` builds it (full arguments for this
    geometry, no random initialisation): for other shape-only analyses (activations)."""
    from mpbench.registry import get_entry

    entry = get_entry(name)
    return _build_for_count(entry, model_args(entry, args, input_size=input_size,
                                              num_classes=num_classes))


def _build(entry, full: dict) -> nn.Module:
    try:
        return entry.fn(**full)
    except TypeError as exc:
        if "unexpected keyword argument" in str(exc):
            raise UserError(f"{entry.name}: {exc}") from None
        raise


_COUNT_CACHE: dict[tuple, Complexity] = {}


def count_model(name: str, args: dict | None = None, *, input_size: InputSize = (3, 32, 32),
                num_classes: int = 100) -> Complexity:
    """Count a registered model built with ``args``; cached per (model, args, input, classes).

    Built fast (see the module docstring); if counting the fast build fails for any reason
    other than an unsupported operator, the model is built and counted normally.
    """
    from mpbench.registry import get_entry

    entry = get_entry(name)
    input_size = tuple(int(s) for s in input_size)
    full = model_args(entry, args, input_size=input_size, num_classes=num_classes)
    key = (name, entry.fn, freeze(full), input_size)
    hit = _COUNT_CACHE.get(key)
    if hit is None:
        try:
            hit = count(_build_for_count(entry, full), input_size)
        except UnsupportedOpError as exc:
            raise UnsupportedOpError(f"{name}: {exc}") from None
        except Exception as exc:
            _log.debug("counting the fast build of %s failed (%s); retrying", name, exc)
            hit = count(_build(entry, full), input_size)
        _COUNT_CACHE[key] = hit
    return hit


# --------------------------------------------------------------------------- structure

@dataclass(frozen=True)
class ConvShape:
    """One ``nn.Conv2d`` as it ran: ``per_group`` input channels per group, ``out`` channels,
    and the input's spatial size."""

    name: str
    per_group: int
    out: int
    groups: int
    spatial: tuple[int, ...]


_LAYOUT_CACHE: dict[tuple, list[ConvShape]] = {}


def conv_layout(name: str, args: dict | None = None, *, input_size: InputSize = (3, 32, 32),
                num_classes: int = 100) -> list[ConvShape]:
    """Every 2-D convolution of a registered model that ran in one eval-mode forward at
    ``input_size``, in module order; cached. Budget matching checks these for degenerate
    structure (see :mod:`mpbench.complexity.matching`)."""
    from mpbench.registry import get_entry

    entry = get_entry(name)
    input_size = tuple(int(s) for s in input_size)
    full = model_args(entry, args, input_size=input_size, num_classes=num_classes)
    key = (name, entry.fn, freeze(full), input_size)
    if key not in _LAYOUT_CACHE:
        model = _build_for_count(entry, full).eval()
        seen: dict[str, tuple[int, ...]] = {}
        convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
        def hook(n: str):
            def record(module, inputs, output) -> None:  # None: leaves the output alone
                seen.setdefault(n, tuple(inputs[0].shape[2:]))
            return record

        hooks = [m.register_forward_hook(hook(n)) for n, m in convs.items()]
        threads = torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            with torch.no_grad():
                model(_example_input(model, input_size))
        finally:
            torch.set_num_threads(threads)
            for h in hooks:
                h.remove()
        _LAYOUT_CACHE[key] = [ConvShape(n, m.in_channels // m.groups, m.out_channels, m.groups,
                                        seen[n]) for n, m in convs.items() if n in seen]
    return _LAYOUT_CACHE[key]


# --------------------------------------------------------------------------- fast estimate

class _MacEstimator(TorchDispatchMode):
    """The convention above, applied to the aten ops an ordinary forward dispatches.

    No TorchScript trace, so roughly ten times cheaper than fvcore on deep models; it follows
    fvcore to within a fraction of a percent, and exactly for convolutions and matrix
    products. Only budget matching uses it, to steer its search; every number mpbench
    reports comes from :func:`count`.
    """

    def __init__(self):
        super().__init__()
        self.macs = 0
        aten = torch.ops.aten
        packets = lambda names: {getattr(aten, n) for n in names if hasattr(aten, n)}
        self.per_output = packets([op for ops in _ELEMENTWISE.values() for op in ops])
        self.per_input = packets([op for ops in _REDUCTIONS.values() for op in ops]
                                 + ["_adaptive_avg_pool2d", "adaptive_avg_pool2d"])
        self.pools = packets(["avg_pool1d", "avg_pool2d", "avg_pool3d"])
        self.batch_norm = packets(["_native_batch_norm_legit_no_training",
                                   "native_batch_norm", "_native_batch_norm_legit"])
        self.aten = aten

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        packet, aten = func.overloadpacket, self.aten
        first = out[0] if isinstance(out, (tuple, list)) else out
        if packet is aten.convolution:
            x, w, transposed = args[0], args[1], args[6]
            spatial = (x if transposed else first).shape[2:]
            self.macs += x.shape[0] * prod(w.shape) * prod(spatial)
        elif packet in (aten.mm, aten.bmm):
            self.macs += prod(args[0].shape) * args[1].shape[-1]
        elif packet in (aten.addmm, aten.baddbmm):
            self.macs += prod(args[1].shape) * args[2].shape[-1]
        elif packet in self.batch_norm:
            self.macs += args[0].numel() * (2 if args[1] is not None else 1)
        elif packet in self.per_output and isinstance(first, torch.Tensor):
            self.macs += first.numel()
        elif packet in self.per_input and isinstance(args[0], torch.Tensor):
            self.macs += args[0].numel()
        elif packet in self.pools:
            kernel = args[1] if isinstance(args[1], (list, tuple)) else [args[1]]
            area = prod(kernel) if len(kernel) > 1 else kernel[0] ** (first.dim() - 2)
            self.macs += first.numel() * area
        return out


_ESTIMATE_CACHE: dict[tuple, int] = {}


def estimate_model(name: str, args: dict | None = None, *,
                   input_size: InputSize = (3, 32, 32), num_classes: int = 100) -> int:
    """Approximate MACs of a registered model (see :class:`_MacEstimator`); cached."""
    from mpbench.registry import get_entry

    entry = get_entry(name)
    input_size = tuple(int(s) for s in input_size)
    full = model_args(entry, args, input_size=input_size, num_classes=num_classes)
    key = (name, entry.fn, freeze(full), input_size)
    if key not in _ESTIMATE_CACHE:
        threads = torch.get_num_threads()
        try:
            model = _build_for_count(entry, full).eval()
            torch.set_num_threads(1)
            with torch.no_grad(), _MacEstimator() as estimator:
                model(_example_input(model, input_size))
            macs = estimator.macs
        except Exception as exc:  # e.g. a forward that needs initialised weights: count it
            _log.debug("estimating %s failed (%s); counting instead", name, exc)
            macs = count_model(name, args, input_size=input_size, num_classes=num_classes).macs
        finally:
            torch.set_num_threads(threads)
        _ESTIMATE_CACHE[key] = macs
    return _ESTIMATE_CACHE[key]


_GENERATION = [0]  # bumped by clear_cache: results derived from counts (matches) key on it


def clear_cache() -> None:
    """Forget cached counts; anything derived from them keys on :func:`cache_generation`."""
    _COUNT_CACHE.clear()
    _ESTIMATE_CACHE.clear()
    _LAYOUT_CACHE.clear()
    _GENERATION[0] += 1


def cache_generation() -> int:
    """Changes whenever counts may change (a new op handle, a cleared cache).

    Matching caches its answers under this number, so it never has to reach into this
    module (nor this module into matching) to stay consistent.
    """
    return _GENERATION[0]


# --------------------------------------------------------------------------- formatting

def format_macs(macs: float) -> str:
    """``126.8M`` / ``5.25G`` style, always meaning multiply-accumulates."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(macs) >= scale:
            return f"{macs / scale:.4g}{unit}"
    return f"{macs:.0f}"


def format_params(params: float) -> str:
    return format_macs(params)
