"""Multi-path CIFAR ResNets with feature-dependent cross-connections (DESIGN.md §1).

A shared stem feeds P parallel copies of a CIFAR ResNet (the *paths*); before each block a
:class:`~mpbench.models.routing.CrossConnection` re-mixes the paths with gate values computed
from the block's input. Paths travel stacked along channels (``B x P·C x H x W``) so that the
path-wise layers are just timm's ``BasicBlock``/``Bottleneck`` built at P times the width,
with every convolution swapped for a :class:`PathConv2d` (block-diagonal over paths) and
batch norm over all P·C channels (which *is* per-path batch norm). Reusing timm's blocks
keeps the block maths, and the parameter names, identical to ``CifarResNet``'s; with
``paths=1`` (and ``route='none'``: a route with one path is refused, not rewritten) the model
is that network exactly, down to the weights a given seed draws.

``width`` is the per-path width of the first stage (stages double it; the shared stem has
width ``width`` too, so a single-path network of that width upcycles directly): the knob FLOP
matching turns. P paths of width w cost about P·w² per layer against w² for one path, so
``paths=4, width=8`` sits near a width-16 single path.
"""
import math
from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from mpbench.baselines.resnet import (BLOCKS, CifarResNet, ClassifierNet, cifar_stem,
                                      depth_to_layers, projection, stage_feature_info,
                                      stage_widths)
from mpbench.models.routing import (GATE_INITS, GRANULARITIES, NORMS, ROUTES, CrossConnection, Gate,
                                    create_gate)
from mpbench.registry import Knob, register_model

__all__ = ["MPResNet", "PathConv2d", "PathHeads", "load_single_path", "mp_resnet_by_depth",
           "mp_resnet_4stage", "PATH_CONV_IMPLS", "resolve_path_conv", "UPCYCLE_NOISE"]

PATH_CONV_IMPLS = ("auto", "grouped", "loop")
PLACEMENTS = ("every_block", "stage")
MERGES = ("concat", "mean_logits")


def resolve_path_conv(impl: str, device: torch.device) -> str:
    """``auto``: one grouped conv on CUDA, a loop of per-path convs elsewhere.

    ``benchmarks/path_conv.py`` (ResNet-20 scale, batch 128, one thread): on CPU the loop's
    training step took 0.58-1.0x the grouped one's (P = 2, 4, 8). On CUDA one kernel launch
    instead of P is the usual win for such narrow convolutions; rerun the benchmark with
    ``--device cuda`` to check a given GPU, and pin ``path_conv`` if it disagrees.
    """
    if impl == "auto":
        return "grouped" if device.type == "cuda" else "loop"
    return impl


