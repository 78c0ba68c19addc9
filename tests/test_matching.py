"""Budget matching: every family lands on a budget, searches are right, suites use it."""
from __future__ import annotations

import json
import math
import pickle

import pytest
import torch
import torch.nn as nn

from mpbench import complexity, registry
from mpbench.config import SuiteError, parse_suite
from mpbench.complexity.matching import (BudgetError, Match, _grid, describe, match_budget, match_suite,
                              suite_geometry)
from mpbench.registry import Knob, get_entry, list_families, list_models

# The cheapest model of each family where there is a choice: matching cost is dominated by
# one fvcore trace of the answer, which grows with depth (and paths, and members).
PREFERRED = ("cifar_resnet18", "cifar_se_resnet20", "cifar_skresnet20", "cifar_wrn16_4",
             "cifar_resnext29_8x8d_w16", "cifar_resnest29_2s1x24d_w16",
             "cifar_res2net29_16wx4s_w16", "ensemble_resnet20_x3", "mp_resnet20_p4_fdcc",
             "cifar_resnet20")


def representatives() -> list[str]:
    """One CIFAR-shaped model per family with a knob: a width (int/float) or a depth (the
    deepening ResNet: the nearest depth, then a width adjustment into tolerance). Tiny variants are
    left out: they exist for smoke runs, with deliberately coarse knobs. The ImageNet-shaped
    families (224 px, budgets of GMACs) are matched in tests/test_imagenet_models.py."""
    names = []
    for family in list_families():
        entries = [e for e in list_models(family)
                   if e.knob and "tiny" not in e.name
                   and not e.family.startswith("_")
                   and tuple(e.default_cfg.get("input_size", e.input_size or (3, 32, 32)))[-2:]
                   == (32, 32)]
        entries.sort(key=lambda e: (e.name not in PREFERRED, e.name))
        if entries:
            names.append(entries[0].name)
    return names


def beyond_range(err: BudgetError) -> bool:
    """The budget lies outside what the knob's range reaches (closest is at an end)."""
    entry = get_entry(err.name)
    m, knob = err.closest, entry.knob
    ends = ((knob.low, knob.high) if knob.kind == "float"
            else (_grid(knob, m.args)[0], _grid(knob, m.args)[-1]))
    return (m.knob_value == ends[0] and m.deviation > 0) or (
        m.knob_value == ends[1] and m.deviation < 0)


@pytest.mark.parametrize("budget", [0.04, 0.13, pytest.param(0.56, marks=pytest.mark.slow)])
@pytest.mark.parametrize("name", representatives())
def test_every_family_lands_within_tolerance(name, budget):
    try:
        m = match_budget(name, budget)
    except BudgetError as err:
        if beyond_range(err):
            pytest.skip(f"{budget} GMACs is outside {name}'s knob range: {err}")
        raise
    assert abs(m.deviation) <= 0.02
    assert m.gmacs == pytest.approx(complexity.count_model(name, m.args).gmacs)
    assert m.args[m.knob] == m.knob_value and m.budget_gmacs == budget


# --------------------------------------------------------------------------- search correctness

class _Net(nn.Module):
    """Two convolutions and a classifier; ``width`` (int) or ``mult`` (float) sets channels."""

    def __init__(self, width: int = 16, mult: float = 1.0, num_classes: int = 10,
                 in_chans: int = 3):
        super().__init__()
        chs = max(1, round(width * mult))
        self.conv = nn.Conv2d(in_chans, chs, 3, padding=1)
        self.conv2 = nn.Conv2d(chs, 2 * chs, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * chs, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.conv2(self.conv(x).relu())).flatten(1))


def _build_net(**kwargs) -> nn.Module:
    return _Net(**kwargs)


class _GroupedNet(nn.Module):
    """conv 3 -> w, 1x1 conv w -> w/2, grouped 3x3 conv w/2 -> w with ``groups`` groups
    (0: depthwise, one group per input channel, by design)."""

    def __init__(self, width: int = 16, groups: int = 4, num_classes: int = 10,
                 in_chans: int = 3):
        super().__init__()
        half = width // 2
        self.conv = nn.Conv2d(in_chans, width, 3, padding=1)
        self.reduce = nn.Conv2d(width, half, 1)
        self.grouped = nn.Conv2d(half, width, 3, padding=1, groups=groups or half)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.grouped(self.reduce(self.conv(x)))).flatten(1))


