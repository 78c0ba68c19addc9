"""ImageNet-scale models (DESIGN.md §9): timm baselines' parameter/MAC pins, the multi-path
ResNet-50 shapes, upcycling from a timm resnet50 state dict, budget matching."""
from __future__ import annotations

import pytest
import timm
import torch
import torch.nn as nn
from torch.testing import assert_close

import mpbench  # noqa: F401  (registers the models)
from mpbench.complexity import count_model
from mpbench.complexity.matching import match_budget
from mpbench.models.mp_resnet_imagenet import MPResNetImageNet
from mpbench.registry import create_model
from mpbench.training.init import apply_init

# torchvision / timm documented parameter counts at 1000 classes
PARAMS = {"timm_resnet50": 25_557_032, "timm_resnext50_32x4d": 25_028_904,
          "timm_wide_resnet50_2": 68_883_240, "timm_seresnet50": 28_088_024,
          "timm_resnest50d": 27_483_240, "timm_res2net50_26w_4s": 25_699_120}


@pytest.mark.parametrize("name", list(PARAMS))
def test_timm_baseline_param_pins(name):
    model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]


def test_timm_names_do_not_shadow_timm():
    assert isinstance(timm.create_model("resnet50"), timm.models.ResNet)
    assert "timm_resnet50" in timm.list_models("timm_*")


def test_mac_pins_at_224():
    """fvcore's own total (published: resnet50 4.11 G) and mpbench's (adds residual adds,
    counts BN as 2 per element): 4.1115 and 4.1170 GMACs."""
    from fvcore.nn import FlopCountAnalysis
    f = FlopCountAnalysis(timm.create_model("resnet50").eval(), torch.zeros(1, 3, 224, 224))
    f.unsupported_ops_warnings(False)
    f.uncalled_modules_warnings(False)
    assert f.total() == pytest.approx(4.11e9, rel=2e-3)
    c = count_model("timm_resnet50", input_size=(3, 224, 224), num_classes=1000)
    assert c.gmacs == pytest.approx(4.1170, abs=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("name,gmacs", [("timm_resnext50_32x4d", 4.2649),
                                        ("timm_wide_resnet50_2", 11.4324)])
def test_mac_pins_slow(name, gmacs):
    c = count_model(name, input_size=(3, 224, 224), num_classes=1000)
    assert c.gmacs == pytest.approx(gmacs, abs=2e-3)


def test_mp_resnet50_one_path_is_resnet50_shaped():
    m = create_model("mp_resnet50_p4_none", paths=1, width=64)
    assert sum(p.numel() for p in m.parameters()) == PARAMS["timm_resnet50"]
    assert isinstance(m.stem[0], nn.Conv2d) and m.stem[0].kernel_size == (7, 7)
    assert isinstance(m.stem[3], nn.MaxPool2d)


@pytest.mark.parametrize("name", ["mp_resnet50_p4_fdcc", "mp_resnet50_p2_fdcc",
                                  "mp_resnet50_p4_cross_pred"])
def test_mp_resnet50_forward_shapes(name):
    m = create_model(name, num_classes=10).eval()
    assert isinstance(m, MPResNetImageNet)
    x = torch.randn(2, 3, 64, 64)
    feats = m.forward_features(x)
    assert feats.shape == (2, m.paths * m.path_features, 2, 2)
    assert m(x).shape == (2, 10)


def test_grouped_and_loop_path_convs_agree():
    torch.manual_seed(0)
    m = create_model("mp_resnet50_p4_fdcc", width=8, num_classes=10,
                     granularity="channel").eval()
    x = torch.randn(2, 3, 64, 64)
    m.set_path_conv("grouped")
    a = m(x)
    m.set_path_conv("loop")
    assert_close(m(x), a, rtol=1e-4, atol=1e-5)


def _randomize_bn(model):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.copy_(torch.rand(mod.weight.shape, generator=g) + 0.5)
                mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.1)
                mod.running_mean.copy_(torch.randn(mod.running_mean.shape, generator=g) * 0.1)
                mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=g) + 0.5)
    return model


