"""Budget matching: every family lands on a budget, searches are right, suites use it."""
from __future__ import annotations

import json
import math
import pickle

import pytest
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
             "cifar_res2net29_16wx4s_w16", "ensemble_resnet20_x3", "mp_resnet20_p4_fdcc")


def representatives() -> list[str]:
    """One model per family whose knob is a width (int/float). Tiny variants are left out:
    they exist for smoke runs, with deliberately coarse knobs."""
    names = []
    for family in list_families():
        entries = [e for e in list_models(family)
                   if e.knob and e.knob.kind != "choice" and "tiny" not in e.name
                   and not e.family.startswith("_")]
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


TEST_MODELS = {
    "_test_int_net": dict(knob=Knob("width", kind="int", low=4, high=64, step=4), width=16),
    "_test_float_net": dict(knob=Knob("mult", kind="float", low=0.25, high=8), mult=1.0),
    "_test_fixed_net": dict(width=16),
}


@pytest.fixture(scope="module", autouse=True)
def test_models():
    """Registered test models with known knobs (the real families' knobs keep evolving)."""
    for name, kwargs in TEST_MODELS.items():
        registry.register_model(_build_net, name=name, family="_test", timm=False, **kwargs)
    yield
    for name in TEST_MODELS:
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


def test_depth_knob_takes_the_nearest_step_even_beyond_tolerance():
    m = match_budget("cifar_resnet56", 0.13)
    assert (m.knob, m.knob_value) == ("depth", 56)
    assert m.deviation == pytest.approx(0.127105 / 0.13 - 1, abs=1e-4)  # -2.2%: still accepted
    m = match_budget("cifar_resnet56", 0.048)
    assert m.knob_value == 20  # 0.041 vs 0.056 GMACs


def test_depth_knob_refuses_a_budget_beyond_its_deepest_choice():
    with pytest.raises(BudgetError) as info:
        match_budget("cifar_resnet56", 0.56)
    err = info.value
    assert str(err).startswith("model cifar_resnet56 cannot meet budget 0.56 GMACs within ±2%: "
                               "closest is depth=110 at 0.2558 GMACs")
    assert err.closest.knob_value == 110 and err.budget_gmacs == 0.56
    clone = pickle.loads(pickle.dumps(err))
    assert str(clone) == str(err) and clone.closest == err.closest


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
    assert [(r.display, r.budget_gmacs) for r in rows] == [
        ("net", ok), ("cifar_resnet20", ok), ("net", off), ("cifar_resnet20", off)]
    assert isinstance(rows[0], Match) and rows[0].knob_value == 16
    assert isinstance(rows[2], BudgetError) and rows[2].closest.label == "net"
    assert rows[1].knob_value == 20 and rows[1].deviation > 1  # as given, never refused
    assert all(r.args["num_classes"] == 10 for r in (rows[0], rows[1]))


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