TEST_MODELS = {
    "_test_int_net": dict(knob=Knob("width", kind="int", low=4, high=64, step=4), width=16),
    "_test_float_net": dict(knob=Knob("mult", kind="float", low=0.25, high=8), mult=1.0),
    "_test_fixed_net": dict(width=16),
}
GROUPED_MODELS = {
    "_test_grouped_net": dict(knob=Knob("width", kind="int", low=8, high=64, step=8),
                              width=32, groups=4),
    "_test_depthwise_net": dict(knob=Knob("width", kind="int", low=4, high=64, step=4),
                                width=32, groups=0),
}


@pytest.fixture(scope="module", autouse=True)
def test_models():
    """Registered test models with known knobs (the real families' knobs keep evolving)."""
    for name, kwargs in TEST_MODELS.items():
        registry.register_model(_build_net, name=name, family="_test", timm=False, **kwargs)
    for name, kwargs in GROUPED_MODELS.items():
        registry.register_model(_GroupedNet, name=name, family="_test", timm=False, **kwargs)
    yield
    for name in (*TEST_MODELS, *GROUPED_MODELS):
        registry._REGISTRY.pop(name, None)
    complexity.clear_cache()


def test_int_knob_finds_the_closest_width_like_brute_force():
    entry = get_entry("_test_int_net")
    grid = _grid(entry.knob, entry.args())
    assert grid == list(range(4, 65, 4))
    macs = {w: complexity.count_model(entry.name, {"width": w}).macs for w in grid}
    assert list(macs.values()) == sorted(macs.values())  # monotone, as matching assumes
    for budget_macs in (macs[4] * 0.5, macs[8] * 1.1, macs[20], macs[36] * 0.98,
                        (macs[40] + macs[44]) / 2, macs[64] * 3):
        budget = budget_macs / 1e9
        best = min(grid, key=lambda w: (abs(macs[w] - budget_macs), w))
        try:
            m = match_budget(entry.name, budget)
        except BudgetError as err:
            m = err.closest
            assert abs(m.deviation) > 0.02
        assert m.knob_value == best, budget
        assert m.macs == macs[best]


def test_tolerance_is_configurable():
    w16 = complexity.count_model("_test_int_net", {"width": 16}).gmacs
    with pytest.raises(BudgetError):
        match_budget("_test_int_net", w16 * 1.06)
    assert match_budget("_test_int_net", w16 * 1.06, tolerance=0.07).knob_value == 16


def resnet_conv_fc_macs(depth: int, width: int = 16, classes: int = 100) -> int:
    """Convolution + classifier MACs of the CIFAR ResNet-(6n+2), by hand: a k x k conv costs
    k*k*Cin*Cout*H*W. Stem 3 -> w at 32x32; stage s (widths w, 2w, 4w at 32, 16, 8 pixels)
    has 2n 3x3 convs, the first of stages 2 and 3 striding from the previous width, plus a
    1x1 projection there; then the linear layer 4w -> classes."""
    n = (depth - 2) // 6
    macs = 9 * 3 * width * 32 * 32                                     # stem
    for s, (cin, c, hw) in enumerate([(width, width, 32 * 32), (width, 2 * width, 16 * 16),
                                      (2 * width, 4 * width, 8 * 8)]):
        macs += 9 * cin * c * hw + (2 * n - 1) * 9 * c * c * hw          # 3x3 convs
        macs += cin * c * hw if s else 0                                 # projection
    return macs + 4 * width * classes


def test_hand_count_of_resnet_convs_matches_mpbench():
    # ResNet-20: 40,818,944 (osmr/imgclsmob lists 40.81M MACs for resnet20_cifar10, whose fc
    # is 64 x 10: 5,760 fewer); ResNet-56: 125,753,600; ResNet-110: 253,155,584
    assert resnet_conv_fc_macs(20) == 40_818_944
    assert resnet_conv_fc_macs(56) == 125_753_600
    assert resnet_conv_fc_macs(110) == 253_155_584
    for depth in (20, 56, 110):
        ops = complexity.count_model(f"cifar_resnet{depth}").by_operator
        assert ops["conv"] + ops["linear"] == resnet_conv_fc_macs(depth)


