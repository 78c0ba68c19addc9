"""The baseline zoo: reference sizes, every family builds and trains, and matches budgets."""
import math

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from mpbench.complexity import count_model
from mpbench.complexity.matching import match_budget
from mpbench.registry import create_model, get_entry, list_families, list_models

FAMILIES = ("resnet", "resnet4", "wrn", "wrn_postact", "resnext", "se_resnet", "sk_resnet",
            "resnest", "res2net", "ensemble")
BASELINES = [e.name for e in list_models() if e.family in FAMILIES]


# --------------------------------------------------------------------------- reference sizes

# DESIGN.md §2: fvcore MACs at batch 1, 32x32, eval, 100 classes. Parameters are exact
# (they agree with published tables); MACs within 0.5% (mpbench also counts residual adds).
REFERENCE = [
    # name, exact params, DESIGN params, DESIGN MACs
    ("cifar_resnet56", 861_620, 0.862e6, 126.8e6),
    ("cifar_resnet18", 11_220_132, 11.22e6, 0.557e9),
    ("cifar_wrn28_10", 36_536_884, 36.54e6, 5.25e9),
    ("cifar_resnext29_8x64d", 34_518_948, 34.52e6, 5.40e9),
]


@pytest.mark.parametrize("name,params,design_params,design_macs", REFERENCE,
                         ids=[r[0] for r in REFERENCE])
def test_reference_params_and_macs(name, params, design_params, design_macs):
    c = count_model(name, input_size=(3, 32, 32), num_classes=100)
    assert c.params == params
    assert c.params == pytest.approx(design_params, rel=0.005)
    assert c.macs == pytest.approx(design_macs, rel=0.005)