@pytest.mark.parametrize("name,paths", [("mp_resnet50_p4_none", 1), ("mp_resnet50_p4_none", 2),
                                        ("mp_resnet50_p2_fdcc", 2)])
def test_upcycle_from_timm_resnet50_is_exact_at_zero_noise(name, paths, tmp_path):
    torch.manual_seed(0)
    single = _randomize_bn(timm.create_model("resnet50", num_classes=10)).eval()
    torch.save(single.state_dict(), tmp_path / "resnet50.pth")
    mp = create_model(name, paths=paths, width=64, num_classes=10,
                      **({"route": "none"} if paths == 1 else {}))
    report = apply_init(mp, str(tmp_path / "resnet50.pth"), mode="upcycle", noise=0)
    assert report["paths"] == paths
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert_close(mp.eval()(x), single(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("suite,geometry", [("imagenet", ((3, 224, 224), 1000)),
                                            ("imagenet100", ((3, 224, 224), 100)),
                                            ("tiny-imagenet", ((3, 64, 64), 200))])
def test_imagenet_suites_plan_without_data(suite, geometry, tmp_path):
    from pathlib import Path
    from mpbench.config import load_suite
    from mpbench.complexity.matching import suite_geometry
    s = load_suite(Path(__file__).parent.parent / "suites" / f"{suite}.yaml")
    assert suite_geometry(s, tmp_path / "no-data") == geometry


@pytest.mark.parametrize("name", ["mp_resnet50_p4_fdcc", "timm_resnext50_32x4d"])
def test_cheap_matches_at_tiny_imagenet_budget(name):
    m = match_budget(name, 0.336, input_size=(3, 64, 64), num_classes=200)
    assert abs(m.deviation) <= 0.02


@pytest.mark.slow
def test_imagenet_suite_table_within_tolerance():
    from pathlib import Path
    from mpbench.config import load_suite
    from mpbench.complexity.matching import Match, match_suite
    rows = match_suite(load_suite(Path(__file__).parent.parent / "suites" / "imagenet.yaml"))
    assert all(isinstance(r, Match) and abs(r.deviation) <= 0.02 for r in rows), rows


@pytest.mark.parametrize("arch", ["resnet50", "wide_resnet50_2", "resnext50_32x4d",
                                  "seresnet50", "skresnet50", "resnest50d", "res2net50_26w_4s"])
def test_every_width_the_knob_can_reach_builds(arch):
    """Matching probes any width in the knob's range; each must build (selective kernels and
    split attention halve their planes, which must then be even: skresnet50 at width 0.6397
    once failed timm's ``in_channels % num_paths`` assertion mid-search)."""
    from mpbench.baselines.timm_imagenet import WIDTH_KNOB

    lo, hi = WIDTH_KNOB.low, WIDTH_KNOB.high
    widths = [0.6397] + [lo * (hi / lo) ** (k / 23) for k in range(24)]
    for w in widths:
        with torch.device("meta"):
            create_model(f"timm_{arch}", width=w, num_classes=100)


def test_imagenet_ensemble_counts_at_another_class_count():
    """ensemble_timm_resnet50_x2 registers timm's 1000 classes as its default; a 200-class
    suite (tiny-imagenet) counts it at 200: the default gives way, a user's argument would not."""
    from mpbench.errors import UserError
    c = count_model("ensemble_timm_resnet50_x2", input_size=(3, 64, 64), num_classes=200)
    one = count_model("timm_resnet50", input_size=(3, 64, 64), num_classes=200)
    assert c.params == 2 * one.params
    with pytest.raises(UserError, match="num_classes=1000 contradicts the data"):
        count_model("ensemble_timm_resnet50_x2", {"num_classes": 1000}, input_size=(3, 64, 64),
                    num_classes=200)