def test_depth_knob_takes_the_nearest_depth_then_adjusts_width_into_tolerance():
    # ResNet-56 at width 16 is 127.06M MACs (osmr/imgclsmob; DESIGN.md §2): -2.3% of 0.13, so
    # the width must grow; MACs go as width², so by about sqrt(130 / 127.06).
    m = match_budget("cifar_resnet56", 0.13)
    assert (m.knob, m.knob_value) == ("depth", 56)
    assert abs(m.deviation) <= 0.02
    w = m.adjust["width"]
    assert w == pytest.approx(16 * math.sqrt(130 / 127.06), rel=0.01)
    assert m.knob_text == f"56 (width {w:g})"
    assert m.args["depth"] == 56 and m.args["width"] == w
    rebuilt = complexity.count(get_entry(m.name).fn(**m.args))
    assert (rebuilt.macs, rebuilt.params) == (m.macs, m.params)


def test_depth_knob_within_tolerance_is_not_adjusted():
    # ResNet-32 by hand: 14,155,776 * 5 - 1,648,384 = 69,130,496 conv + fc MACs, so a budget
    # of 0.0705 GMACs is within 2% of it (BN and residual adds add about 1%).
    assert resnet_conv_fc_macs(32) == 69_130_496
    m = match_budget("cifar_resnet56", 0.0705)
    assert m.knob_value == 32 and m.adjust == {} and m.knob_text == "32"
    assert abs(m.deviation) <= 0.02


def test_depth_knob_adjusts_width_at_the_suites_w24_layout():
    # width 24 by hand: depth 26 has 123,356,544 conv + fc MACs (-5.1% of 0.13 G), depth 32
    # 155,207,040 (+19.4%): the nearest depth is 26, and it needs a slightly wider net.
    assert (resnet_conv_fc_macs(26, 24), resnet_conv_fc_macs(32, 24)) == (123_356_544,
                                                                          155_207_040)
    m = match_budget("cifar_resnet56", 0.13, {"width": 24})
    assert m.knob_value == 26 and 24 < m.adjust["width"] < 24 * 1.25
    assert abs(m.deviation) <= 0.02


def test_depth_knob_refuses_a_budget_beyond_its_deepest_choice():
    with pytest.raises(BudgetError) as info:
        match_budget("cifar_resnet56", 0.56)
    err = info.value
    assert str(err).startswith("model cifar_resnet56 cannot meet budget 0.56 GMACs within ±2%: "
                               "closest is depth=110 at ")
    assert "\n" not in str(err) and err.reason == "off budget"
    assert err.closest.knob_value == 110 and err.budget_gmacs == 0.56
    # 253.2M conv + fc MACs by hand, plus about 1% for BN and residual adds
    assert err.closest.macs == pytest.approx(resnet_conv_fc_macs(110), rel=0.015)
    clone = pickle.loads(pickle.dumps(err))
    assert str(clone) == str(err) and clone.closest == err.closest
    assert clone.reason == err.reason


def _grouped_macs(width: int) -> int:
    """_GroupedNet at 32x32, 10 classes, by hand (k*k*Cin*Cout*H*W/groups for each conv)."""
    half, hw = width // 2, 32 * 32
    return (9 * 3 * width * hw + width * half * hw + 9 * half * width * hw // 4
            + width * hw + width * 10)  # + global pooling (1 per input element) + fc


def test_grouped_conv_shrunk_below_two_channels_per_group_is_degenerate():
    from mpbench.complexity.matching import degenerate_structure

    assert complexity.count_model("_test_grouped_net", {"width": 16}, num_classes=10).macs == \
        _grouped_macs(16)
    # width 8: the grouped conv has 4 input channels in 4 groups, 1 per group
    assert degenerate_structure("_test_grouped_net", {"width": 8}, {}, num_classes=10) == (
        "grouped conv grouped has 1 input channel per group (4 groups)")
    assert degenerate_structure("_test_grouped_net", {"width": 16}, {}, num_classes=10) is None
    m = match_budget("_test_grouped_net", _grouped_macs(16) / 1e9, num_classes=10)
    assert m.knob_value == 16 and m.macs == _grouped_macs(16)


