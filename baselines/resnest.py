"""ResNeSt (Zhang et al., 2020), CIFAR form: split attention across radix groups.

timm's ``ResNestBottleneck`` replaces the bottleneck's 3x3 convolution by a split-attention
convolution (``radix`` feature-map groups per cardinal group, re-weighted by a softmax over the
radix computed from their pooled sum) and, with ``avd=True`` as in the paper's models, moves
the stride to a 3x3 average pool after it. The ResNeSt paper has no CIFAR model, so the CIFAR
form uses the ResNeXt-29 layout (3 bottleneck blocks a stage, planes 64/128/256, 3x3 stride-1
stem, 1x1 conv + BN projections) with ResNeSt's own "RsCxWd" settings, e.g. 2s1x64d as in
ResNeSt-50, and ``_w16`` variants with the plain CIFAR ResNets' widths for small budgets
(see ``resnet_bottleneck29``).

Knob: ``base_width`` (channels per cardinal group at stage 1), a float. The split-attention
convolution has ``radix`` groups per cardinal group, so each stage's channels per cardinal
group are rounded to a multiple of ``radix`` (``group_multiple``); widths that are multiples
of ``radix``, such as the registered variants', are unchanged.
"""
from timm.models.resnest import ResNestBottleneck

from mpbench.registry import Knob, register_model

from .resnet import CifarResNet, resnet_bottleneck29

__all__ = ["resnest29"]


def resnest29(radix: int = 2, cardinality: int = 1, base_width: float = 64, width: int = 64,
              avd: bool = True, num_classes: int = 100, **kwargs) -> CifarResNet:
    """ResNeSt-29 {radix}s{cardinality}x{base_width}d: ResNeXt-29 layout, split attention."""
    return resnet_bottleneck29(ResNestBottleneck, (3, 3, 3), width=width,
                               cardinality=cardinality, base_width=base_width,
                               group_multiple=radix, num_classes=num_classes, radix=radix,
                               avd=avd, **kwargs)


_KNOB = Knob("base_width", kind="float", low=1, high=256)
for _r, _c, _d in ((2, 1, 64), (2, 1, 32), (2, 2, 40), (4, 2, 40)):
    register_model(resnest29, name=f"cifar_resnest29_{_r}s{_c}x{_d}d", family="resnest",
                   knob=_KNOB, radix=_r, cardinality=_c, base_width=_d, width=64)
register_model(resnest29, name="cifar_resnest29_2s1x24d_w16", family="resnest", knob=_KNOB,
               radix=2, cardinality=1, base_width=24, width=16)
