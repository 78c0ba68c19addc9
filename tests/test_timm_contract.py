"""Every registered model honours timm's model contract (mpbench's own checks, not timm's).

Over every model in ``mpbench.registry.list_models()``: a ``pretrained_cfg``/``default_cfg``
with the model's input size, channel statistics, classes and head/stem names, which
``timm.data.resolve_model_data_config`` reads; ``num_features``/``head_hidden_size``;
``forward_features``/``forward_head(pre_logits=)``/``forward_intermediates`` and
``feature_info``; ``reset_classifier(0)`` / ``(0, '')``; filing under mpbench's own module
in timm's registry. The builds with timm's options (``num_classes=0``, ``global_pool=''``,
``features_only=True``) and TorchScript / ``torch.fx`` (and fx-then-script) run on one
representative per family and on every mp_resnet route and merge by default, and on every
model with ``pytest -m slow``. Inputs are tiny: batch 2, 32x32 (64x64 for models whose
``input_size`` is larger: the smallest that every ImageNet stem takes).
"""
import warnings

import pytest
import timm
import torch
import torch.nn as nn
from timm.data import resolve_model_data_config
from timm.models._features import FeatureGetterNet  # not re-exported by timm.models
from torch.testing import assert_close

import mpbench  # noqa: F401  (registers the built-in models)
from mpbench import registry
from mpbench.models.mp_resnet import MERGES, MPResNet
from mpbench.models.routing import ROUTES
from mpbench.registry import (CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD,
                              IMAGENET_MEAN, IMAGENET_STD, Knob, TimmContractError,
                              get_entry, list_families, list_models, register_model)

ALL = [e.name for e in list_models()]
CONTRACT_METHODS = ("forward_features", "forward_head", "forward_intermediates",
                    "reset_classifier", "num_features", "head_hidden_size", "feature_info")

# The cheapest member of each family for the expensive checks; a family not listed here
# (one added later) is represented by its first model.
REPRESENTATIVES = {
    "resnet": "cifar_resnet_tiny", "resnet4": "cifar_resnet18", "wrn": "cifar_wrn16_4",
    "wrn_postact": "cifar_wrn28_10_postact", "resnext": "cifar_resnext29_8x8d_w16",
    "se_resnet": "cifar_se_resnet20", "sk_resnet": "cifar_skresnet20",
    "resnest": "cifar_resnest29_2s1x24d_w16", "res2net": "cifar_res2net29_16wx4s_w16",
    "ensemble": "ensemble_resnet20_x3", "mp_resnet": "mp_resnet_tiny",
}
# Knob overrides that make a representative cheap without changing its code path.
SMALL = {"cifar_resnet18": dict(width=8), "cifar_wrn16_4": dict(widen_factor=0.5),
         "cifar_wrn28_10_postact": dict(widen_factor=0.25), "ensemble_resnet20_x3": dict(width=4)}


def representatives() -> list[str]:
    out = []
    for family in list_families():
        names = [e.name for e in list_models(family)]
        out.append(REPRESENTATIVES.get(family) if REPRESENTATIVES.get(family) in names
                   else names[0])
    return out