def test_resnext_with_one_channel_per_group_is_refused_at_planning():
    # ResNeXt-29 8 groups at the _w16 widths reaches 0.022 GMACs (10 classes) only with
    # base width ~1.3: round(1.3) = 1 channel per group in stage 1 (not an end of its range)
    with pytest.raises(BudgetError) as info:
        match_budget("cifar_resnext29_8x8d_w16", 0.022, num_classes=10, tolerance=0.04)
    err = info.value
    assert err.reason == "degenerate" and "\n" not in str(err)
    assert str(err).startswith("model cifar_resnext29_8x8d_w16 cannot meet budget 0.022 GMACs "
                               "fairly: at base_width=")
    assert str(err).endswith("grouped conv stages.0.0.conv2 has 1 input channel per group "
                             "(8 groups)")
    assert 1 < err.closest.knob_value < 1.5


def test_depthwise_by_design_is_not_degenerate():
    # the same layout with one group per channel at every width: its design, not a collapse
    m = match_budget("_test_depthwise_net", 0.9 * complexity.count_model(
        "_test_depthwise_net", num_classes=10).gmacs, num_classes=10, tolerance=0.1)
    assert m.knob_value not in (4, 64)


def test_narrow_stage_is_refused_but_gate_layers_are_not():
    from mpbench.complexity.matching import degenerate_structure

    # res2net 4 scales at base width 2.6: 3-channel splits
    problem = degenerate_structure("cifar_res2net29_16wx4s_w16", {"base_width": 2.6},
                                   num_classes=10)
    assert problem == "conv stages.0.0.convs.0 is 3 channels wide (under 4)"
    # SE-ResNet-20's SE squeezes 16 channels to 1 (16 // 16) in 1x1 convs on pooled features:
    # a gate's fully-connected layers, not a stage
    with torch.device("meta"):
        se = get_entry("cifar_se_resnet20").build()
    assert se.stages[0][0].se.fc1.out_channels == 1
    assert degenerate_structure("cifar_se_resnet20", {}) is None


def test_knob_at_an_end_of_its_range_is_refused_even_within_tolerance():
    # _test_int_net's grid is 4..64: a budget exactly at width 4 or 64 is refused
    for width, end in ((4, "low"), (64, "high")):
        budget = complexity.count_model("_test_int_net", {"width": width}, num_classes=10).gmacs
        with pytest.raises(BudgetError) as info:
            match_budget("_test_int_net", budget, num_classes=10)
        assert info.value.reason == "knob at range end"
        assert f"width={width}, the {end} end of its range [4, 64]" in str(info.value)
        assert info.value.closest.deviation == 0


def test_paper_layout_resnext_at_small_budget_is_refused_at_range_end():
    with pytest.raises(BudgetError) as info:
        match_budget("cifar_resnext29_8x64d", 0.13)
    assert info.value.reason == "knob at range end"
    assert "the low end of its range [1, 256]" in str(info.value)


def test_float_knob_lands_close_and_is_deterministic():
    float_net = "_test_float_net"
    for mult, factor in ((0.6, 1.003), (1.7, 0.996), (5.3, 1.0)):
        # a budget some multiplier reaches (channels are whole numbers, so not every one is)
        budget = complexity.count_model(float_net, {"mult": mult}, num_classes=10).gmacs * factor
        m = match_budget(float_net, budget, num_classes=10)
        assert abs(m.deviation) <= 0.02, mult
        assert 0.25 <= m.knob_value <= 8 and m.knob_value == round(m.knob_value, 4)
        assert match_budget(float_net, budget, num_classes=10) is m  # cached
        complexity.clear_cache()
        again = match_budget(float_net, budget, num_classes=10)
        assert again == m and again is not m


def test_float_knob_beyond_its_range_is_refused():
    float_net = "_test_float_net"
    huge = complexity.count_model(float_net, {"mult": 8}, num_classes=10).gmacs * 1.5
    with pytest.raises(BudgetError, match=r"closest is mult=8"):
        match_budget(float_net, huge, num_classes=10)


