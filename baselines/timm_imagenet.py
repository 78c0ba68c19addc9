"""timm's own ImageNet models as baselines (DESIGN.md §9), each with a width knob.

Registered as ``timm_<arch>`` (``timm_resnet50``...): mpbench registers its models into timm's
registry too, so the names must not collide with timm's own ``resnet50``. Each is built with
``timm.create_model(arch)``; at ``width=1`` it is timm's model exactly (same parameter names, so
``init: timm:resnet50`` fine-tunes it). ``width`` scales the stage planes (rounded per stage,
so MAC steps stay ~1-2%); the stem stays timm's 64-channel 7x7 conv (timm's ResNet takes
``stem_width`` for deep stems only, so only ResNeSt-50d's 3-conv stem scales with it: a
narrow ensemble member keeps a full stem, which its counted MACs include). Deeper
(resnet101/152) are matched by width per depth variant: at the ResNet-50 budget a depth
*choice* would always pick depth 50. ResNeXt keeps
cardinality 32 and the group widths (4, 8, 16, 32): only the outer width scales (group widths
are integers, so scaling them would move stage 1 in 25% steps).
"""
from __future__ import annotations

import timm
import torch.nn as nn

from mpbench.registry import Knob, register_model

__all__ = ["timm_resnet", "TIMM_ARCHS"]

# arch -> (family, deep-stem width, base_width, cardinality) as timm defines them
TIMM_ARCHS = {
    "resnet50": ("timm_resnet", 64, 64, 1),
    "resnet101": ("timm_resnet", 64, 64, 1),
    "resnet152": ("timm_resnet", 64, 64, 1),
    "wide_resnet50_2": ("timm_wrn", 64, 128, 1),
    "resnext50_32x4d": ("timm_resnext", 64, 4, 32),
    "seresnet50": ("timm_se_resnet", 64, 64, 1),
    "skresnet50": ("timm_sknet", 64, 64, 1),
    "resnest50d": ("timm_resnest", 32, 64, 1),
    "res2net50_26w_4s": ("timm_res2net", 64, 26, 1),
}


def _group_base_width(channels: tuple[int, ...], d: int) -> float | None:
    """A single base_width for which timm's ``floor(planes * bw / 64)`` is ``d * 2**i`` in
    every stage i, or None."""
    lo = max(64 * d * 2 ** i / c for i, c in enumerate(channels))
    hi = min(64 * (d * 2 ** i + 1) / c for i, c in enumerate(channels))
    return (lo + hi) / 2 if lo < hi else None


def timm_resnet(arch: str = "resnet50", width: float = 1.0, num_classes: int = 1000,
                in_chans: int = 3, **kwargs) -> nn.Module:
    """timm's ImageNet ``arch`` with stage planes ``round(64 * width * 2**i)``."""
    if arch not in TIMM_ARCHS:
        raise ValueError(f"arch must be one of {list(TIMM_ARCHS)}, got {arch!r}")
    _, stem, base, card = TIMM_ARCHS[arch]
    if width != 1:
        # split attention (radix 2) and selective kernels (2 paths) split the planes in two
        div = 2 if arch.startswith(("resnest", "skresnet")) else 1
        channels = tuple(max(div, round(64 * width * 2 ** i / div) * div) for i in range(4))
        kwargs.update(channels=channels, stem_width=max(1, round(stem * width)))
        if card > 1:  # keep the group widths: only the outer width scales
            bw = _group_base_width(channels, base)
            if bw is None:
                p0 = channels[0]
                kwargs["channels"] = tuple(p0 * 2 ** i for i in range(4))
                bw = _group_base_width(kwargs["channels"], base)
            kwargs["base_width"] = bw
    return timm.create_model(arch, pretrained=False, num_classes=num_classes,
                             in_chans=in_chans, **kwargs)


WIDTH_KNOB = Knob("width", kind="float", low=0.25, high=4)
for _arch, (_family, *_rest) in TIMM_ARCHS.items():
    register_model(timm_resnet, name=f"timm_{_arch}", family=_family, knob=WIDTH_KNOB,
                   input_size=(3, 224, 224), arch=_arch, width=1.0)

# Ensembles of ResNet-50 members, matched by making every member narrower (the member's knob).
from mpbench.baselines.ensemble import register_ensemble  # noqa: E402

for _n in (2, 4):
    register_ensemble("timm_resnet50", _n)
