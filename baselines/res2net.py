"""Res2Net (Gao et al., TPAMI 2019), CIFAR form: multi-scale hierarchical residual splits.

timm's ``Bottle2neck`` splits the bottleneck's middle features into ``scale`` groups of
``width`` channels; each group's 3x3 convolution also receives the previous group's output,
so one block sees several receptive-field sizes. The paper's CIFAR model is Res2NeXt-29
6c x 24w x 4s (ResNeXt-29 layout, cardinality 6, 24 channels per group, scale 4); a
cardinality-1 Res2Net-29 26w x 4s mirrors the ImageNet Res2Net-50 setting; ``_w16`` variants
use the plain CIFAR ResNets' widths for small budgets (see ``resnet_bottleneck29``). Knob:
``base_width`` (channels per group and scale at stage 1).
"""
import torch.nn as nn
from timm.models.res2net import Bottle2neck

from mpbench.registry import Knob, register_model

from .resnet import CifarResNet, resnet_bottleneck29

__all__ = ["res2net29"]


def res2net29(cardinality: int = 1, base_width: float = 26, scale: int = 4, width: int = 64,
              num_classes: int = 100, **kwargs) -> CifarResNet:
    """Res2Net(eXt)-29 {cardinality}c x {base_width}w x {scale}s with a CIFAR stem."""
    # Bottle2neck's norm_layer defaults to None (timm's ResNet always passes one).
    return resnet_bottleneck29(Bottle2neck, (3, 3, 3), width=width, cardinality=cardinality,
                               base_width=base_width, num_classes=num_classes, scale=scale,
                               norm_layer=nn.BatchNorm2d, **kwargs)


_KNOB = Knob("base_width", kind="float", low=1, high=256)  # round(d * 2**i) per stage
for _c, _d, _s in ((1, 26, 4), (1, 48, 2), (6, 24, 4)):
    _kind = "res2next" if _c > 1 else "res2net"
    _card = f"{_c}cx" if _c > 1 else ""
    register_model(res2net29, name=f"cifar_{_kind}29_{_card}{_d}wx{_s}s", family="res2net",
                   knob=_KNOB, cardinality=_c, base_width=_d, scale=_s, width=64)
register_model(res2net29, name="cifar_res2net29_16wx4s_w16", family="res2net", knob=_KNOB,
               cardinality=1, base_width=16, scale=4, width=16)
