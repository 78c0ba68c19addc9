"""MAC counting: the convention of DESIGN.md §3, its pinned references, and its cross-check."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn as nn
from timm.layers import SEModule
from torch.utils.flop_counter import FlopCounterMode

from mpbench import complexity
from mpbench.complexity import UnsupportedOpError, count, count_model, estimate_model
from mpbench.errors import UserError
from mpbench.registry import get_entry, list_families, list_models


def registered(name: str) -> bool:
    return name in {e.name for e in list_models()}


def small_args(entry) -> dict:
    """Arguments that keep a model small (and fast to count) while keeping its structure."""
    knob = entry.knob
    if knob is None:
        return {}
    if knob.kind == "choice":
        return {knob.name: min(knob.values)}
    default = entry.defaults.get(knob.name, knob.high)
    value = max(knob.low, default / 4)
    if knob.kind == "int":
        step = knob.step_for(entry.args())
        value = max(step * math.ceil(knob.low / step), step * round(value / step))
    return {knob.name: value}


def one_per_family() -> list[str]:
    return [list_models(f)[0].name for f in list_families()]


# --------------------------------------------------------------------------- references

# DESIGN.md §2: fvcore MACs at batch 1, 32x32 input, eval mode, 100 classes.
PINS = {
    "cifar_resnet56": (0.862e6, 126.8e6),
    "cifar_resnet18": (11.22e6, 0.557e9),
    "cifar_wrn28_10": (36.54e6, 5.25e9),
    "cifar_resnext29_8x64d": (34.52e6, 5.40e9),
}


@pytest.mark.parametrize("name", sorted(PINS))
def test_pinned_reference_numbers(name):
    assert registered(name), f"pinned model {name} is not registered: renamed? update PINS"
    params, macs = PINS[name]
    c = count_model(name)
    assert c.params == pytest.approx(params, rel=0.005)
    assert c.macs == pytest.approx(macs, rel=0.005)
    assert c.gmacs == c.macs / 1e9


# --------------------------------------------------------------------------- conventions

class ConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.bn_plain = nn.BatchNorm2d(8, affine=False)

    def forward(self, x):
        return self.bn_plain(self.bn(self.conv(x)))


def test_batch_norm_counts_as_fvcore_eval_not_folded():
    model = ConvBN()
    model.train()
    model.bn_plain.eval()  # a mixed state, which count() must restore exactly
    c = count(model, (3, 8, 8))
    conv = 8 * 3 * 3 * 3 * 8 * 8
    elements = 8 * 8 * 8
    assert c.by_operator == {"conv": conv, "batch_norm": 2 * elements + 1 * elements}
    assert c.by_module["bn"] == 2 * elements        # normalise + affine
    assert c.by_module["bn_plain"] == elements      # normalise only
    assert c.macs == conv + 3 * elements
    assert model.training and model.conv.training and model.bn.training
    assert not model.bn_plain.training


def test_train_mode_model_is_counted_in_eval_mode():
    model = ConvBN().train()
    assert count(model, (3, 8, 8)).macs == count(ConvBN().eval(), (3, 8, 8)).macs


class SEBlock(nn.Module):
    """conv -> timm SE (mean, fc, ReLU, fc, sigmoid, mul) -> residual add."""

    def __init__(self, chs: int = 16):
        super().__init__()
        self.conv = nn.Conv2d(chs, chs, 3, padding=1, bias=False)
        self.se = SEModule(chs, rd_ratio=1 / 4)

    def forward(self, x):
        return x + self.se(self.conv(x))


def test_gating_elementwise_ops_are_counted():
    c, hw = 16, 8 * 8
    block = SEBlock(c)
    rd = block.se.fc1.out_channels      # timm rounds the reduction to a multiple of 8
    result = count(block, (c, 8, 8))
    ops = result.by_operator
    assert ops["mean"] == c * hw        # squeeze: every element accumulated once
    assert ops["sigmoid"] == c          # one gate per channel
    assert ops["mul"] == c * hw         # excitation: scale every element
    assert ops["add"] == c * hw         # residual addition
    assert ops["conv"] == c * c * 9 * hw + 2 * c * rd
    assert result.by_module["se"] == c * hw + 2 * c * rd + c + c * hw  # ReLU is free
    assert result.by_module["se.gate"] == c


def test_softmax_and_avg_pool_are_counted():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.pool = nn.AvgPool2d(2)

        def forward(self, x):
            return torch.softmax(self.pool(x).flatten(1), dim=1)

    ops = count(Net(), (4, 8, 8)).by_operator
    assert ops == {"avg_pool": 4 * 4 * 4 * 2 * 2, "softmax": 4 * 4 * 4}


# --------------------------------------------------------------------------- errors

class Cumulative(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return torch.cumsum(self.conv(x), dim=1)


class Wrapper(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = Cumulative()

    def forward(self, x):
        return self.body(x)


def test_unhandled_operator_is_an_error_naming_op_and_module():
    with pytest.raises(UnsupportedOpError) as info:
        count(Wrapper(), (3, 8, 8))
    message = str(info.value)
    assert "aten::cumsum" in message and "body" in message
    assert isinstance(info.value, UserError)
    assert "\n" not in message


def test_unhandled_fft_is_an_error():
    class Spectral(nn.Module):
        def forward(self, x):
            return torch.fft.rfft2(x).abs()

    with pytest.raises(UnsupportedOpError, match="fft"):
        count(Spectral(), (3, 8, 8))


def test_uncalled_module_is_an_error():
    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)
            self.spare_head = nn.Linear(4, 10)

        def forward(self, x):
            return self.conv(x)

    with pytest.raises(UnsupportedOpError, match="spare_head"):
        count(Unused(), (3, 8, 8))


def test_registered_handle_makes_an_operator_countable():
    complexity.register_op_handle("aten::cumsum", lambda inputs, outputs: 7)
    try:
        assert count(Wrapper(), (3, 8, 8)).by_operator["cumsum"] == 7
    finally:
        del complexity.counting._EXTRA_HANDLES["aten::cumsum"]
        complexity.clear_cache()


def test_contradicting_num_classes_is_a_user_error():
    with pytest.raises(UserError, match="num_classes"):
        count_model("cifar_resnet20", {"num_classes": 10}, num_classes=100)


# --------------------------------------------------------------------------- registered models

@pytest.mark.parametrize("name", one_per_family())
def test_fast_build_counts_like_a_normal_build(name):
    """count_model skips random init; the counts must not notice, and the RNG is untouched."""
    entry = get_entry(name)
    args = small_args(entry)
    rng = torch.random.get_rng_state()
    fast = count_model(name, args)
    assert torch.equal(rng, torch.random.get_rng_state())
    normal = count(entry.build(**complexity.model_args(entry, args)))
    assert (fast.macs, fast.params, fast.by_module) == (normal.macs, normal.params,
                                                        normal.by_module)


def _cross_check(name: str) -> None:
    entry = get_entry(name)
    args = small_args(entry)
    c = count_model(name, args)
    model = entry.build(**complexity.model_args(entry, args)).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    assert c.matmul_macs == pytest.approx(counter.get_total_flops() / 2, rel=1e-4), name
    assert estimate_model(name, args) == pytest.approx(c.macs, rel=1e-3), name
    assert c.matmul_macs > 0.8 * c.macs  # elementwise handles stay a small share


@pytest.mark.parametrize("name", one_per_family())
def test_fvcore_agrees_with_torch_flop_counter(name):
    _cross_check(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", [e.name for e in list_models()])
def test_fvcore_agrees_with_torch_flop_counter_every_model(name):
    _cross_check(name)


def test_count_model_is_cached_per_arguments_and_geometry():
    a = count_model("cifar_resnet_tiny", {"width": 8})
    assert count_model("cifar_resnet_tiny", {"width": 8}) is a
    b = count_model("cifar_resnet_tiny", {"width": 8}, input_size=(3, 16, 16), num_classes=10)
    assert b.macs < a.macs and b.params < a.params


# --------------------------------------------------------------------------- CLI

def test_cli_flops_json(capsys):
    from mpbench.cli import main

    assert main(["flops", "cifar_resnet20", "--json", "--depth", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    c = count_model("cifar_resnet20")
    assert out["macs"] == c.macs and out["params"] == c.params
    assert out["knob"] == "depth" and out["knob_value"] == 20
    assert "stages.0" in out["by_module"] and "stages.0.0" not in out["by_module"]


def test_cli_flops_table_and_budget(capsys):
    from mpbench.cli import main

    assert main(["flops", "cifar_resnet_tiny", "--budget", "0.0127", "--args", "depth=8"]) == 0
    out = capsys.readouterr().out
    assert "GMACs" in out and "budget" in out and "stages" in out and "FLOP" not in out


def test_cli_flops_bad_arguments_exit_2(capsys):
    from mpbench.cli import main

    assert main(["flops", "cifar_resnet20", "--args", "nonsense"]) == 2
    assert main(["flops", "no_such_model"]) == 2
    assert main(["flops"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 3