REPS = representatives()
# Every mp_resnet route and every merge, with the routing options that change the traced
# graph spread over them (every route x merge pair: ``pytest -m slow``).
MP_VARIANTS = [
    dict(route="none", merge="mean_logits"),
    dict(route="static", merge="concat", granularity="channel", placement="stage"),
    dict(route="fdcc", merge="mean_logits", granularity="channel", norm="sigmoid",
         temperature=2.0),
    dict(route="cross_pred", merge="concat", norm="softmax_src", path_conv="grouped"),
]
MP_ALL_PAIRS = [dict(route=r, merge=m) for r in ROUTES for m in MERGES]
assert {v["route"] for v in MP_VARIANTS} == set(ROUTES)
assert {v["merge"] for v in MP_VARIANTS} == set(MERGES)
def mp_ids(variants):
    return ["-".join(f"{k}={v}" for k, v in kw.items()) for kw in variants]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Batch-2 32x32 forwards gain nothing from threads, and on a busy machine a second
    OpenMP thread makes them many times slower (as in mpbench.complexity's counting)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def has_contract(model: nn.Module) -> bool:
    return all(hasattr(model, n) for n in CONTRACT_METHODS)


def example(model_or_cfg, batch: int = 2) -> torch.Tensor:
    cfg = getattr(model_or_cfg, "pretrained_cfg", model_or_cfg)
    c, h, w = cfg["input_size"]
    size = (h, w) if (h, w) == (32, 32) else (64, 64)
    return torch.randn(batch, c, *size, generator=torch.Generator().manual_seed(0))


def build(name: str, **kwargs) -> nn.Module:
    return timm.create_model(name, **{**SMALL.get(name, {}), **kwargs}).eval()


def expected_stats(entry, num_classes):
    cfg = entry.default_cfg
    if "mean" in cfg:
        return tuple(cfg["mean"]), tuple(cfg["std"])
    if tuple(cfg.get("input_size", entry.input_size or (3, 32, 32)))[-2:] == (32, 32):
        return (CIFAR10_MEAN, CIFAR10_STD) if num_classes == 10 else (CIFAR100_MEAN, CIFAR100_STD)
    return IMAGENET_MEAN, IMAGENET_STD


# --------------------------------------------------------------------------- every model

@pytest.mark.parametrize("name", ALL)
def test_model_contract(name):
    """cfg, registry filing, head and feature methods, classifier resets: one build each."""
    entry = get_entry(name)
    model = timm.create_model(name).eval()
    cfg = model.pretrained_cfg
    assert model.default_cfg is cfg and cfg["architecture"] == name
    size = tuple(entry.default_cfg.get("input_size", entry.input_size or (3, 32, 32)))
    assert tuple(cfg["input_size"]) == size
    classes = getattr(model, "num_classes", entry.default_num_classes())
    assert cfg["num_classes"] == classes
    assert (tuple(cfg["mean"]), tuple(cfg["std"])) == expected_stats(entry, classes)
    assert cfg["crop_pct"] == (1.0 if size[-2:] == (32, 32) else 0.875) or "crop_pct" in entry.default_cfg
    assert isinstance(model.get_submodule(cfg["first_conv"]), nn.Conv2d)
    data = resolve_model_data_config(model)
    assert data["input_size"] == size and tuple(data["mean"]) == tuple(cfg["mean"])
    assert timm.models.get_pretrained_cfg(name).input_size == size
    # filed under its own module in timm's registry, never under one of timm's
    assert name in timm.list_models(module=entry.fn.__module__)
    short = entry.fn.__module__.rsplit(".", 1)[-1]
    if short != entry.fn.__module__:  # a dotted module: never filed under its last part
        assert name not in timm.list_models(module=short)
    assert name not in timm.list_models(module="resnet")
    with pytest.raises(ValueError, match="no hub weights"):
        timm.create_model(name, pretrained=True)

    if not has_contract(model):  # e.g. a plain nn.Sequential plugin: see test_plugin_model
        return
    heads = cfg["classifier"] if isinstance(cfg["classifier"], tuple) else (cfg["classifier"],)
    # timm drops '<classifier>.weight'/'.bias' when the classes change: they must exist, and
    # the named modules must be what computes the logits (an ensemble: its members' heads)
    state = model.state_dict()
    for h in heads:
        assert state[f"{h}.weight"].shape[-2] == state[f"{h}.bias"].shape[-1] == classes, h
    head_out = {}
    hooks = [model.get_submodule(h).register_forward_hook(
        lambda mod, inp, out, h=h: head_out.__setitem__(h, out)) for h in heads]
    assert model.head_hidden_size == model.num_features
    x = example(model)
    with torch.no_grad():
        y = model(x)
        for hook in hooks:
            hook.remove()
        outs = [head_out[h] for h in heads]
        assert_close(outs[0] if len(outs) == 1 else model.combine_logits(torch.stack(outs)), y)
        final, inter = model.forward_intermediates(x)
        assert y.shape == (2, classes)
        assert_close(model.forward_head(final), y)
        pre = model.forward_head(final, pre_logits=True)
        assert pre.shape == (2, model.num_features)
        assert len(inter) == len(model.feature_info)
        for f, info in zip(inter, model.feature_info):
            assert f.shape[1] == info["num_chs"], info
            assert x.shape[-1] // f.shape[-1] == info["reduction"], info
        assert final.shape[1] == model.feature_info[-1]["num_chs"]
        if size[-2:] == (32, 32):  # an ImageNet-shaped net (stride 32) needs its input_size
            assert model.feature_info[-1]["reduction"] <= 16, (
                f"{name} downsamples like an ImageNet model: register it with "
                "input_size=(3, 224, 224) (or default_cfg=...)")
        model.reset_classifier(0)
        assert model.num_classes == 0
        assert_close(model.forward_head(final), pre)
        model.reset_classifier(0, "")
        assert_close(model.forward_head(final), final)
        model.reset_classifier(7, "avg")
        assert model.num_classes == 7 and model.forward_head(final).shape == (2, 7)


# --------------------------------------------------------------------------- timm's options

def check_create_options(name: str, **kwargs) -> None:
    ref = build(name, **kwargs)
    if not has_contract(ref):
        return
    x = example(ref)
    with torch.no_grad():
        feats = ref.forward_features(x)
        pooled = build(name, num_classes=0, **kwargs)
        assert pooled.num_classes == 0 and pooled.pretrained_cfg["input_size"]
        assert pooled(x).shape == (2, ref.num_features)
        unpooled = build(name, num_classes=0, global_pool="", **kwargs)
        assert unpooled(x).shape == feats.shape
        fmodel = build(name, features_only=True, **kwargs)
        maps = fmodel(x)
        assert [m.shape[1] for m in maps] == fmodel.feature_info.channels()
        assert fmodel.feature_info.channels() == [i["num_chs"] for i in ref.feature_info]
        assert fmodel.feature_info.reduction() == [i["reduction"] for i in ref.feature_info]
        assert tuple(fmodel.pretrained_cfg["input_size"]) == tuple(ref.pretrained_cfg["input_size"])
        last = build(name, features_only=True, out_indices=(-1,), **kwargs)
        assert [m.shape for m in last(x)] == [maps[-1].shape]


def check_script_and_fx(model: nn.Module) -> None:
    model.eval()
    x = example(model)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = model(x)
        assert_close(torch.jit.script(model)(x), y)
        traced = torch.fx.symbolic_trace(model)
        assert_close(traced(x), y)
        assert_close(torch.jit.script(traced)(x), y)


@pytest.mark.parametrize("name", REPS)
def test_create_options_per_family(name):
    check_create_options(name)


@pytest.mark.parametrize("name", REPS)
def test_script_and_fx_per_family(name):
    check_script_and_fx(build(name))


@pytest.mark.parametrize("kwargs", MP_VARIANTS, ids=mp_ids(MP_VARIANTS))
def test_mp_resnet_routes_and_merges(kwargs):
    """Every route and merge (and the options that change the graph): timm's options,
    TorchScript and fx; features are the paths' maps concatenated (P·C channels)."""
    check_create_options("mp_resnet_tiny", **kwargs)
    model = build("mp_resnet_tiny", **kwargs)
    assert isinstance(model, MPResNet)
    # each stage's P paths of C channels: the last block's P·C-channel (grouped) output
    assert [i["num_chs"] for i in model.feature_info] == [
        b[-1].conv2.out_channels for b in model.stages]
    check_script_and_fx(model)


def test_mpbench_create_model_is_the_same_build():
    ours = mpbench.create_model("cifar_resnet_tiny", num_classes=10)
    theirs = timm.create_model("cifar_resnet_tiny", num_classes=10)
    assert ours.pretrained_cfg == theirs.pretrained_cfg
    assert ours.pretrained_cfg["mean"] == CIFAR10_MEAN and ours.pretrained_cfg["num_classes"] == 10
    feats = mpbench.create_model("cifar_resnet_tiny", features_only=True, out_indices=(1, 2))
    assert feats.feature_info.channels() == [16, 32]


def test_path_conv_is_chosen_outside_forward():
    model = build("mp_resnet_tiny")
    x = example(model)
    with torch.no_grad():
        outs = []
        for impl in ("grouped", "loop", "auto"):
            model.set_path_conv(impl)
            convs = [m for m in model.modules() if hasattr(m, "grouped")]
            assert all(c.grouped == (impl == "grouped") for c in convs)  # auto on CPU: loop
            outs.append(torch.jit.script(model)(x))
            outs.append(torch.fx.symbolic_trace(model)(x))
        for out in outs[1:]:
            assert_close(out, outs[0])


def smallest(name: str) -> dict:
    """The knob at its smallest value, the family's smallest registered ``depth`` and one
    block a stage: the same code path (blocks, stages, routes) as the registered variant,
    at a fraction of its cost (fx tracing grows with depth)."""
    entry = get_entry(name)
    args = {}
    if "depth" in entry.defaults:
        args["depth"] = min(e.defaults["depth"] for e in list_models(entry.family)
                            if "depth" in e.defaults)
    if "layers" in entry.defaults:
        args["layers"] = (1,) * len(entry.defaults["layers"])
    knob = entry.knob
    if knob is None:
        return args
    if knob.kind == "choice":
        return {**args, knob.name: min(knob.values)}
    if knob.kind == "float":
        return {**args, knob.name: knob.low}
    step = knob.step_for(entry.args(**args))
    return {**args, knob.name: max(step, -(-int(knob.low) // step) * step)}


# timm's wrapper of each ``feature_cls`` name (timm.models._builder.build_model_with_cfg).
# (timm's list/dict wrappers rerun the top-level modules in sequence: they cannot hold a
# multi-path model, see test_feature_cfg_as_timm_merges_it.)
FEATURE_CLASSES = {"getter": FeatureGetterNet, "fx": timm.models.FeatureGraphNet,
                   "hook": timm.models.FeatureHookNet}


FEATURE_WRAPPERS = {**FEATURE_CLASSES, "list": timm.models.FeatureListNet,
                    "dict": timm.models.FeatureDictNet}


def feature_maps(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    out = model(x)
    return list(out.values()) if isinstance(out, dict) else list(out)


@pytest.mark.parametrize("name", ALL)
def test_feature_cfg_every_wrapper(name):
    """``feature_cfg={"feature_cls": ...}`` picks timm's wrapper, as for timm's own models;
    each gives the stage maps of the plain model (same seed, same weights); its
    ``out_indices`` are honoured. An ensemble's maps are no module's output: only the
    getter gives them, and the others fail naming the option."""
    args = smallest(name)
    torch.manual_seed(0)
    plain = timm.create_model(name, **args).eval()
    if not has_contract(plain):
        return
    x = example(plain, batch=1)
    with torch.no_grad():
        want = plain.forward_intermediates(x, intermediates_only=True)
    names = dict(plain.named_modules())
    computed = any(i["module"] not in names for i in plain.feature_info)
    assert computed == (get_entry(name).family == "ensemble")
    for feature_cls, wrapper in FEATURE_CLASSES.items():
        if computed and feature_cls != "getter":
            with pytest.raises(TimmContractError, match="feature_cls='getter'"):
                timm.create_model(name, features_only=True,
                                  feature_cfg={"feature_cls": feature_cls}, **args)
            continue
        torch.manual_seed(0)
        model = timm.create_model(name, features_only=True,
                                  feature_cfg={"feature_cls": feature_cls}, **args).eval()
        assert type(model) is wrapper, feature_cls
        with torch.no_grad():
            got = feature_maps(model, x)
        assert len(got) == len(want) == len(plain.feature_info), feature_cls
        for g, w in zip(got, want):
            assert_close(g, w, msg=f"{feature_cls}")
        assert model.feature_info.channels() == [i["num_chs"] for i in plain.feature_info]
        torch.manual_seed(0)
        one = timm.create_model(name, features_only=True, **args, feature_cfg={
            "feature_cls": feature_cls, "out_indices": (1,)}).eval()
        with torch.no_grad():
            assert_close(feature_maps(one, x)[0], want[1])
        assert len(one.feature_info.channels()) == 1


def test_feature_cfg_as_timm_merges_it():
    """The same ``feature_cfg`` that timm's resnet18 takes; keyword ``out_indices`` and
    ``feature_cls`` still win over it, as in timm's build_model_with_cfg."""
    cfg = {"feature_cls": "hook", "out_indices": (1, 2)}
    theirs = timm.create_model("resnet18", features_only=True, feature_cfg=dict(cfg))
    ours = timm.create_model("cifar_resnet_tiny", features_only=True, feature_cfg=dict(cfg))
    assert type(ours) is type(theirs) is timm.models.FeatureHookNet
    assert theirs.feature_info.out_indices == ours.feature_info.out_indices == (1, 2)
    assert ours.feature_info.channels() == [16, 32]  # cifar_resnet_tiny: widths 8, 16, 32
    kw = timm.create_model("cifar_resnet_tiny", features_only=True, out_indices=(0,),
                           feature_cls="fx", feature_cfg=dict(cfg))
    assert type(kw) is timm.models.FeatureGraphNet and kw.feature_info.channels() == [8]
    x = example(kw, batch=1)
    for feature_cls in ("list", "dict"):  # a sequential forward: flattened stages
        model = timm.create_model("cifar_resnet_tiny", features_only=True, feature_cfg=dict(
            feature_cls=feature_cls, flatten_sequential=True)).eval()
        assert type(model) is FEATURE_WRAPPERS[feature_cls]
        with torch.no_grad():
            assert [m.shape[1] for m in feature_maps(model, x)] == [8, 16, 32]


@pytest.mark.slow
@pytest.mark.parametrize("kwargs", MP_ALL_PAIRS, ids=mp_ids(MP_ALL_PAIRS))
def test_mp_resnet_every_route_and_merge(kwargs):
    test_mp_resnet_routes_and_merges(kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_create_options_every_model(name):
    check_create_options(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_script_and_fx_every_model(name):
    check_script_and_fx(timm.create_model(name))


# --------------------------------------------------------------------------- registration

@pytest.fixture
def registered():
    """Register test models the documented way; forget them afterwards."""
    names = []

    def add(builder, **kw):
        register_model(builder, **kw)
        names.append(kw.get("name", builder.__name__))
        return names[-1]

    yield add
    from timm.models import _registry as timm_registry
    for name in names:
        registry._REGISTRY.pop(name, None)
        timm_registry._clear_model_entries(name)
        timm_registry._model_entrypoints.pop(name, None)


def cifar_plainnet(width=32, num_classes=100, in_chans=3):
    """Plain (residual-free) CIFAR network; knob: stage-1 width (the example of docs/adding-a-baseline.md)."""
    layers, chs = [], in_chans
    for i, w in enumerate((width, 2 * width, 4 * width)):
        layers += [nn.Conv2d(chs, w, 3, stride=1 if i == 0 else 2, padding=1, bias=False),
                   nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        chs = w
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(chs, num_classes))


def test_plugin_model(registered):
    """A plain nn.Sequential plugin gets its cfg, scripts and traces; what needs timm's
    methods fails naming them."""
    name = registered(cifar_plainnet, family="plainnet",
                      knob=Knob("width", kind="int", low=4, high=512), width=8)
    model = timm.create_model(name)
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, 32, 32) and cfg["mean"] == CIFAR100_MEAN
    assert cfg["first_conv"] == "0" and cfg["classifier"] == "11"
    assert resolve_model_data_config(model)["std"] == CIFAR100_STD
    assert timm.create_model(name, num_classes=10).pretrained_cfg["mean"] == CIFAR10_MEAN
    assert name in timm.list_models(module=__name__)
    for kwargs, what in ((dict(features_only=True), "forward_intermediates"),
                         (dict(num_classes=0), "forward_head"),
                         (dict(global_pool=""), "reset_classifier")):
        with pytest.raises(TimmContractError, match=what):
            timm.create_model(name, **kwargs)
    check_script_and_fx(model)


def test_imagenet_sized_registration(registered):
    """input_size picks ImageNet's statistics; default_cfg keys override any."""
    def inet_toy(num_classes=1000, in_chans=3):
        return nn.Sequential(nn.Conv2d(in_chans, 4, 7, stride=2), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(4, num_classes))
    name = registered(inet_toy, name="contract_inet_toy", family="contract_toy",
                      input_size=(3, 224, 224))
    cfg = timm.create_model(name).pretrained_cfg
    assert cfg["input_size"] == (3, 224, 224) and cfg["mean"] == IMAGENET_MEAN
    assert cfg["std"] == IMAGENET_STD and cfg["crop_pct"] == 0.875 and cfg["num_classes"] == 1000
    other = registered(inet_toy, name="contract_inet_toy_cfg", family="contract_toy",
                       default_cfg=dict(input_size=(3, 160, 160), mean=(0.5,) * 3,
                                        std=(0.5,) * 3, crop_pct=1.0))
    cfg = timm.create_model(other).pretrained_cfg
    assert cfg["input_size"] == (3, 160, 160) and cfg["mean"] == (0.5,) * 3
    assert cfg["crop_pct"] == 1.0


def test_mpbench_models_not_filed_under_timm_modules():
    ours = set(ALL)
    assert not ours & set(timm.list_models(module="resnet"))
    assert not ours & set(timm.list_models(module=["wrn", "ensemble", "mp_resnet", "sknet"]))
    import mpbench.baselines.resnet as resnet_module
    assert "cifar_resnet56" not in getattr(resnet_module, "__all__", [])
