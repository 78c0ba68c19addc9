"""CIFAR-form ResNets built from timm's residual blocks.

timm's ``ResNet`` is ImageNet-shaped (stride-2 7x7 stem, max-pool, four hard-wired stages),
which costs about 20 points of CIFAR-100 accuracy. The CIFAR form keeps timm's blocks but
uses a 3x3 stride-1 stem, no max-pool and any number of stages. Shortcuts that change shape
are 1x1 conv + BN projections (option B), which gives the published parameter counts
(ResNet-56: 861,620 at 100 classes).
"""
import math
from typing import Sequence

import torch
import torch.nn as nn
from timm.layers import SelectAdaptivePool2d, create_attn
from timm.models._features import feature_take_indices
from timm.models.resnet import BasicBlock, Bottleneck

from mpbench.registry import Knob, register_model

BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}
DEPTHS_3STAGE = (8, 14, 20, 26, 32, 44, 56, 74, 110)  # 6n + 2, basic blocks


def projection(in_chs: int, out_chs: int, stride: int) -> nn.Module | None:
    """1x1 conv + BN shortcut where a block changes shape (None: identity)."""
    if stride == 1 and in_chs == out_chs:
        return None
    return nn.Sequential(nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False),
                         nn.BatchNorm2d(out_chs))


def make_stage(block: type, in_chs: int, planes: int, depth: int, stride: int,
               **block_kwargs) -> tuple[nn.Sequential, int]:
    """``depth`` blocks of timm's ``block``; the first one strides and projects."""
    out_chs = planes * block.expansion
    blocks = []
    for i in range(depth):
        s = stride if i == 0 else 1
        blocks.append(block(in_chs, planes, stride=s, downsample=projection(in_chs, out_chs, s),
                            **block_kwargs))
        in_chs = out_chs
    return nn.Sequential(*blocks), out_chs


def cifar_stem(in_chans: int, width: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_chans, width, 3, padding=1, bias=False),
                         nn.BatchNorm2d(width), nn.ReLU(inplace=True))


