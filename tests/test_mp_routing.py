"""Gates and cross-connections: normalisation, input (in)dependence, gradients, shapes,
initialisation, mixing maths, and gate recording."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torch.testing import assert_close

from mpbench.models.gates import record_gates
from mpbench.models.mp_resnet import mp_resnet_by_depth
from mpbench.models.routing import (CrossConnection, CrossPredGate, FdccGate, StaticGate,
                                    create_gate, mix_paths)

P, C = 4, 6
ROUTES = ["static", "fdcc", "cross_pred"]
NORMS = ["softmax_dest", "softmax_src", "sigmoid"]


def gate(route, granularity="scalar", **kw):
    g = create_gate(route, P, C, granularity=granularity, **kw)
    with torch.no_grad():  # move off the input-independent init so tests are not trivial
        for p in g.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    return g.eval()


def inputs(n=3, seed=0):
    return torch.randn(n, P * C, 5, 5, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("granularity", ["scalar", "channel"])
def test_normalisation(route, granularity):
    x = inputs()
    for norm in NORMS:
        a = gate(route, granularity, norm=norm)(x)
        assert (a >= 0).all() and (a <= 1).all()
        if norm == "softmax_dest":  # each source's allocations sum to 1 over destinations
            assert_close(a.sum(2), torch.ones_like(a.sum(2)))
        elif norm == "softmax_src":  # each destination is a convex mix of sources
            assert_close(a.sum(1), torch.ones_like(a.sum(1)))
        else:  # sigmoid: independent weights, sums are free
            assert not torch.allclose(a.sum(2), torch.ones_like(a.sum(2)), atol=1e-3)
            assert not torch.allclose(a.sum(1), torch.ones_like(a.sum(1)), atol=1e-3)


@pytest.mark.parametrize("route,granularity", [(r, g) for r in ROUTES for g in ("scalar", "channel")])
def test_shapes(route, granularity):
    g = gate(route, granularity)
    a = g(inputs(n=3))
    assert a.shape == ((3, P, P, C) if granularity == "channel" else (3, P, P))
    assert CrossConnection(g)(inputs(n=3)).shape == (3, P * C, 5, 5)


def test_static_alpha_is_the_same_for_every_input():
    g = gate("static")
    a = g(torch.cat([inputs(seed=1), inputs(seed=2) * 10]))
    assert (a == a[:1]).all()
    assert not torch.allclose(a[0], torch.full_like(a[0], 1 / P))  # but not trivial


@pytest.mark.parametrize("route", ["fdcc", "cross_pred"])
@pytest.mark.parametrize("granularity", ["scalar", "channel"])
def test_feature_dependent_alpha_differs_across_inputs(route, granularity):
    a = gate(route, granularity)(inputs(n=4))
    for i in range(1, 4):
        assert (a[i] - a[0]).abs().max() > 1e-3


@pytest.mark.parametrize("route", ROUTES)
def test_init_is_input_independent_uniform_or_identity(route):
    x = inputs(n=3)
    a = create_gate(route, P, C).eval()(x)
    assert_close(a, torch.full_like(a, 1 / P))  # uniform: W2 = 0, zero bias
    for norm in NORMS:
        ref = create_gate(route, P, C, gate_init="identity", norm=norm).eval()(x)
        assert (ref == ref[:1]).all()
        diag = ref.diagonal(dim1=1, dim2=2)
        assert diag.min() > 0.85 and (ref.sum(2) - diag).max() < 0.5  # biased to α[i, i]
        for tau in (0.5, 3.0):  # the identity bias is scaled by τ: α at init ignores τ
            a = create_gate(route, P, C, gate_init="identity", norm=norm, temperature=tau).eval()(x)
            assert_close(a, ref)


def test_temperature_divides_logits():
    g = gate("fdcc", norm="softmax_dest", temperature=2.5)
    x = inputs()
    assert_close(g(x), (g.logits(x) / 2.5).softmax(2))


def test_gradients_reach_gate_parameters():
    torch.manual_seed(0)
    for route in ROUTES:
        model = mp_resnet_by_depth(8, width=4, paths=P, route=route, num_classes=10).train()
        model(torch.randn(4, 3, 16, 16)).logsumexp(1).sum().backward()
        gates = list(model.gates().values())
        assert gates
        for g in gates:
            # at init only the last layer of the fdcc MLP sees a gradient (W2 = 0 blocks W1)
            last = {"static": ["weight"], "fdcc": ["fc2.weight", "fc2.bias"],
                    "cross_pred": ["weight", "bias"]}[route]
            for name in last:
                p = g.get_parameter(name)
                assert p.grad is not None and p.grad.abs().sum() > 0, (route, name)
    # once W2 has moved, the whole fdcc gate learns
    model = mp_resnet_by_depth(8, width=4, paths=P, route="fdcc", num_classes=10).train()
    for g in model.gates().values():
        nn.init.normal_(g.fc2.weight)
    model(torch.randn(4, 3, 16, 16)).logsumexp(1).sum().backward()
    for g in model.gates().values():
        for name, p in g.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("granularity", ["scalar", "channel"])
def test_mix_paths_matches_the_definition(granularity):
    x = inputs(n=2)
    a = gate("fdcc", granularity, norm="sigmoid")(x)
    xs = x.view(2, P, C, 5, 5)
    if granularity == "scalar":
        want = [sum(a[:, i, j].view(2, 1, 1, 1) * xs[:, i] for i in range(P)) for j in range(P)]
    else:
        want = [sum(a[:, i, j].view(2, C, 1, 1) * xs[:, i] for i in range(P)) for j in range(P)]
    assert_close(mix_paths(x, a, P), torch.cat(want, 1))


def test_record_gates_collects_per_sample_alphas_and_cleans_up():
    model = mp_resnet_by_depth(8, width=4, paths=P, route="fdcc", granularity="channel",
                               num_classes=10).eval()
    for g in model.gates().values():
        nn.init.normal_(g.fc2.weight)
    x1, x2 = torch.randn(3, 3, 16, 16), torch.randn(2, 3, 16, 16)
    with record_gates(model) as rec:
        model(x1)
        model(x2)
    assert rec.layers == list(model.gates()) == ["stages.1.route0", "stages.2.route0"]
    a = rec.alphas["stages.1.route0"]
    assert a.shape == (5, P, P, 4) and not a.requires_grad  # C = stage-1 output width
    # the recorded values are the gate's output on that layer's input
    inner = {}
    h = model.stages[1][0].register_forward_hook(lambda m, i, o: inner.setdefault("x", i[0]))
    model(x2)
    h.remove()
    assert_close(a[3:], model.gates()["stages.1.route0"](inner["x"]))
    assert all(not g._forward_hooks for g in model.gates().values())  # hooks removed
    with record_gates(mp_resnet_by_depth(8, width=4, paths=2, route="none")) as rec:
        pass
    assert rec.alphas == {}


def test_gate_classes_are_the_ones_named():
    assert isinstance(create_gate("static", 2, 3), StaticGate)
    assert isinstance(create_gate("fdcc", 2, 3), FdccGate)
    assert isinstance(create_gate("cross_pred", 2, 3), CrossPredGate)
    assert create_gate("fdcc", 4, 8, gate_reduction=2).fc1.out_features == 16  # floor of 16
    assert create_gate("fdcc", 4, 64, gate_reduction=4).fc1.out_features == 64
    with pytest.raises(ValueError):
        create_gate("none", 2, 3)


# --------------------------------------------------------------------------- fair starts
# DESIGN.md §8: every norm x gate_init mixes identical inputs into outputs of the same scale

GATE_INITS = ["uniform", "identity"]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("granularity", ["scalar", "channel"])
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("gate_init", GATE_INITS)
def test_init_alpha_has_unit_column_sums(route, granularity, norm, gate_init):
    for tau in (1.0, 0.5):
        a = create_gate(route, P, C, granularity=granularity, norm=norm, gate_init=gate_init,
                        temperature=tau).eval()(inputs())
        assert_close(a.sum(1), torch.ones_like(a.sum(1)))  # Σ_i α[i, j] = 1 for every j
        # and the same α whatever the norm: an ablation of norm starts from one function
        ref = create_gate(route, P, C, granularity=granularity, gate_init=gate_init).eval()(inputs())
        assert_close(a, ref)
        x = inputs(n=2)[:, :C].repeat(1, P, 1, 1)  # identical paths: the mix leaves them alone
        assert_close(mix_paths(x, a[:2], P), x)


def feature_rms(route, norm, gate_init, granularity="scalar"):
    torch.manual_seed(0)  # the same weights for every norm (gates draw the same numbers)
    model = mp_resnet_by_depth(20, width=4, paths=P, route=route, norm=norm, gate_init=gate_init,
                               granularity=granularity, num_classes=10).eval()
    with torch.no_grad():
        return model.forward_features(torch.randn(4, 3, 16, 16, generator=torch.Generator()
                                                  .manual_seed(1))).square().mean().sqrt().item()


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("granularity", ["scalar", "channel"])
def test_feature_scale_at_init_does_not_depend_on_norm_or_gate_init(route, granularity):
    # 8 cross-connections: a column sum of P/2 (sigmoid at logit 0) would compound to 2^8.
    # uniform and identity differ by less than 2x: uniform averages paths the stage
    # projections made different (route none sits ~3x above uniform for the same reason)
    rms = {(n, g): feature_rms(route, n, g, granularity) for n in NORMS for g in GATE_INITS}
    for g in GATE_INITS:
        per_norm = [rms[n, g] for n in NORMS]
        assert max(per_norm) / min(per_norm) < 1.05, rms
    assert max(rms.values()) / min(rms.values()) < 3, rms


@pytest.mark.parametrize("granularity", ["scalar", "channel"])
def test_cross_pred_row_depends_only_on_its_own_source(granularity):
    g = gate("cross_pred", granularity)
    x = inputs(n=2)
    ref = g(x)
    for k in range(P):
        xk = x.clone()
        xk.view(2, P, C, 5, 5)[:, k] += torch.randn(2, C, 5, 5)
        a = g(xk)
        for i in range(P):
            if i == k:
                assert (a[:, i] - ref[:, i]).abs().max() > 1e-4  # row k follows X_k
            else:
                assert_close(a[:, i], ref[:, i], rtol=0, atol=1e-6)  # row i does not
    # the joint fdcc gate is the contrast: every row sees every source
    f = gate("fdcc", granularity)
    xk = x.clone()
    xk.view(2, P, C, 5, 5)[:, 0] += torch.randn(2, C, 5, 5)
    assert (f(xk)[:, 1:] - f(x)[:, 1:]).abs().max() > 1e-4