class PathConv2d(nn.Conv2d):
    """P independent convolutions held as one grouped-conv weight ``(P·out, in, k, k)``.

    ``impl='grouped'`` runs one convolution with ``groups=P``; ``'loop'`` slices the same
    weight and runs P plain convolutions. The parameters are shared, so the two agree up to
    float rounding and ``impl`` can change at any time (see :meth:`MPResNet.set_path_conv`).
    ``auto`` is resolved (:func:`resolve_path_conv`) when ``impl`` is set and whenever the
    module moves (``.to()``, ``.cuda()``), into the plain attribute ``grouped`` that
    ``forward`` branches on: no device test inside ``forward``, so TorchScript and
    ``torch.fx`` see configuration, not data.
    """

    __jit_unused_properties__ = ["impl"]
    grouped: bool

    def __init__(self, paths: int, in_chs: int, out_chs: int, kernel_size, stride=1, padding=0,
                 dilation=1, impl: str = "auto", device=None, dtype=None):
        super().__init__(paths * in_chs, paths * out_chs, kernel_size, stride=stride,
                         padding=padding, dilation=dilation, groups=paths, bias=False,
                         device=device, dtype=dtype)
        self.paths = paths
        self.impl = impl

    @property
    def impl(self) -> str:
        return self._impl

    @impl.setter
    def impl(self, impl: str) -> None:
        if impl not in PATH_CONV_IMPLS:
            raise ValueError(f"path_conv must be one of {PATH_CONV_IMPLS}, got {impl!r}")
        self._impl = impl
        self._resolve()

    def _resolve(self) -> None:
        self.grouped = (self.paths == 1
                        or resolve_path_conv(self._impl, self.weight.device) == "grouped")

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        self._resolve()  # a move may change what ``auto`` means
        return out

    @classmethod
    @torch.no_grad()
    def from_conv(cls, conv: nn.Conv2d, paths: int, impl: str = "auto") -> "PathConv2d":
        """The path-wise version of a dense ``P·in -> P·out`` conv, holding the diagonal blocks
        of its weight. Built on the meta device, so it draws nothing from the RNG: with
        ``paths=1`` a network consumes random numbers exactly as ``CifarResNet`` does, and
        the same seed gives the same weights."""
        if conv.groups != 1 or conv.bias is not None:
            raise ValueError("path-wise blocks need dense, bias-free convolutions")
        i, o = conv.in_channels // paths, conv.out_channels // paths
        new = cls(paths, i, o, conv.kernel_size, conv.stride, conv.padding, conv.dilation, impl,
                  device="meta", dtype=conv.weight.dtype)
        new.weight = nn.Parameter(torch.cat([conv.weight[p * o:(p + 1) * o, p * i:(p + 1) * i]
                                             for p in range(paths)]))
        new._resolve()
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grouped:
            return self._conv_forward(x, self.weight, self.bias)
        ws = self.weight.chunk(self.paths, 0)
        xs = x.chunk(self.paths, 1)
        outs = []
        for p in range(self.paths):
            outs.append(F.conv2d(xs[p], ws[p], None, self.stride, self.padding, self.dilation))
        return torch.cat(outs, 1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, paths={self.paths}, impl={self.impl}"


class PathHeads(nn.Module):
    """``merge='mean_logits'``: one linear classifier per path, logits averaged over paths."""

    def __init__(self, paths: int, in_features: int, num_classes: int):
        super().__init__()
        self.paths = paths
        bound = 1 / math.sqrt(in_features)  # nn.Linear's default init, per path
        self.weight = nn.Parameter(torch.empty(paths, num_classes, in_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(paths, num_classes).uniform_(-bound, bound))

    def path_logits(self, x: torch.Tensor) -> torch.Tensor:
        """``B x P·C`` pooled features -> ``B x P x K`` per-path logits."""
        return torch.einsum("bpc,pkc->bpk", x.view(x.shape[0], self.paths, -1), self.weight) + self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.path_logits(x).mean(1)


def make_pathwise(module: nn.Module, paths: int, impl: str = "auto") -> nn.Module:
    """Swap every dense ``nn.Conv2d`` inside ``module`` for a same-shaped :class:`PathConv2d`."""
    for name, child in module.named_children():
        if type(child) is nn.Conv2d:
            setattr(module, name, PathConv2d.from_conv(child, paths, impl))
        else:
            make_pathwise(child, paths, impl)
    return module


def path_block(block: str, paths: int, in_chs: int, planes: int, stride: int,
               impl: str = "auto") -> nn.Module:
    """timm's ``block`` at P times the width, made path-wise (one block per path, stacked)."""
    cls = BLOCKS[block]
    out_chs = planes * cls.expansion
    down = projection(paths * in_chs, paths * out_chs, stride)
    return make_pathwise(cls(paths * in_chs, paths * planes, stride=stride, downsample=down),
                         paths, impl)


def init_weights(model: nn.Module) -> None:
    """As ``CifarResNet``'s init, but He fan-out counted per path (``out / groups``), so a
    path starts with the same weight scale as a single-path network of its width."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.out_channels // m.groups * math.prod(m.kernel_size)
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for m in model.modules():
        if hasattr(m, "zero_init_last"):
            m.zero_init_last()


class MPResNet(ClassifierNet):
    """Shared stem, P routed paths of residual stages, pooled paths merged by the head.

    Cross-connections sit before every block (``placement='every_block'``) or before the
    first block of each stage (``'stage'``), never before the very first block: there all
    paths hold the same stem output, so mixing could only rescale it.

    timm's contract comes from :class:`~mpbench.baselines.resnet.ClassifierNet`: features
    (``forward_features``, ``forward_intermediates``, ``features_only=True``, each stage's
    ``feature_info``) are the paths' maps concatenated along channels (``B x P·C x H x W``,
    path i in channels ``[i·C, (i+1)·C)``), after the stage's last block and before the next
    cross-connection; ``num_features`` = P·C is the pooled width ``forward_head(x,
    pre_logits=True)`` returns, for either ``merge``.
    """

    def __init__(self, block: str = "basic", layers: Sequence[int] = (3, 3, 3),
                 widths: Sequence[int] = (8, 16, 32), paths: int = 4, route: str = "fdcc",
                 norm: str = "softmax_dest", granularity: str = "scalar",
                 placement: str = "every_block", gate_reduction: float = 16,
                 temperature: float = 1.0, gate_init: str = "uniform", merge: str = "concat",
                 num_classes: int = 100, in_chans: int = 3, drop_rate: float = 0.0,
                 path_conv: str = "auto", global_pool: str = "avg"):
        super().__init__()
        _check("route", route, ROUTES), _check("norm", norm, NORMS)
        _check("granularity", granularity, GRANULARITIES), _check("placement", placement, PLACEMENTS)
        _check("gate_init", gate_init, GATE_INITS), _check("merge", merge, MERGES)
        _check("path_conv", path_conv, PATH_CONV_IMPLS)
        if paths < 1 or temperature <= 0 or gate_reduction <= 0:
            raise ValueError("need paths >= 1, temperature > 0 and gate_reduction > 0")
        if paths == 1 and route != "none":  # refused, not rewritten: config.json names the route
            raise ValueError(f"route: {route} needs paths >= 2 (one path has nothing to route; "
                             f"use route: none)")
        self.paths, self.num_classes = paths, num_classes
        self.route = route
        self.merge = merge if paths > 1 else "concat"  # one path: the two heads coincide
        gate_kw = dict(norm=norm, granularity=granularity, temperature=temperature,
                       gate_init=gate_init, gate_reduction=gate_reduction)

        self.stem = cifar_stem(in_chans, widths[0])
        stages, chs = [], widths[0]
        for s, (depth, planes) in enumerate(zip(layers, widths)):
            mods = OrderedDict()
            for k in range(depth):
                if self.route != "none" and (s, k) != (0, 0) and (placement == "every_block" or k == 0):
                    mods[f"route{k}"] = CrossConnection(create_gate(self.route, paths, chs, **gate_kw))
                mods[str(k)] = path_block(block, paths, chs, planes, 2 if s and not k else 1, path_conv)
                chs = planes * BLOCKS[block].expansion
            stages.append(nn.Sequential(mods))
        self.stages = nn.Sequential(*stages)
        self.path_features = chs
        self.num_features = paths * chs
        self.stage_info = stage_feature_info(
            [paths * w * BLOCKS[block].expansion for w in widths], [1] + [2] * (len(widths) - 1))
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.init_head(num_classes, global_pool)
        init_weights(self)

    def create_fc(self, num_classes: int) -> nn.Module:
        if num_classes > 0 and self.merge == "mean_logits":
            return PathHeads(self.paths, self.path_features, num_classes)
        return super().create_fc(num_classes)

    def to_paths(self, x: torch.Tensor) -> torch.Tensor:
        """The shared stem's output, copied into every path: ``B x C x H x W -> B x P·C x H x W``."""
        return x.unsqueeze(1).expand(-1, self.paths, -1, -1, -1).flatten(1, 2)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_paths(self.stem(x))

    def gates(self) -> dict[str, Gate]:
        """Gate modules by the name of their cross-connection (``stages.1.route0``)."""
        return {name.rsplit(".", 1)[0]: m for name, m in self.named_modules() if isinstance(m, Gate)}

    def set_path_conv(self, impl: str) -> None:
        """Switch every path-wise convolution between ``auto``, ``grouped`` and ``loop``."""
        _check("path_conv", impl, PATH_CONV_IMPLS)
        for m in self.modules():
            if isinstance(m, PathConv2d):
                m.impl = impl


def _check(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")


# Default relative noise on upcycled path convolutions. Identical paths behind neutral gates
# get identical gradients, so every α[i, j] gets the same one and the gates never move; 1% of
# each weight's std breaks the tie while leaving the function within about 1% of the
# single-path one (a perturbation well inside what one SGD step does at lr 0.01-0.1).
UPCYCLE_NOISE = 1e-2


@torch.no_grad()
def load_single_path(mp_model: MPResNet, single_model: CifarResNet,
                     noise_std: float = UPCYCLE_NOISE,
                     generator: torch.Generator | None = None) -> MPResNet:
    """Upcycle: copy a single-path ``CifarResNet`` into every path of ``mp_model``.

    The shared stem gets the stem; every path gets the single network's stages (weights and
    BN statistics); the concat head gets the
    classifier divided by P (so it averages identical paths), per-path heads get a copy each;
    every gate is set input-independent with unit column sums (``Gate.set_neutral``), so
    the mix of identical paths is the identity. At ``noise_std=0`` the result computes the
    single-path function exactly (up to float rounding). Identical paths get identical
    gradients and would never diverge (nor would a routed model's gates move), so by default
    ``noise_std = UPCYCLE_NOISE`` adds Gaussian noise of that many standard deviations of each
    path-wise conv weight to break the symmetry; pass 0 for the exact copy.
    """
    P = mp_model.paths
    src, dst = single_model.state_dict(), mp_model.state_dict()
    gate_keys = {k for k in dst if ".route" in k}
    for key, value in src.items():
        if key.startswith("fc."):
            continue
        if key not in dst:
            raise ValueError(f"upcycling: {key} has no counterpart in the multi-path model")
        shared = value.dim() == 0 or not key.startswith("stages.")  # stem, BN counters
        tiled = value if shared else value.repeat(P, *([1] * (value.dim() - 1)))
        if dst[key].shape != tiled.shape:
            raise ValueError(f"upcycling: {key} is {tuple(value.shape)}, the multi-path model "
                             f"needs {tuple(dst[key].shape)} for {P} paths (same depth and width?)")
        dst[key].copy_(tiled)
    left = set(dst) - set(src) - gate_keys
    if left - {k for k in dst if k.startswith("fc.")}:
        raise ValueError(f"upcycling: multi-path parameters not in the single-path model: {sorted(left)[:3]}")
    w, b = single_model.fc.weight, single_model.fc.bias
    if isinstance(mp_model.fc, PathHeads):
        mp_model.fc.weight.copy_(w.expand(P, -1, -1))
        mp_model.fc.bias.copy_(b.expand(P, -1))
    else:
        mp_model.fc.weight.copy_(w.repeat(1, P) / P)
        mp_model.fc.bias.copy_(b)
    for gate in mp_model.gates().values():
        gate.set_neutral()
    if noise_std > 0:
        for m in mp_model.modules():
            if isinstance(m, PathConv2d):
                noise = torch.randn(m.weight.shape, generator=generator, device="cpu")
                m.weight.add_(noise.to(m.weight) * noise_std * m.weight.std())
    return mp_model


# --------------------------------------------------------------------------- builders

def bottleneck_layers(depth: int) -> tuple[int, int, int]:
    if (depth - 2) % 9:
        raise ValueError(f"CIFAR bottleneck ResNet depth must be 9n+2, got {depth}")
    n = (depth - 2) // 9
    return (n, n, n)


def mp_resnet_by_depth(depth: int = 20, width: float = 8, paths: int = 4, block: str = "basic",
                       num_classes: int = 100, **kwargs) -> MPResNet:
    """3-stage CIFAR multi-path ResNet, depth 6n+2 (basic) or 9n+2 (bottleneck), per-path
    stage widths (w, 2w, 4w) rounded per stage."""
    layers = depth_to_layers(depth) if block == "basic" else bottleneck_layers(depth)
    return MPResNet(block, layers, stage_widths(width, 3), paths=paths,
                    num_classes=num_classes, **kwargs)


def mp_resnet_4stage(layers: Sequence[int] = (2, 2, 2, 2), width: float = 32, paths: int = 4,
                     block: str = "basic", num_classes: int = 100, **kwargs) -> MPResNet:
    """ResNet-18-like multi-path network with a CIFAR stem; per-path widths (w, 2w, 4w, 8w)
    rounded per stage."""
    return MPResNet(block, tuple(layers), stage_widths(width, 4), paths=paths,
                    num_classes=num_classes, **kwargs)


# A float per-path width, rounded per stage (as the single-path baselines do): at CIFAR scale
# one whole step moves MACs by ~2/w (25% at w = 8), which misses ±2% budgets; letting the
# stages round at different points gives steps of a few percent or less. Whole widths give
# exactly the (w, 2w, 4w) networks that upcycle from single-path ResNets.
WIDTH_KNOB = Knob("width", kind="float", low=2, high=512)
ROUTING_DEFAULTS = dict(norm="softmax_dest", granularity="scalar", placement="every_block",
                        gate_reduction=16, temperature=1.0, gate_init="uniform", merge="concat",
                        path_conv="auto")


def _register(builder, name: str, **args) -> None:
    register_model(builder, name=name, family="mp_resnet", knob=WIDTH_KNOB,
                   **{**ROUTING_DEFAULTS, **args})


# P paths of width w cost ~P·w² per layer: P=4 at w=8 and P=2 at w=11 sit near ResNet-20/56's
# width 16, P=4 at w=32 near ResNet-18's 64. FLOP matching refines these per budget.
for _depth in (20, 56):
    for _route in ROUTES:
        _register(mp_resnet_by_depth, f"mp_resnet{_depth}_p4_{_route}", depth=_depth, width=8,
                  paths=4, route=_route)
    _register(mp_resnet_by_depth, f"mp_resnet{_depth}_p2_fdcc", depth=_depth, width=11, paths=2,
              route="fdcc")
for _route in ("none", "fdcc"):
    _register(mp_resnet_4stage, f"mp_resnet18_p4_{_route}", layers=(2, 2, 2, 2), width=32,
              paths=4, route=_route)
_register(mp_resnet_by_depth, "mp_resnet_tiny", depth=8, width=4, paths=2, route="fdcc")
