"""mp_resnet: reduction to the single-path ResNet, upcycling, path isolation, path-wise
convolution implementations, registry and fvcore tracing. Tiny nets, 16x16 inputs."""
from __future__ import annotations

import logging

import pytest
import timm
import torch
import torch.nn as nn
from torch.testing import assert_close

from mpbench.baselines.resnet import CifarResNet, resnet_by_depth, resnet_4stage
from mpbench.models.mp_resnet import (MPResNet, PathConv2d, PathHeads, load_single_path,
                                      mp_resnet_4stage, mp_resnet_by_depth)
from mpbench.registry import create_model, get_entry, list_models

# elementwise ops fvcore does not count; mpbench.complexity adds handles for them
ELEMENTWISE = {"aten::add", "aten::add_", "aten::mul", "aten::div", "aten::softmax",
               "aten::sigmoid", "aten::mean"}


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN affine/statistics (init has zero-gamma last BNs) and gate weights."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model


def tiny(paths=2, **kw) -> MPResNet:
    kw.setdefault("num_classes", 10)
    return mp_resnet_by_depth(depth=8, width=4, paths=paths, **kw)


SINGLE_FORMS = {
    "basic": (lambda: resnet_by_depth(8, width=8, num_classes=10),
              lambda **kw: mp_resnet_by_depth(8, width=8, num_classes=10, **kw)),
    "bottleneck": (lambda: CifarResNet("bottleneck", (1, 1, 1), (4, 8, 16), num_classes=10),
                   lambda **kw: MPResNet("bottleneck", (1, 1, 1), (4, 8, 16), num_classes=10, **kw)),
    "4stage": (lambda: resnet_4stage((1, 1, 1, 1), width=4, num_classes=10),
               lambda **kw: mp_resnet_4stage((1, 1, 1, 1), width=4, num_classes=10, **kw)),
}


@pytest.mark.parametrize("form", list(SINGLE_FORMS))
@pytest.mark.parametrize("path_conv", ["grouped", "loop"])
def test_one_path_is_the_single_path_resnet(form, path_conv):
    make_single, make_mp = SINGLE_FORMS[form]
    torch.manual_seed(0)
    single = randomize(make_single()).eval()
    mp = make_mp(paths=1, route="none", path_conv=path_conv)
    assert set(mp.state_dict()) == set(single.state_dict())  # no gates, same names
    assert not mp.gates()
    load_single_path(mp, single, noise_std=0)
    mp.eval()
    x = torch.randn(3, 3, 16, 16)
    assert_close(mp(x), single(x), rtol=0, atol=0)  # same ops on same weights: bitwise


@pytest.mark.parametrize("form", list(SINGLE_FORMS))
def test_one_path_starts_from_the_single_path_weights_under_the_same_seed(form):
    make_single, make_mp = SINGLE_FORMS[form]
    torch.manual_seed(0)
    single = make_single().state_dict()
    after_single = torch.rand(4)
    torch.manual_seed(0)
    mp = make_mp(paths=1, route="none").state_dict()
    assert torch.equal(torch.rand(4), after_single)  # the same random numbers drawn
    assert list(mp) == list(single)
    for name, value in single.items():
        assert torch.equal(mp[name], value), name


@pytest.mark.parametrize("route", ["static", "fdcc", "cross_pred"])
def test_one_path_with_a_route_is_refused_not_rewritten(route):
    with pytest.raises(ValueError, match=f"route: {route} needs paths >= 2"):
        tiny(paths=1, route=route)
    assert tiny(paths=1, route="none").route == "none"


UPCYCLE = [
    dict(paths=2, route="fdcc"),
    dict(paths=4, route="fdcc", norm="softmax_src", gate_init="identity"),
    dict(paths=4, route="fdcc", norm="sigmoid", granularity="channel"),
    dict(paths=4, route="static", norm="sigmoid", merge="mean_logits"),
    dict(paths=2, route="static", gate_init="identity", placement="stage"),
    dict(paths=4, route="cross_pred", granularity="channel", temperature=0.5),
    dict(paths=4, route="cross_pred", norm="sigmoid"),
    dict(paths=4, route="none", merge="mean_logits"),
    dict(paths=8, route="fdcc", merge="mean_logits"),
]


def upcycled_exactly(make_single, make_mp):
    """Upcycle a random single-path net into a multi-path one whose gates held random values
    (upcycling must neutralise them) and check both compute the same function."""
    torch.manual_seed(1)
    single = randomize(make_single()).eval()
    mp = randomize(make_mp(), seed=5)
    for gate in mp.gates().values():
        for p in gate.parameters():
            p.data.normal_()
    load_single_path(mp, single, noise_std=0).eval()
    x = torch.randn(2, 3, 16, 16)
    assert_close(mp(x), single(x))
    return single, mp, x