def _se_params(depth=56, widths=(16, 32, 64), r=16):
    """SE paper: per block, FC C -> C/r and C/r -> C, both with bias."""
    n = (depth - 2) // 6
    return sum(n * (2 * c * (c // r) + c // r + c) for c in widths)


def _se_macs(depth=56, widths=(16, 32, 64), sizes=(32, 16, 8), r=16):
    n = (depth - 2) // 6
    return sum(n * (2 * c * hw * hw + 2 * c * (c // r) + c) for c, hw in zip(widths, sizes))


def test_se_resnet56_has_the_se_papers_reduction():
    assert _se_params() == 7_119
    c = count_model("cifar_se_resnet56", num_classes=100)
    assert c.params == 861_620 + 7_119 == 868_739  # not timm's rounded 878,972
    # SE's own MACs by hand, per block at stage width C, H x W pixels and C // 16 hidden units:
    # squeeze (mean) C*H*W + fc1 C*(C//16) + fc2 (C//16)*C + sigmoid C + excite (mul) C*H*W
    #   C=16, 32x32, 1 hidden: 16,384 + 16 + 16 + 16 + 16,384 = 32,816
    #   C=32, 16x16, 2 hidden:  8,192 + 64 + 64 + 32 +  8,192 = 16,544
    #   C=64,  8x8,  4 hidden:  4,096 + 256 + 256 + 64 + 4,096 =  8,768
    # nine blocks a stage: 9 * (32,816 + 16,544 + 8,768) = 523,152 on top of ResNet-56
    assert _se_macs() == 523_152
    assert c.macs - count_model("cifar_resnet56", num_classes=100).macs == 523_152
    with torch.device("meta"):
        model = create_model("cifar_se_resnet56")
        timm_rounded = create_model("cifar_resnet56", attn_layer="se")
    hidden = {m.fc1.in_channels: m.fc1.out_channels for m in model.modules()
              if type(m).__name__ == "SEModule"}
    assert hidden == {16: 1, 32: 2, 64: 4}
    assert sum(p.numel() for p in timm_rounded.parameters()) == 878_972  # the DESIGN.md trap


def test_wrn_block_is_preactivation_with_dropout_between_convs():
    with torch.device("meta"):
        model = create_model("cifar_wrn28_10")
    block = model.stages[1][0]
    names = [n for n, _ in block.named_children()]
    assert names[:3] == ["bn1", "act1", "conv1"] and names.index("drop") < names.index("conv2")
    assert block.drop.p == 0.3 and isinstance(block.shortcut, nn.Conv2d)
    assert [s[0].conv1.out_channels for s in model.stages] == [160, 320, 640]
    assert len(model.stages[0]) == 4  # 28 = 6 * 4 + 4


def test_bottleneck_base_width_is_channels_per_group():
    with torch.device("meta"):
        paper = create_model("cifar_resnext29_8x64d")
        small = create_model("cifar_resnext29_8x8d_w16", base_width=2.7)
    assert [s[0].conv2.out_channels for s in paper.stages] == [512, 1024, 2048]
    assert [s[0].conv2.groups for s in paper.stages] == [8, 8, 8]
    # fractional d: round(d * 2**i) channels per group, stage by stage
    assert [s[0].conv2.out_channels // 8 for s in small.stages] == [3, 5, 11]
    assert [s[-1].conv3.out_channels for s in small.stages] == [64, 128, 256]


# --------------------------------------------------------------------------- every model

def test_every_family_is_listed_with_a_knob():
    assert set(FAMILIES) <= set(list_families())
    for name in BASELINES:
        assert get_entry(name).knob is not None, name


def _first_conv(model):
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("name", BASELINES)
def test_creatable_through_timm_with_classes_and_channels(name):
    with torch.device("meta"):  # shapes only: the 68M-parameter ResNeXt builds instantly
        model = timm.create_model(name, num_classes=7, in_chans=1)
    assert _first_conv(model).in_channels == 1
    heads = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert heads and all(h.out_features == 7 for h in heads)


# One small member of each family (batch 2, narrow) for a real forward/backward pass.
SMALL = {
    "resnet": ("cifar_resnet20", {"width": 4}),
    "resnet4": ("cifar_resnet18", {"width": 4}),
    "wrn": ("cifar_wrn16_4", {"widen_factor": 0.5}),
    "wrn_postact": ("cifar_wrn28_10_postact", {"depth": 10, "widen_factor": 0.5}),
    "resnext": ("cifar_resnext29_8x8d_w16", {"base_width": 1}),
    "se_resnet": ("cifar_se_resnet20", {"width": 4}),
    "sk_resnet": ("cifar_skresnet20", {"width": 4}),
    "sk_resnext": ("cifar_skresnext29_16x32d", {"width": 16, "base_width": 1, "cardinality": 4}),
    "resnest": ("cifar_resnest29_2s1x24d_w16", {"base_width": 2}),
    "res2net": ("cifar_res2next29_6cx24wx4s", {"width": 16, "base_width": 1, "cardinality": 2}),
    "ensemble": ("ensemble_resnet20_x3", {"width": 4}),
}


@pytest.mark.parametrize("name,args", SMALL.values(), ids=list(SMALL))
def test_family_forward_backward(name, args):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_chans=3, **args).train()
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 7])
    out = model(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    loss = model.training_loss(out, y, 0.0) if hasattr(model, "training_loss") else \
        F.cross_entropy(out, y)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:3]}"
    model.eval()
    with torch.no_grad():
        assert model(x[:1]).shape == (1, 10)


# --------------------------------------------------------------------------- ensembles

def test_ensemble_averages_probabilities_and_sums_member_losses():
    torch.manual_seed(0)
    model = create_model("ensemble_resnet20_x3", width=4, num_classes=5)
    assert len(model.members) == 3
    assert all(m.stages[2][0].conv1.out_channels == 16 for m in model.members)  # knob: 4 -> 4w
    x, y = torch.randn(2, 3, 16, 16), torch.tensor([0, 3])
    model.eval()
    with torch.no_grad():
        member = torch.stack([m(x) for m in model.members])
        out = model(x)
    assert torch.allclose(out.softmax(-1), member.softmax(-1).mean(0), atol=1e-6)

    model.train()
    out = model(x)
    from mpbench.training.trainer import loss_fn
    loss = loss_fn(model, out, y, 0.1)
    expected = sum(F.cross_entropy(z, y, label_smoothing=0.1) for z in model.member_logits)
    assert torch.allclose(loss, expected)
    model.eval()
    assert model(x).shape == (2, 5) and model.member_logits is None


def test_ensemble_logit_average_and_generic_members():
    from mpbench.baselines.ensemble import ensemble
    model = ensemble("cifar_wrn16_4", n=2, combine="mean_logits", widen_factor=0.25,
                     num_classes=4).eval()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model(x), (model.members[0](x) + model.members[1](x)) / 2)
    assert get_entry("ensemble_wrn16_4_x3").knob.name == "widen_factor"


def test_ensemble_costs_n_members():
    one = count_model("cifar_resnet20", {"width": 8})
    three = count_model("ensemble_resnet20_x3", {"width": 8})
    assert three.params == 3 * one.params
    assert three.macs == pytest.approx(3 * one.macs, rel=0.001)


# --------------------------------------------------------------------------- matching

# One representative per family; each must land on three budgets within the default ±2%.
# The plain ResNets' knob is depth, a choice: matching picks the nearest depth, then adjusts
# the width. Expected depths from a hand count of convolution + classifier MACs at width 16,
# k*k*Cin*Cout*H*W per conv, which for depth 6n+2 comes to 14,155,776 n - 1,648,384:
# 20: 40.8M, 26: 55.0M, 32: 69.1M, 44: 97.4M, 56: 125.8M (BN and residual adds add ~1%).
MATCH = {
    "resnet": ("cifar_resnet20", (0.04, 0.07, 0.13), {0.04: 20, 0.07: 32, 0.13: 56}),
    "resnet4": ("cifar_resnet18", (0.04, 0.13, 0.56), None),
    "wrn": ("cifar_wrn16_4", (0.04, 0.13, 0.56), None),
    "wrn_postact": ("cifar_wrn28_10_postact", (0.04, 0.13, 0.56), None),
    "resnext": ("cifar_resnext29_8x8d_w16", (0.04, 0.13, 0.56), None),
    "se_resnet": ("cifar_se_resnet20", (0.04, 0.13, 0.56), None),
    "sk_resnet": ("cifar_skresnet20", (0.04, 0.13, 0.56), None),
    "resnest": ("cifar_resnest29_2s1x24d_w16", (0.04, 0.13, 0.56), None),
    "res2net": ("cifar_res2net29_16wx4s_w16", (0.04, 0.13, 0.56), None),
    "ensemble": ("ensemble_resnet20_x3", (0.04, 0.13, 0.56), None),
}


@pytest.mark.parametrize("name,budgets,expected", MATCH.values(), ids=list(MATCH))
def test_family_matches_three_budgets(name, budgets, expected):
    for budget in budgets:
        m = match_budget(name, budget, input_size=(3, 32, 32), num_classes=100,
                         tolerance=0.02)
        if expected:
            assert m.knob_value == expected[budget]
        assert abs(m.deviation) <= 0.02, (budget, m)
        assert math.isclose(m.gmacs, count_model(name, m.args).gmacs)
