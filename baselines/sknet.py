"""Selective Kernel networks (Li et al., CVPR 2019), CIFAR forms: adaptive receptive fields.

Each block's 3x3 convolution becomes two branches (3x3, and 3x3 dilated 2 standing in for
5x5) fused by a softmax attention over the branches, computed from the pooled sum through a
bottleneck of ``d = max(C / r, L)`` units, r = 16, L = 32 (the paper's formula). timm's
``SelectiveKernel`` takes a fixed ``rd_ratio``/``rd_divisor``; the blocks below pass each
block's own ``rd_channels`` so the paper's d holds at every width. As in the paper, both
branches see the whole input (``split_input=False``; timm's ImageNet SK-ResNets split it).

- ``cifar_skresnet20/56``, ``cifar_skresnet18``: timm's ``SelectiveKernelBasic`` in the CIFAR
  ResNet layouts (knob ``width``, a float rounded per stage as in ``resnet.stage_widths``).
- ``cifar_skresnext29_16x32d``: the paper's CIFAR SKNet-29 as described (ResNeXt-29 16x32d
  with SK grouped convolutions, timm's ``SelectiveKernelBottleneck``; knob ``base_width``):
  37.6M parameters, 5.43 GMACs here. Its size has not been checked against the paper's table,
  so it is not pinned.
"""
import math

from timm.models.sknet import SelectiveKernelBasic, SelectiveKernelBottleneck

from mpbench.registry import Knob, register_model

from .resnet import CifarResNet, resnet_bottleneck29, resnet_by_depth, resnet_4stage

__all__ = ["SKBasic", "SKBottleneck", "sk_attn_channels", "skresnet_by_depth",
           "skresnet_4stage", "skresnext29"]


def sk_attn_channels(channels: int, reduction: int = 16, min_channels: int = 32) -> int:
    """The SK paper's attention width d = max(C / r, L)."""
    return max(channels // reduction, min_channels)


def _sk_kwargs(out_chs: int, sk_kwargs: dict | None, split_input: bool) -> dict:
    return {"split_input": split_input, "rd_channels": sk_attn_channels(out_chs),
            **(sk_kwargs or {})}


class SKBasic(SelectiveKernelBasic):
    """timm's SK basic block with the paper's per-block attention width."""

    def __init__(self, inplanes: int, planes: int, *args, sk_kwargs: dict | None = None,
                 split_input: bool = False, **kwargs):
        super().__init__(inplanes, planes, *args,
                         sk_kwargs=_sk_kwargs(planes, sk_kwargs, split_input), **kwargs)


class SKBottleneck(SelectiveKernelBottleneck):
    """timm's SK bottleneck block with the paper's per-block attention width."""

    def __init__(self, inplanes: int, planes: int, *args, cardinality: int = 1,
                 base_width: int = 64, sk_kwargs: dict | None = None, split_input: bool = False,
                 **kwargs):
        width = int(math.floor(planes * (base_width / 64)) * cardinality)
        super().__init__(inplanes, planes, *args, cardinality=cardinality, base_width=base_width,
                         sk_kwargs=_sk_kwargs(width, sk_kwargs, split_input), **kwargs)


def skresnet_by_depth(depth: int = 56, width: float = 16, num_classes: int = 100,
                      **kwargs) -> CifarResNet:
    """3-stage CIFAR ResNet of depth 6n+2 with SK basic blocks."""
    return resnet_by_depth(depth, width, num_classes=num_classes, block=SKBasic, **kwargs)


def skresnet_4stage(layers=(2, 2, 2, 2), width: float = 64, num_classes: int = 100,
                    **kwargs) -> CifarResNet:
    """SK-ResNet-18/34 layout with a CIFAR stem."""
    return resnet_4stage(layers, width, num_classes=num_classes, block=SKBasic, **kwargs)


def skresnext29(cardinality: int = 16, base_width: float = 32, width: int = 64,
                num_classes: int = 100, **kwargs) -> CifarResNet:
    """SKNet-29: ResNeXt-29 with SK grouped convolutions (the SK paper's CIFAR model)."""
    return resnet_bottleneck29(SKBottleneck, (3, 3, 3), width=width, cardinality=cardinality,
                               base_width=base_width, num_classes=num_classes, **kwargs)


for _d in (20, 56):
    register_model(skresnet_by_depth, name=f"cifar_skresnet{_d}", family="sk_resnet",
                   knob=Knob("width", kind="float", low=2, high=256), depth=_d, width=16)
register_model(skresnet_4stage, name="cifar_skresnet18", family="sk_resnet",
               knob=Knob("width", kind="float", low=4, high=256), layers=(2, 2, 2, 2),
               width=64)
register_model(skresnext29, name="cifar_skresnext29_16x32d", family="sk_resnet",
               knob=Knob("base_width", kind="float", low=1, high=256), cardinality=16,
               base_width=32, width=64)
