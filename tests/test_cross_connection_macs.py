"""One cross-connection's MACs, counted by hand from its shapes (docs/complexity.md).

The model: ``mp_resnet_tiny`` with P = 4 paths of C = 8 channels in stage 0 (depth 8: one basic
block per stage), route ``fdcc``. The first cross-connection sits in front of stage 1's first
block, so it sees stage 0's output: B x P·C x H x W = 1 x 32 x 32 x 32. DESIGN.md §1:

    s      = concat_i GAP(X_i)                  # 32 values
    logits = W2 · ReLU(BN(W1 · s))              # hidden = max(P·C / r, 16) = max(32/16, 16) = 16
    α      = softmax over destinations          # B x P x P (scalar) or B x P x P x C (channel)
    U_j    = Σ_i α[i, j] · X_i                  # the mixing

Convention: reductions cost 1 MAC per input element, linear layers in x out (bias free),
batch norm as fvcore counts it in eval mode (1 to normalise + 1 for the affine scale and shift,
per element), softmax 1 per output element, ReLU free, and the mixing one multiply-add per
(source, output element) pair.
"""
from __future__ import annotations

import json

import pytest
import torch

from mpbench.complexity import count_model
from mpbench.models.routing import CrossConnection
from mpbench.registry import create_model

P, C, H, W = 4, 8, 32, 32
ARGS = {"paths": P, "width": C, "route": "fdcc"}


def hand_count(granularity: str) -> dict[str, int]:
    elements = P * C * H * W                 # 4 * 8 * 32 * 32 = 32,768 input elements
    hidden = max(P * C // 16, 16)            # 16
    gate_values = P * P * (C if granularity == "channel" else 1)  # 16 (scalar) / 128 (channel)
    return {
        "gap": elements,                     # 32,768: every input element accumulated once
        "fc1": P * C * hidden,               # 32 * 16 = 512
        "bn": 2 * hidden,                    # 2 * 16 = 32 (BatchNorm1d, affine)
        "fc2": hidden * gate_values,         # 16 * 16 = 256 (scalar) / 16 * 128 = 2,048
        "softmax": gate_values,              # 16 / 128
        "mix": P * elements,                 # 4 sources per output element: 131,072
    }


def first_cross_connection(granularity: str) -> tuple[str, tuple[int, ...]]:
    """Name and input shape of the model's first cross-connection (checks the premise)."""
    model = create_model("mp_resnet_tiny", granularity=granularity, **ARGS).eval()
    name, module = next((n, m) for n, m in model.named_modules()
                        if isinstance(m, CrossConnection))
    seen = []
    module.register_forward_hook(lambda mod, inputs, output: seen.append(inputs[0].shape))
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    return name, tuple(seen[0])


@pytest.mark.parametrize("granularity", ["scalar", "channel"])
def test_one_cross_connection_costs_its_hand_count(granularity):
    name, shape = first_cross_connection(granularity)
    assert shape == (1, P * C, H, W)
    hand = hand_count(granularity)
    c = count_model("mp_resnet_tiny", {**ARGS, "granularity": granularity})
    gate = f"{name}.gate"
    assert c.by_module[f"{gate}.fc1"] == hand["fc1"]
    assert c.by_module[f"{gate}.bn"] == hand["bn"]
    assert c.by_module[f"{gate}.act"] == 0
    assert c.by_module[f"{gate}.fc2"] == hand["fc2"]
    # the gate: pooling + fc1 + bn + fc2 + softmax (scalar: 33,584; channel: 35,488)
    assert c.by_module[gate] == sum(hand[k] for k in ("gap", "fc1", "bn", "fc2", "softmax"))
    # the whole cross-connection adds the mixing (scalar: 164,656; channel: 166,560)
    assert c.by_module[name] == sum(hand.values())
    assert sum(hand.values()) == (164_656 if granularity == "scalar" else 166_560)


def test_cli_breakdown_shows_the_same_count(capsys):
    from mpbench.cli import main

    assert main(["flops", "mp_resnet_tiny", "--args", json.dumps(ARGS), "--json",
                 "--depth", "4"]) == 0
    out = json.loads(capsys.readouterr().out)
    name, _ = first_cross_connection("scalar")
    assert out["by_module"][name]["macs"] == sum(hand_count("scalar").values()) == 164_656
    assert out["by_module"][f"{name}.gate"]["macs"] == 33_584