def test_model_without_knob_is_measured_and_refused_if_off():
    g = complexity.count_model("_test_fixed_net", num_classes=10).gmacs
    m = match_budget("_test_fixed_net", g * 1.01, num_classes=10)
    assert m.knob is None and m.deviation == pytest.approx(-1 / 101)
    with pytest.raises(BudgetError, match="no complexity knob"):
        match_budget("_test_fixed_net", g * 2, num_classes=10)


def test_bad_budget_and_tolerance_are_user_errors():
    from mpbench.errors import UserError

    with pytest.raises(UserError, match="positive"):
        match_budget("cifar_resnet20", 0)
    with pytest.raises(UserError, match="tolerance"):
        match_budget("cifar_resnet20", 0.1, tolerance=1.5)


def test_describe_without_budget():
    m = describe("cifar_resnet20", num_classes=10)
    assert math.isnan(m.budget_gmacs) and math.isnan(m.deviation)
    assert m.args["num_classes"] == 10 and m.args["in_chans"] == 3 and m.knob_value == 20
    assert m.as_dict()["deviation"] is None
    assert json.dumps(m.as_dict())


# --------------------------------------------------------------------------- suites

def _suite(dataset: dict, **extra):
    data = {"name": "t", "dataset": dataset, "models": [{"name": "_test_int_net"}]}
    return parse_suite({**data, **extra})


def test_suite_geometry_per_dataset(tmp_path):
    assert suite_geometry(_suite({"name": "cifar10"})) == ((3, 32, 32), 10)
    assert suite_geometry(_suite({"name": "cifar100"})) == ((3, 32, 32), 100)
    assert suite_geometry(_suite({"name": "synthetic", "num_classes": 4, "image_size": 16})) == (
        (3, 16, 16), 4)
    assert suite_geometry(_suite({"name": "synthetic"})) == ((3, 32, 32), 10)
    resized = _suite({"name": "cifar10"}, recipe={"input_size": 64})
    assert suite_geometry(resized) == ((3, 64, 64), 10)