class ClassifierNet(nn.Module):
    """timm's model contract over ``stem``, ``stages`` (one ``nn.Sequential`` entry per
    stage), ``global_pool``, ``drop`` and ``fc``, for every CIFAR-form model here.

    Subclasses build those modules and set ``num_classes``, ``num_features`` (=
    ``head_hidden_size``, the pooled width the classifier sees) and ``stage_info`` (one
    ``dict(num_chs, reduction, module)`` per stage, reductions counted from the stem's output;
    ``feature_info`` adds the stem's, or set ``feature_info`` itself); they may override
    :meth:`forward_stem` (what runs before the stages) and :meth:`forward_norm` (after
    them, e.g. a pre-activation network's final BN-ReLU). This gives what timm's models
    offer: ``forward_features``/``forward_head(x, pre_logits=)``, ``reset_classifier
    (num_classes, global_pool=None)`` (``0`` removes the classifier, ``''`` the pooling),
    ``forward_intermediates`` and ``prune_intermediate_layers`` (so timm's
    ``features_only=True`` works through its ``FeatureGetterNet``).
    """

    num_classes: int
    num_features: int
    head_hidden_size: int
    __jit_unused_properties__ = ["feature_info"]

    @property
    def feature_info(self) -> list[dict]:
        """``stage_info`` with the stem's downsampling folded into every ``reduction`` (read
        off ``stem`` each time, so a subclass may swap in another stem, e.g. ImageNet's)."""
        if "_feature_info" in self.__dict__:
            return self.__dict__["_feature_info"]
        r = stem_reduction(self.stem)
        return [dict(info, reduction=info["reduction"] * r) for info in self.stage_info]

    @feature_info.setter
    def feature_info(self, info: list[dict]) -> None:
        self.__dict__["_feature_info"] = info

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x)

    def forward_norm(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_norm(self.stages(self.forward_stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.global_pool(x))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def create_fc(self, num_classes: int) -> nn.Module:
        """The classifier for ``num_classes`` (``nn.Identity`` for 0) over ``num_features``."""
        return nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def init_head(self, num_classes: int, global_pool: str = "avg") -> None:
        """Set ``global_pool`` and ``fc`` (and the head's attributes): for ``__init__``."""
        if not global_pool and num_classes > 0:
            raise ValueError("global_pool='' (no pooling) needs num_classes=0 (no classifier)")
        self.num_classes = num_classes
        self.head_hidden_size = self.num_features
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=bool(global_pool))
        self.fc = self.create_fc(num_classes)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new classifier for ``num_classes`` (0: none, ``forward`` gives pooled features);
        ``global_pool`` ('avg', 'max', ..., '' for none) replaces the pooling when given."""
        pool = self.global_pool.pool_type if global_pool is None else global_pool
        self.init_head(num_classes, pool)

    def forward_intermediates(
        self, x: torch.Tensor, indices: int | list[int] | None = None, norm: bool = False,
        stop_early: bool = False, output_fmt: str = "NCHW", intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Stage outputs (timm's convention): ``indices`` None for all stages, an int for the
        last n, or a list; ``norm`` applies :meth:`forward_norm` to the last stage's."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take, max_index = feature_take_indices(len(self.stages), indices)
        last = len(self.stages) - 1
        intermediates = []
        x = self.forward_stem(x)
        stages = self.stages[:max_index + 1] if stop_early else self.stages
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take:
                intermediates.append(self.forward_norm(x) if norm and i == last else x)
        if intermediates_only:
            return intermediates
        return self.forward_norm(x), intermediates

    def prune_intermediate_layers(self, indices: int | list[int] | None = None,
                                  prune_norm: bool = False, prune_head: bool = True) -> list[int]:
        """Drop the stages after the last of ``indices`` (and the classifier); returns the
        absolute indices (timm's ``FeatureGetterNet`` calls this)."""
        take, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[:max_index + 1]
        if prune_norm or max_index < len(self.feature_info) - 1:
            self.prune_norm()
        if prune_head:
            self.reset_classifier(0, "")
        return take

    def prune_norm(self) -> None:
        """Remove what :meth:`forward_norm` applies (nothing here)."""


def stem_reduction(stem: nn.Module) -> int:
    """How much a (sequential) stem downsamples: the product of its convs' and pools' strides."""
    r = 1
    for m in stem.modules():
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            stride = m.stride if isinstance(m.stride, int) else m.stride[0]
            r *= int(stride)
    return r


def stage_feature_info(channels: Sequence[int], strides: Sequence[int],
                       stem_reduction: int = 1) -> list[dict]:
    """timm's ``feature_info``: one ``dict(num_chs, reduction, module='stages.i')`` a stage."""
    info, reduction = [], stem_reduction
    for i, (chs, stride) in enumerate(zip(channels, strides)):
        reduction *= stride
        info.append(dict(num_chs=int(chs), reduction=reduction, module=f"stages.{i}"))
    return info


class CifarResNet(ClassifierNet):
    """Stem, strided stages of timm blocks, global pooling, one linear classifier.

    ``block`` is a name in ``BLOCKS`` or any timm-style block class (``expansion``, the
    ``(inplanes, planes, stride, downsample, cardinality, base_width, ...)`` signature), so the
    attentive families reuse this class with timm's SK, ResNeSt and Res2Net blocks.
    Extra keyword arguments go to every block; ``stage_kwargs[i]`` updates them for stage i.
    """

    def __init__(self, block: str | type = "basic", layers: Sequence[int] = (9, 9, 9),
                 widths: Sequence[int] = (16, 32, 64), stem_width: int | None = None,
                 num_classes: int = 100, in_chans: int = 3, drop_rate: float = 0.0,
                 cardinality: int = 1, base_width: float = 64, attn_layer: str | None = None,
                 stage_kwargs: Sequence[dict] | None = None, global_pool: str = "avg",
                 **block_kwargs):
        super().__init__()
        block_cls = BLOCKS[block] if isinstance(block, str) else block
        stem_width = stem_width or widths[0]
        self.stem = cifar_stem(in_chans, stem_width)
        stages, chs, out_chs = [], stem_width, []
        extra = dict(cardinality=cardinality, base_width=base_width, **block_kwargs)
        if attn_layer is not None:
            extra["attn_layer"] = (attn_layer if callable(attn_layer)
                                   else create_attn_factory(attn_layer))
        for i, (depth, planes) in enumerate(zip(layers, widths)):
            kw = {**extra, **(stage_kwargs[i] if stage_kwargs else {})}
            stage, chs = make_stage(block_cls, chs, planes, depth, 1 if i == 0 else 2, **kw)
            stages.append(stage)
            out_chs.append(chs)
        self.stages = nn.Sequential(*stages)
        self.num_features = chs
        self.stage_info = stage_feature_info(out_chs, [1] + [2] * (len(out_chs) - 1))
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.init_head(num_classes, global_pool)
        init_weights(self)



def create_attn_factory(name: str):
    """timm blocks take an attention *class*; wrap timm's factory so names work too."""
    def factory(channels: int, **kwargs):
        return create_attn(name, channels, **kwargs)
    return factory


def init_weights(model: nn.Module) -> None:
    """He init for convs, unit BN, and zero-gamma on each residual branch's last BN."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for m in model.modules():
        if hasattr(m, "zero_init_last"):
            m.zero_init_last()


def depth_to_layers(depth: int) -> tuple[int, int, int]:
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 (basic blocks), got {depth}")
    n = (depth - 2) // 6
    return (n, n, n)


def stage_widths(width: float, stages: int) -> tuple[int, ...]:
    """(w, 2w, 4w, ...) rounded per stage, so a fractional width is a finer FLOP knob.

    With whole-number widths, consecutive widths near w = 9 differ by ~20% in MACs and a ±2%
    budget is usually unreachable; rounding each stage separately gives steps of ~1-2%.
    """
    return tuple(max(1, round(width * 2 ** i)) for i in range(stages))


def resnet_by_depth(depth: int = 56, width: float = 16, num_classes: int = 100,
                    block: str | type = "basic", **kwargs) -> CifarResNet:
    """3-stage CIFAR ResNet of depth 6n+2 (two-conv blocks) with stage widths (w, 2w, 4w)."""
    return CifarResNet(block, depth_to_layers(depth), stage_widths(width, 3),
                       num_classes=num_classes, **kwargs)


def resnet_4stage(layers: Sequence[int] = (2, 2, 2, 2), width: float = 64,
                  num_classes: int = 100, block: str | type = "basic", **kwargs) -> CifarResNet:
    """ResNet-18/34 layout with a CIFAR stem; stage widths (w, 2w, 4w, 8w)."""
    return CifarResNet(block, tuple(layers), stage_widths(width, 4), num_classes=num_classes,
                       **kwargs)


def resnet_bottleneck29(block: str | type = "bottleneck", layers: Sequence[int] = (3, 3, 3),
                        width: int = 64, cardinality: int = 1, base_width: float = 64,
                        num_classes: int = 100, group_multiple: int = 1,
                        **kwargs) -> CifarResNet:
    """The 3-stage bottleneck layout of the CIFAR ResNeXt-29 (3 blocks a stage, 9 x 3 + 2 = 29).

    Stage planes (w, 2w, 4w), block outputs 4x that, and a w-wide stem; w = 64 is the ResNeXt
    paper's CIFAR layout, w = 16 the plain CIFAR ResNets' widths (for small budgets).

    ``base_width`` is the paper's "d": channels per group in the first stage's grouped 3x3
    convolution, whatever w is; stage i has ``round(d * 2**i)`` (rounded to a multiple of
    ``group_multiple``, at least one multiple). A fractional d is thus a fine FLOP knob:
    rounding, unlike timm's floor, makes the stages change at *different* values of d, so
    MACs rise in small steps instead of jumping at every whole d. timm's blocks define base
    width relative to 64 planes, so each stage's value is converted; w must be a power of
    two for that conversion to be exact in floating point. Integer d gives timm's widths.
    Shared by the ResNeXt, SK-ResNeXt, ResNeSt and Res2Net CIFAR forms.
    """
    if width < 1 or width & (width - 1):
        raise ValueError(f"bottleneck layout width must be a power of two, got {width}")
    if base_width < 1:
        raise ValueError(f"base_width must be at least 1, got {base_width}")
    m = group_multiple
    per_group = [max(m, math.floor(base_width * 2 ** i / m + 0.5) * m)
                 for i in range(len(layers))]
    stage_kwargs = [{"base_width": g * 64 / (width * 2 ** i)} for i, g in enumerate(per_group)]
    return CifarResNet(block, tuple(layers), tuple(width * 2 ** i for i in range(len(layers))),
                       stem_width=width, cardinality=cardinality, stage_kwargs=stage_kwargs,
                       num_classes=num_classes, **kwargs)


# Depth steps are 6-75% apart in MACs: after the nearest depth, matching adjusts the base
# width (a float, rounded per stage) by at most -20%/+25% to land within tolerance.
_DEPTH_KNOB = Knob("depth", kind="choice", values=DEPTHS_3STAGE, adjust="width")
for _d in (20, 32, 44, 56, 110):
    register_model(resnet_by_depth, name=f"cifar_resnet{_d}", family="resnet", knob=_DEPTH_KNOB,
                   depth=_d, width=16)

# Float: stage widths are rounded per stage (see stage_widths); steps of 8 would leave 25%
# gaps in MACs at width 64, too coarse to meet a budget within a few percent.
_WIDTH_KNOB = Knob("width", kind="float", low=4, high=256)
register_model(resnet_4stage, name="cifar_resnet18", family="resnet4", knob=_WIDTH_KNOB,
               layers=(2, 2, 2, 2), width=64)
register_model(resnet_4stage, name="cifar_resnet34", family="resnet4", knob=_WIDTH_KNOB,
               layers=(3, 4, 6, 3), width=64)
register_model(resnet_by_depth, name="cifar_resnet_tiny", family="resnet",
               knob=Knob("width", kind="float", low=2, high=64), depth=8, width=8)
