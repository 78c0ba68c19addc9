"""Wide Residual Networks (Zagoruyko & Komodakis, BMVC 2016): the *widening* baseline.

WRN-d-k is a 3-stage CIFAR ResNet of depth d = 6n + 4 (n blocks a stage, two 3x3 convs a
block) whose stage widths are (16k, 32k, 64k). Unlike timm's post-activation ``BasicBlock``,
the paper's block is *pre-activation* (BN-ReLU-conv, BN-ReLU-dropout-conv) with dropout
between the two convolutions, and its shape-changing shortcut is a bare 1x1 convolution of the
pre-activated input. timm has no such block, so it is written here (it is small). This form
gives the published size: WRN-28-10 has 36,536,884 parameters and 5.25 GMACs at 100 classes.

The widen factor is the FLOP-matching knob. It is a float so a budget can be met closely;
stage widths are ``round(16 * 2**i * k)``, which is exact for the paper's integer k.
``cifar_wrn28_10_postact`` keeps timm's post-activation block (no dropout) under a name that
says so, for comparison with other timm-block baselines.
"""
import torch
import torch.nn as nn

from mpbench.registry import Knob, register_model

from .resnet import CifarResNet, ClassifierNet, init_weights, stage_feature_info

__all__ = ["PreActBlock", "WideResNet", "wide_resnet", "wide_resnet_postact", "stage_widths"]


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3, BN-ReLU-dropout-conv3x3, plus the shortcut (WRN paper, Fig. 1(d)).

    When the shape changes, the shortcut is a 1x1 convolution applied to the *pre-activated*
    input (as in the authors' code), so the first BN-ReLU is shared by both branches.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, drop_rate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.act1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.act2 = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, padding=1, bias=False)
        self.shortcut = (nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False)
                         if stride != 1 or in_chs != out_chs else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.drop(self.act2(self.bn2(out))))
        return out + shortcut


def stage_widths(widen_factor: float, base: int = 16, stages: int = 3) -> tuple[int, ...]:
    """(16k, 32k, 64k), rounded to whole channels (at least 1)."""
    return tuple(max(1, round(base * 2 ** i * widen_factor)) for i in range(stages))


def depth_to_blocks(depth: int) -> int:
    if (depth - 4) % 6:
        raise ValueError(f"WRN depth must be 6n+4, got {depth}")
    return (depth - 4) // 6


class WideResNet(ClassifierNet):
    """3x3 stem conv (16 channels), three stages of ``PreActBlock``, final BN-ReLU, pool, linear."""

    def __init__(self, depth: int = 28, widen_factor: float = 10, drop_rate: float = 0.3,
                 num_classes: int = 100, in_chans: int = 3, stem_width: int = 16,
                 global_pool: str = "avg"):
        super().__init__()
        n = depth_to_blocks(depth)
        self.stem = nn.Conv2d(in_chans, stem_width, 3, padding=1, bias=False)
        stages, chs = [], stem_width
        widths = stage_widths(widen_factor)
        for i, width in enumerate(widths):
            blocks = []
            for j in range(n):
                blocks.append(PreActBlock(chs, width, 2 if (i > 0 and j == 0) else 1, drop_rate))
                chs = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.num_features = chs
        self.stage_info = stage_feature_info(widths, [1] + [2] * (len(widths) - 1))
        self.norm = nn.BatchNorm2d(chs)
        self.act = nn.ReLU(inplace=True)
        self.drop = nn.Identity()  # the paper's dropout is inside the blocks
        self.init_head(num_classes, global_pool)
        init_weights(self)

    def forward_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(x))

    def prune_norm(self) -> None:
        self.norm, self.act = nn.Identity(), nn.Identity()


def wide_resnet(depth: int = 28, widen_factor: float = 10, drop_rate: float = 0.3,
                num_classes: int = 100, in_chans: int = 3, **kwargs) -> WideResNet:
    """WRN-d-k as in the paper: pre-activation blocks, dropout between the convolutions."""
    return WideResNet(depth, widen_factor, drop_rate, num_classes=num_classes,
                      in_chans=in_chans, **kwargs)


def wide_resnet_postact(depth: int = 28, widen_factor: float = 10, num_classes: int = 100,
                        **kwargs) -> CifarResNet:
    """WRN-d-k shape built from timm's post-activation BasicBlock (not the paper's block)."""
    n = depth_to_blocks(depth)
    return CifarResNet("basic", (n, n, n), stage_widths(widen_factor), stem_width=16,
                       num_classes=num_classes, **kwargs)


# Float knob: MACs grow as k^2, so a continuous k lets matching land close to any budget.
WIDEN_KNOB = Knob("widen_factor", kind="float", low=0.25, high=16)

# Dropout 0.3 is the paper's CIFAR setting (WRN-28-10 with dropout: 19.25% CIFAR-100 error).
for _d, _k in ((16, 4), (16, 8), (22, 8), (28, 2), (28, 10), (40, 4)):
    register_model(wide_resnet, name=f"cifar_wrn{_d}_{_k}", family="wrn", knob=WIDEN_KNOB,
                   depth=_d, widen_factor=_k, drop_rate=0.3)

register_model(wide_resnet_postact, name="cifar_wrn28_10_postact", family="wrn_postact",
               knob=WIDEN_KNOB, depth=28, widen_factor=10)