def test_suite_geometry_counts_image_folder_classes(tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        for cls in ("cat", "dog", "emu"):
            folder = tmp_path / "imgs" / split / cls
            folder.mkdir(parents=True)
            Image.new("RGB", (24, 20)).save(folder / "0.png")
    suite = _suite({"name": "imagefolder", "root": str(tmp_path / "imgs")})
    assert suite_geometry(suite) == ((3, 20, 24), 3)
    with pytest.raises(SuiteError, match="3 classes, not 5"):
        suite_geometry(suite, num_classes=5)
    missing = _suite({"name": "imagefolder", "root": str(tmp_path / "nowhere")})
    with pytest.raises(SuiteError, match="--classes"):
        suite_geometry(missing)
    assert suite_geometry(missing, num_classes=7) == ((3, 32, 32), 7)
    told = _suite({"name": "imagefolder", "root": str(tmp_path / "imgs"), "num_classes": 4})
    with pytest.raises(SuiteError, match="dataset.num_classes: data set imagefolder has 3 "
                                         "classes, not 4"):
        suite_geometry(told)


def _w16_gmacs() -> float:
    return round(complexity.count_model("_test_int_net", num_classes=10).gmacs, 6)


def test_match_suite_rows_budgets_outer_models_inner():
    ok, off = _w16_gmacs(), round(_w16_gmacs() * 1.06, 6)
    suite = parse_suite({
        "name": "t", "dataset": {"name": "synthetic", "num_classes": 10},
        "budgets_gmacs": [ok, off],
        "models": [{"name": "_test_int_net", "label": "net"},
                   {"name": "cifar_resnet20", "match": False}]})
    rows = match_suite(suite)
    assert [(r.display, r.budget_gmacs) for r in rows[:2]] == [("net", ok), ("net", off)]
    assert isinstance(rows[0], Match) and rows[0].knob_value == 16
    assert isinstance(rows[1], BudgetError) and rows[1].closest.label == "net"
    # as given: once, after the budgets, with no budget to deviate from (never refused)
    assert len(rows) == 3 and rows[2].display == "cifar_resnet20" and rows[2].knob_value == 20
    assert math.isnan(rows[2].budget_gmacs) and math.isnan(rows[2].deviation)
    assert all(r.args["num_classes"] == 10 for r in (rows[0], rows[2]))


def test_cli_flops_suite(tmp_path, capsys):
    from mpbench.cli import main

    path = tmp_path / "s.yaml"
    text = ("name: s\ndataset: {name: synthetic, num_classes: 10}\n"
            "budgets_gmacs: [BUDGET]\nmodels:\n  - {name: _test_int_net}\n")
    path.write_text(text.replace("BUDGET", str(_w16_gmacs())))
    assert main(["flops", "--suite", str(path)]) == 0
    out = capsys.readouterr().out
    assert "_test_int_net" in out and "width=16" in out and "OK" in out
    path.write_text(text.replace("BUDGET", str(round(_w16_gmacs() * 1.06, 6))))
    assert main(["flops", "--suite", str(path), "--json"]) == 1
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert rows[0]["status"] == "REFUSED" and "cannot meet budget" in rows[0]["error"]
    path.write_text("name: s\ndataset: {name: nope}\nmodels: [{name: x}]\n")
    assert main(["flops", "--suite", str(path)]) == 2


def test_cli_flops_suite_lists_as_given_rows_once_in_their_own_section(tmp_path, capsys):
    """``match: false`` rows are trained once, as given (plan_suite plans them once): never
    under a budget, never with a deviation from it; every --json row says what it is."""
    from mpbench.cli import main

    b1, b2 = _w16_gmacs(), round(_w16_gmacs() * 1.01, 6)
    path = tmp_path / "s.yaml"
    path.write_text(f"name: s\ndataset: {{name: synthetic, num_classes: 10}}\n"
                    f"budgets_gmacs: [{b1}, {b2}]\nmodels:\n"
                    "  - {name: _test_int_net, label: net}\n"
                    "  - {name: cifar_resnet20, match: false, label: published20}\n")
    assert main(["flops", "--suite", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    head = lines.index("trained as given, not matched:")
    matched, given = lines[:head], lines[head + 1:]
    assert sum("net " in line for line in matched) == 2  # once per budget
    assert not any("published20" in line for line in matched)
    (row,) = [line for line in given if "published20" in line]
    # ResNet-20 for 10 classes: 272,474 parameters (He et al. 2016: 0.27M; osmr/imgclsmob)
    # then its activations: outputs of 19 3x3 convs (16x32x32 x7, 32x16x16 x6, 64x8x8 x6),
    # 2 downsampling 1x1 convs (32x16x16, 64x8x8) and the fc (10): 200,714 = 0.201M
    assert "%" not in row and "depth=20" in row and row.endswith("272.5K     0.201")
    assert main(["flops", "--suite", str(path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [(r["label"], r["family"], r["match"], r["budget_gmacs"]) for r in rows] == [
        ("net", "_test", True, b1), ("net", "_test", True, b2),
        ("published20", "resnet", False, None)]
    assert rows[-1]["deviation"] is None and rows[-1]["status"] == "OK"
    assert rows[-1]["activations_m"] == pytest.approx(200_714 / 1e6)


def test_cli_flops_suite_shows_the_refusal_on_its_row(tmp_path, capsys):
    from mpbench.cli import main

    path = tmp_path / "s.yaml"
    path.write_text("name: s\ndataset: {name: synthetic, num_classes: 4, image_size: 16}\n"
                    "budgets_gmacs: [0.033]\nmodels:\n  - {name: cifar_resnext29_8x64d}\n"
                    "  - {name: cifar_resnet56}\n")
    assert main(["flops", "--suite", str(path)]) == 1
    captured = capsys.readouterr()
    rows = {line.split()[0]: line for line in captured.out.splitlines()[2:]}
    assert rows["cifar_resnext29_8x64d"].endswith("REFUSED (knob at range end)")
    assert "base_width=1." in rows["cifar_resnext29_8x64d"]
    assert rows["cifar_resnet56"].endswith("OK") and "(width " in rows["cifar_resnet56"]
    assert captured.err.count("refused:") == 1 and len(captured.err.splitlines()) == 1


def test_plan_suite_matches_with_the_suites_tolerance():
    """A budget 6% above width 16's MACs: refused at the default ±2%, planned at width 16
    with the suite's ±7% (planted: plan_suite passing no tolerance makes this fail)."""
    from mpbench.suite.plan import plan_suite

    w16 = complexity.count_model("_test_int_net", {"width": 16}, input_size=(3, 32, 32),
                                 num_classes=10).gmacs
    doc = {"name": "tol", "dataset": {"name": "synthetic", "num_classes": 10},
           "recipe": {"epochs": 1}, "seeds": [0], "budgets_gmacs": [w16 * 1.06],
           "models": [{"name": "_test_int_net"}]}
    with pytest.raises(SuiteError, match="budgets_gmacs"):
        plan_suite(parse_suite(doc, "tol.yaml"), "tol.yaml")
    (plan,) = plan_suite(parse_suite({**doc, "tolerance": 0.07}, "tol.yaml"), "tol.yaml")
    assert plan.knob_value == 16 and plan.deviation == pytest.approx(-0.06 / 1.06, abs=1e-6)


class _DeepNet(nn.Module):
    """A stem 3x3 conv 3 -> c and ``depth`` 3x3 convs c -> c at full resolution, no bias, then
    global pooling and a classifier. ``width`` (a float) is rounded to an even channel count
    c, so MACs jump between plateaus: an adjustment of ``width`` can miss a tight tolerance
    although it ends nowhere near its range's ends."""

    def __init__(self, depth: int = 2, width: float = 16.0, num_classes: int = 10,
                 in_chans: int = 3):
        super().__init__()
        c = 2 * int(width / 2 + 0.5)
        self.convs = nn.Sequential(nn.Conv2d(in_chans, c, 3, padding=1, bias=False),
                                   *[nn.Conv2d(c, c, 3, padding=1, bias=False) for _ in range(depth)])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes, bias=False)

    def forward(self, x):
        return self.fc(self.pool(self.convs(x)).flatten(1))


def _deep_macs(depth: int, c: int) -> int:
    """_DeepNet at 32x32, 10 classes, by hand: each 3x3 conv 9*Cin*Cout*H*W, pooling one MAC
    per input element, the classifier c*10."""
    return 9 * 1024 * (3 * c + depth * c * c) + 1024 * c + 10 * c


def test_depth_adjustment_that_misses_the_tolerance_is_refused():
    """Budget 6.4M MACs. At width 16, depth 3 is the nearest depth (7,536,800: +17.8%; depth 2
    is 5,177,504: -19.1%), so the width is adjusted in [12.8, 20]. Its plateaus at depth 3 are
    c = 14 (5,820,556: -9.1%) and c = 16 (+17.8%): at ±10% the adjustment lands on c = 14; at
    ±2% nothing in the range does, and the match must be refused although c = 14 is no end of
    the range (planted: dropping the check after the adjustment returns the -9.1% match)."""
    assert (_deep_macs(3, 16), _deep_macs(2, 16), _deep_macs(3, 14)) == (7_536_800, 5_177_504,
                                                                        5_820_556)
    registry.register_model(_DeepNet, name="_test_deep_net", family="_test", timm=False,
                            knob=Knob("depth", kind="choice", values=(1, 2, 3, 4), adjust="width"),
                            depth=2, width=16.0)
    try:
        for depth, c in ((3, 14), (3, 16), (2, 16), (4, 12)):
            assert complexity.count_model("_test_deep_net", {"depth": depth, "width": float(c)},
                                          num_classes=10).macs == _deep_macs(depth, c)
        loose = match_budget("_test_deep_net", 0.0064, num_classes=10, tolerance=0.10)
        assert loose.knob_value == 3 and 13 <= loose.adjust["width"] < 15
        assert loose.macs == 5_820_556
        with pytest.raises(BudgetError) as info:
            match_budget("_test_deep_net", 0.0064, num_classes=10, tolerance=0.02)
        err = info.value
        assert err.reason == "off budget" and err.closest.knob_value == 3
        assert str(err).startswith("model _test_deep_net cannot meet budget 0.0064 GMACs within "
                                   "±2%: closest is depth=3 (width ")
        assert abs(err.closest.deviation) > 0.02
    finally:
        registry._REGISTRY.pop("_test_deep_net", None)
        complexity.clear_cache()
