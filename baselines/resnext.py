"""ResNeXt-29 (Xie et al., CVPR 2017), CIFAR form: grouped paths without routing.

The paper's CIFAR networks stack 3 bottleneck blocks in each of 3 stages (29 layers) with a
64-wide 3x3 stem; a "CxDd" variant has cardinality C and D channels per group in the first
stage's grouped 3x3 convolution (doubling per stage), and block outputs 256/512/1024. timm's
``Bottleneck`` computes exactly that middle width (``planes * base_width / 64 * cardinality``
with planes 64/128/256), so the CIFAR form is ``resnet_bottleneck29`` with timm's block.
ResNeXt-29 8x64d: 34.52M parameters, 5.40 GMACs at 100 classes.

The knob is ``base_width`` (the paper's "d"), which is how the paper itself scales ResNeXt.
In the paper's layout (``width=64``: stem 64, block outputs 256/512/1024) the 1x1
convolutions into the block outputs and the projection shortcuts do not shrink with d, so
ResNeXt-29 cannot go below about 0.11-0.13 GMACs. For small budgets the ``_w16`` variants use
the plain CIFAR ResNets' widths (stem 16, planes 16/32/64, block outputs 64/128/256):
``cifar_resnext29_8x8d_w16`` is 0.13 GMACs, about ResNet-56's cost.
"""
from mpbench.registry import Knob, register_model

from .resnet import CifarResNet, resnet_bottleneck29

__all__ = ["resnext29", "BASE_WIDTH_KNOB"]


def resnext29(cardinality: int = 8, base_width: float = 64, width: int = 64,
              num_classes: int = 100, **kwargs) -> CifarResNet:
    """ResNeXt-29 {cardinality}x{base_width}d from timm's Bottleneck with a CIFAR stem."""
    return resnet_bottleneck29("bottleneck", (3, 3, 3), width=width, cardinality=cardinality,
                               base_width=base_width, num_classes=num_classes, **kwargs)


# A float: stage i gets round(d * 2**i) channels per group, so fractional d moves the stages
# one at a time and matching lands within a few percent even at small budgets.
BASE_WIDTH_KNOB = Knob("base_width", kind="float", low=1, high=256)

for _c, _d in ((2, 64), (4, 16), (4, 32), (8, 16), (8, 64), (16, 64)):
    register_model(resnext29, name=f"cifar_resnext29_{_c}x{_d}d", family="resnext",
                   knob=BASE_WIDTH_KNOB, cardinality=_c, base_width=_d, width=64)
register_model(resnext29, name="cifar_resnext29_8x8d_w16", family="resnext",
               knob=BASE_WIDTH_KNOB, cardinality=8, base_width=8, width=16)
