"""SE-ResNets (Hu et al., CVPR 2018), CIFAR forms: channel re-weighting.

A squeeze-and-excitation module after each residual branch's last BN: global pooling, FC to
``C // r`` units, ReLU, FC back to C, sigmoid gate (both FCs with bias). The SE paper uses
r = 16 and a reduced width of exactly ``C / r``. timm's ``SEModule`` rounds the reduced width up
to a multiple of 8 (``rd_divisor=8``), which for CIFAR widths 16/32/64 gives 8 hidden units
instead of 1/2/4 and makes SE-ResNet-56 0.879M parameters; here the reduced width is passed
explicitly (``channels // reduction``, at least 1), so SE-ResNet-56 has the paper's
861,620 + 9 x (49 + 162 + 580) = 868,739 parameters at 100 classes.

Knob: ``width`` (stage-1 channels; stages are w, 2w, 4w or w..8w), a float whose stage widths
are rounded per stage (``resnet.stage_widths``) so budgets can be met within a few percent.
"""
from functools import partial

import torch.nn as nn
from timm.layers import SEModule

from mpbench.registry import Knob, register_model

from .resnet import CifarResNet, resnet_4stage, resnet_by_depth

__all__ = ["se_layer", "se_resnet_by_depth", "se_resnet_4stage"]


def _se(channels: int, reduction: int = 16, **kwargs) -> nn.Module:
    return SEModule(channels, rd_channels=max(1, channels // reduction), **kwargs)


def se_layer(reduction: int = 16):
    """An ``attn_layer`` for timm blocks: SE with the paper's unrounded ``C // reduction``."""
    return partial(_se, reduction=reduction)


def se_resnet_by_depth(depth: int = 56, width: float = 16, reduction: int = 16,
                       num_classes: int = 100, **kwargs) -> CifarResNet:
    """3-stage CIFAR SE-ResNet of depth 6n+2 (the SE paper's CIFAR ResNet-110/164 style)."""
    return resnet_by_depth(depth, width, num_classes=num_classes,
                           attn_layer=se_layer(reduction), **kwargs)


def se_resnet_4stage(layers=(2, 2, 2, 2), width: float = 64, reduction: int = 16,
                     num_classes: int = 100, **kwargs) -> CifarResNet:
    """SE-ResNet-18/34 layout with a CIFAR stem."""
    return resnet_4stage(layers, width, num_classes=num_classes,
                         attn_layer=se_layer(reduction), **kwargs)


WIDTH_KNOB_3STAGE = Knob("width", kind="float", low=2, high=256)
WIDTH_KNOB_4STAGE = Knob("width", kind="float", low=4, high=256)

for _d in (20, 56, 110):
    register_model(se_resnet_by_depth, name=f"cifar_se_resnet{_d}", family="se_resnet",
                   knob=WIDTH_KNOB_3STAGE, depth=_d, width=16, reduction=16)
register_model(se_resnet_4stage, name="cifar_se_resnet18", family="se_resnet",
               knob=WIDTH_KNOB_4STAGE, layers=(2, 2, 2, 2), width=64, reduction=16)
register_model(se_resnet_4stage, name="cifar_se_resnet34", family="se_resnet",
               knob=WIDTH_KNOB_4STAGE, layers=(3, 4, 6, 3), width=64, reduction=16)