@pytest.mark.parametrize("cfg", UPCYCLE, ids=lambda c: "-".join(f"{v}" for v in c.values()))
def test_upcycled_network_computes_the_single_path_function(cfg):
    single, mp, x = upcycled_exactly(lambda: resnet_by_depth(8, width=4, num_classes=10),
                                     lambda: tiny(**cfg))
    # noise breaks the symmetry between paths, and so the equality
    load_single_path(mp, single, noise_std=0.5, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(mp(x), single(x), atol=1e-4)


def test_upcycling_breaks_the_symmetry_by_default():
    torch.manual_seed(1)
    single = randomize(resnet_by_depth(8, width=4, num_classes=10)).eval()
    mp = load_single_path(tiny(paths=2, route="fdcc"), single).eval()  # default noise
    w = mp.stages[0][0].conv1.weight
    assert not torch.equal(w[:4], w[4:])  # the two paths differ
    x = torch.randn(8, 3, 16, 16)
    ref, out = single(x), mp(x)
    rel = ((out - ref).norm() / ref.norm()).item()
    assert 0 < rel < 0.05, rel  # but the function is still (nearly) the single-path one


def test_upcycling_rejects_a_mismatched_network():
    with pytest.raises(ValueError, match="width"):
        load_single_path(tiny(paths=2), resnet_by_depth(8, width=8, num_classes=10))


def path_grads(model: MPResNet, j: int) -> torch.Tensor:
    """|d(sum of path j's output) / d(input of each path)|, summed per input path."""
    P, C = model.paths, model.stem[0].out_channels
    x = torch.randn(2, P * C, 16, 16, requires_grad=True)
    out = model.stages(x)
    out.view(2, P, -1)[:, j].sum().backward()
    return x.grad.view(2, P, -1).abs().sum((0, 2))


def test_route_none_keeps_paths_independent():
    model = randomize(tiny(paths=3, route="none")).eval()
    for j in range(3):
        g = path_grads(model, j)
        assert g[j] > 0
        assert all(g[i] == 0 for i in range(3) if i != j), g


@pytest.mark.parametrize("route", ["static", "fdcc", "cross_pred"])
def test_routed_paths_exchange_information(route):
    # the counterpart of the test above: with routing, every input path reaches path j
    model = randomize(tiny(paths=3, route=route)).eval()
    g = path_grads(model, 0)
    assert (g > 0).all(), g


def test_pathconv_grouped_and_loop_agree():
    torch.manual_seed(0)
    for stride, k in ((1, 3), (2, 3), (2, 1)):
        conv = PathConv2d(4, 3, 5, k, stride=stride, padding=k // 2, impl="grouped")
        x = torch.randn(2, 12, 9, 9)
        outs, grads = [], []
        for impl in ("grouped", "loop"):
            conv.impl = impl
            xi = x.clone().requires_grad_()
            conv.weight.grad = None
            y = conv(xi)
            (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
            outs.append(y)
            grads.append((xi.grad, conv.weight.grad.clone()))
        assert outs[0].shape == (2, 20, (9 - 1) // stride + 1, (9 - 1) // stride + 1)
        assert_close(outs[0], outs[1])
        assert_close(grads[0][0], grads[1][0])
        assert_close(grads[0][1], grads[1][1])


def assert_impls_agree(model, x):
    """The grouped and loop path convolutions give the same output and gradients."""
    results = []
    for impl in ("grouped", "loop"):
        model.set_path_conv(impl)
        model.zero_grad()
        out = model(x)
        out.square().mean().backward()
        results.append((out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    assert_close(results[0][0], results[1][0])
    for name, g in results[0][1].items():
        assert_close(g, results[1][1][name], msg=name)


def test_model_grouped_and_loop_agree_forward_and_backward():
    model = randomize(tiny(paths=4, route="fdcc", granularity="channel")).train()
    x = torch.randn(4, 3, 16, 16)
    assert_impls_agree(model, x)


def test_auto_path_conv_uses_loop_on_cpu():
    from mpbench.models.mp_resnet import resolve_path_conv
    assert resolve_path_conv("auto", torch.device("cpu")) == "loop"
    assert resolve_path_conv("auto", torch.device("cuda")) == "grouped"
    assert resolve_path_conv("grouped", torch.device("cpu")) == "grouped"


def test_placement_and_merge():
    every = tiny(paths=2, route="fdcc")  # depth 8: one block per stage
    assert list(every.gates()) == ["stages.1.route0", "stages.2.route0"]
    deep = mp_resnet_by_depth(depth=14, width=4, paths=2, num_classes=10)  # two blocks per stage
    assert len(deep.gates()) == 5
    stage = mp_resnet_by_depth(depth=14, width=4, paths=2, num_classes=10, placement="stage")
    assert list(stage.gates()) == ["stages.1.route0", "stages.2.route0"]
    m = tiny(paths=4, merge="mean_logits")
    assert isinstance(m.fc, PathHeads)
    x = torch.randn(2, 3, 16, 16)
    assert m(x).shape == (2, 10)
    feats = m.global_pool(m.forward_features(x))
    assert_close(m.fc(feats), m.fc.path_logits(feats).mean(1))
    m.reset_classifier(7)
    assert m(x).shape == (2, 7) and isinstance(m.fc, PathHeads)


def test_bad_knobs_are_rejected():
    for bad in (dict(route="fcc"), dict(norm="softmax"), dict(granularity="pixel"),
                dict(placement="end"), dict(merge="max"), dict(path_conv="fast"),
                dict(gate_init="random"), dict(temperature=0)):
        with pytest.raises(ValueError):
            tiny(**bad)


def test_registry_presets_and_timm():
    names = {e.name for e in list_models("mp_resnet")}
    for route in ("none", "static", "fdcc", "cross_pred"):
        assert f"mp_resnet20_p4_{route}" in names
    assert {"mp_resnet20_p2_fdcc", "mp_resnet18_p4_fdcc"} <= names
    entry = get_entry("mp_resnet20_p4_fdcc")
    assert entry.knob.name == "width" and entry.knob.step_for(entry.args()) == 1
    m = timm.create_model("mp_resnet_tiny", num_classes=5, paths=3, route="static")
    assert isinstance(m, MPResNet) and m.paths == 3 and m(torch.randn(2, 3, 16, 16)).shape == (2, 5)
    assert create_model("mp_resnet18_p4_fdcc", width=4).paths == 4


def fvcore_counts(model: nn.Module):
    from fvcore.nn import FlopCountAnalysis
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    fca = FlopCountAnalysis(model.eval(), torch.randn(1, 3, 32, 32))
    fca.unsupported_ops_warnings(False)
    fca.uncalled_modules_warnings(False)
    return fca.total(), fca.by_operator(), dict(fca.unsupported_ops())


@pytest.mark.parametrize("cfg", [
    dict(route="fdcc"), dict(route="static", norm="sigmoid"),
    dict(route="cross_pred", granularity="channel", temperature=2.0),
    dict(route="fdcc", granularity="channel", merge="mean_logits", norm="softmax_src"),
    dict(route="none"),
], ids=lambda c: "-".join(str(v) for v in c.values()))
def test_traces_under_fvcore_with_only_elementwise_ops_uncounted(cfg):
    model = tiny(paths=4, **cfg)
    total, by_op, unsupported = fvcore_counts(model)
    assert total > 0
    assert set(unsupported) <= ELEMENTWISE, unsupported
    if cfg["route"] != "none":
        assert by_op.get("einsum", 0) > 0  # the path mixing is counted
    model.set_path_conv("loop")
    assert fvcore_counts(model)[0] == total
    from mpbench.complexity import count  # raises on any operator it has no handle for
    assert count(model).macs > total  # plus the elementwise gating and residual costs


def test_macs_grow_with_width_and_match_single_path_at_one_path():
    macs = [fvcore_counts(mp_resnet_by_depth(8, width=w, paths=4, num_classes=10))[0]
            for w in (2, 4, 6)]
    assert macs[0] < macs[1] < macs[2]
    one = fvcore_counts(mp_resnet_by_depth(8, width=8, paths=1, route="none", num_classes=10))[0]
    assert one == fvcore_counts(resnet_by_depth(8, width=8, num_classes=10))[0]


# --------------------------------------------------------------------------- P > 1, every form
# bottleneck and four-stage networks, not only the basic three-stage one

@pytest.mark.parametrize("form", list(SINGLE_FORMS))
@pytest.mark.parametrize("route", ["none", "fdcc"])
def test_multi_path_grouped_and_loop_agree_in_every_form(form, route):
    _, make_mp = SINGLE_FORMS[form]
    torch.manual_seed(0)
    model = randomize(make_mp(paths=3, route=route)).train()
    for g in model.gates().values():  # off the input-independent init
        for p in g.parameters():
            p.data.normal_()
    x = torch.randn(4, 3, 16, 16)
    assert_impls_agree(model, x)


@pytest.mark.parametrize("form", list(SINGLE_FORMS))
@pytest.mark.parametrize("cfg", [dict(paths=3, route="none"), dict(paths=2, route="fdcc"),
                                 dict(paths=4, route="cross_pred", norm="sigmoid")],
                         ids=lambda c: f"{c['paths']}-{c['route']}")
def test_upcycling_is_exact_in_every_form(form, cfg):
    make_single, make_mp = SINGLE_FORMS[form]
    upcycled_exactly(make_single, lambda: make_mp(**cfg))


@pytest.mark.parametrize("form", list(SINGLE_FORMS))
def test_route_none_isolates_paths_in_every_form(form):
    _, make_mp = SINGLE_FORMS[form]
    torch.manual_seed(0)
    model = randomize(make_mp(paths=3, route="none")).eval()
    P, C = 3, model.stem[0].out_channels
    x = torch.randn(2, P * C, 16, 16)
    with torch.no_grad():
        ref = model.stages(x).view(2, P, -1)
        for k in range(P):
            xk = x.clone()
            xk.view(2, P, C, 16, 16)[:, k] += torch.randn(2, C, 16, 16)
            out = model.stages(xk).view(2, P, -1)
            for j in range(P):
                if j == k:
                    assert not torch.allclose(out[:, j], ref[:, j])  # path k sees it
                else:
                    assert torch.equal(out[:, j], ref[:, j]), (k, j)  # no other path does
