"""Multi-path ResNet-50 shapes: the ImageNet stem and bottleneck stages (DESIGN.md §9).

:class:`MPResNetImageNet` is :class:`~mpbench.models.mp_resnet.MPResNet` (every routing knob,
path-wise convolutions, merge heads) with timm's ImageNet stem: 7x7 stride-2 conv + BN + ReLU
+ 3x3 stride-2 max-pool, shared by the paths, of width ``width`` (the per-path width of the
first stage; stage planes (w, 2w, 4w, 8w), bottleneck outputs 4x that). With ``paths=1,
route='none', width=64`` it is ResNet-50 (25,557,032 parameters at 1000 classes) and
upcycles from a timm ``resnet50`` state dict (names conv1/bn1/layer1..4/fc, see
:func:`mpbench.training.init.single_from_state`).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch.nn as nn

from mpbench.baselines.resnet import CifarResNet, stage_widths
from mpbench.models.mp_resnet import ROUTING_DEFAULTS, WIDTH_KNOB, MPResNet
from mpbench.models.routing import ROUTES
from mpbench.registry import register_model

__all__ = ["MPResNetImageNet", "imagenet_stem", "mp_resnet_imagenet", "single_path_imagenet"]


def imagenet_stem(in_chans: int, width: int) -> nn.Sequential:
    """timm's ResNet stem (``conv1``, ``bn1``, ``act1``, ``maxpool``) as ``stem.0..3``."""
    return nn.Sequential(nn.Conv2d(in_chans, width, 7, stride=2, padding=3, bias=False),
                         nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                         nn.MaxPool2d(3, stride=2, padding=1))


def _init_stem(stem: nn.Module) -> None:
    for m in stem.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.out_channels * math.prod(m.kernel_size)
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class MPResNetImageNet(MPResNet):
    """``MPResNet`` with the ImageNet stem; defaults: ResNet-50 layout, 1000 classes."""

    def __init__(self, block: str = "bottleneck", layers: Sequence[int] = (3, 4, 6, 3),
                 widths: Sequence[int] = (64, 128, 256, 512), num_classes: int = 1000,
                 in_chans: int = 3, **kwargs):
        super().__init__(block, layers, widths, num_classes=num_classes, in_chans=in_chans,
                         **kwargs)
        self.stem = imagenet_stem(in_chans, widths[0])
        _init_stem(self.stem)


def single_path_imagenet(block: str, layers: Sequence[int], widths: Sequence[int],
                         stem_width: int, num_classes: int = 1000,
                         in_chans: int = 3) -> CifarResNet:
    """The single-path network an ImageNet-stem multi-path net reduces to (upcycling source)."""
    model = CifarResNet(block, layers, widths, stem_width=stem_width, num_classes=num_classes,
                        in_chans=in_chans)
    model.stem = imagenet_stem(in_chans, stem_width)
    _init_stem(model.stem)
    return model


def mp_resnet_imagenet(layers: Sequence[int] = (3, 4, 6, 3), width: float = 32, paths: int = 4,
                       block: str = "bottleneck", num_classes: int = 1000,
                       **kwargs) -> MPResNetImageNet:
    """Multi-path ResNet-50-shaped network; per-path stage widths (w, 2w, 4w, 8w) rounded per
    stage (a float ``width`` is the FLOP-matching knob)."""
    return MPResNetImageNet(block, tuple(layers), stage_widths(width, 4), paths=paths,
                            num_classes=num_classes, **kwargs)


def _register(name: str, **args) -> None:
    register_model(mp_resnet_imagenet, name=name, family="mp_resnet_imagenet", knob=WIDTH_KNOB,
                   input_size=(3, 224, 224),
                   **{**ROUTING_DEFAULTS, "layers": (3, 4, 6, 3), **args})


# P paths of width w cost ~P·w²: P=4 at w=32 and P=2 at w=45 sit near ResNet-50's 64.
for _route in ROUTES:
    _register(f"mp_resnet50_p4_{_route}", width=32, paths=4, route=_route)
_register("mp_resnet50_p2_fdcc", width=45, paths=2, route="fdcc")
