"""Fine-tuning and upcycling: suite `init:`, head replacement, strict mode, frozen backbone,
resized batches, upcycled logits, the timm offline message, and scratch -> finetune -> upcycle."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from mpbench.cli import main
from mpbench.config import Recipe, SuiteError, load_suite
from mpbench.data import synthetic
from mpbench.training.callbacks import recipe_callbacks, resize_batches
from mpbench.training.init import InitError, apply_init, head_keys
from mpbench.suite.plan import plan_suite
from mpbench.registry import create_model
from mpbench.training.trainer import train

REPO = Path(__file__).resolve().parents[1]

SCRATCH = """\
name: scratch
dataset: {name: synthetic, num_classes: 4, num_train: 64, num_test: 32, image_size: 16}
recipe: {epochs: 1, batch_size: 16, eval_batch_size: 32, lr: 0.05, schedule: cosine}
seeds: [0]
models:
  - {name: cifar_resnet_tiny, args: {width: 4}, label: tiny}
"""

FINETUNE = """\
name: ft
dataset: {{name: synthetic, num_classes: {classes}, num_train: 64, num_test: 32, image_size: 16}}
recipe: {{epochs: 1, batch_size: 16, eval_batch_size: 32, lr: 0.01, schedule: cosine{recipe}}}
seeds: [0]
models:
{models}
"""

TINY = dict(depth=8, width=4)


def ft_suite(tmp: Path, models: str, classes: int = 4, recipe: str = "", name="ft.yaml") -> Path:
    path = tmp / name
    path.write_text(FINETUNE.format(classes=classes, models=models, recipe=recipe))
    return path


@pytest.fixture(scope="module")
def scratch_run(tmp_path_factory) -> Path:
    """One finished tiny scratch run (4 classes), shared by the tests of this module."""
    tmp = tmp_path_factory.mktemp("scratch")
    (tmp / "s.yaml").write_text(SCRATCH)
    assert main(["run", str(tmp / "s.yaml"), "--out", str(tmp / "out"), "--no-progress"]) == 0
    run_dir = tmp / "out" / "runs" / "tiny-s0"
    assert json.loads((run_dir / "result.json").read_text())["status"] == "done"
    return run_dir


def trained_state(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]


def same(a: dict, b: dict, keys) -> bool:
    return all(torch.equal(a[k], b[k]) for k in keys)


# --------------------------------------------------------------------------- sources

def test_init_from_run_dir_checkpoint_file_and_bare_state_dict(scratch_run, tmp_path):
    src = trained_state(scratch_run)
    torch.save(src, tmp_path / "bare.pt")
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.items()}, "epoch": 3},
               tmp_path / "timm_style.pth")
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in src.items()}, str(tmp_path / "w.safetensors"))
    for init in (scratch_run, scratch_run / "checkpoint.pt", tmp_path / "bare.pt",
                 tmp_path / "timm_style.pth", tmp_path / "w.safetensors"):
        model = create_model("cifar_resnet_tiny", num_classes=4, **TINY)
        report = apply_init(model, str(init))
        assert report["missing"] == report["unexpected"] == report["mismatched"] == [], init
        assert report["head"] == "loaded" and report["backbone_fraction"] == 1.0
        assert same(model.state_dict(), src, src), init
    assert report["kind"] == "file" and len(report["sha256"]) == 64


def test_head_replaced_and_key_problems_reported(scratch_run, tmp_path):
    src = dict(trained_state(scratch_run))
    dropped = "stages.2.0.bn2.weight"
    del src[dropped]
    src["extra.weight"] = torch.zeros(3)
    torch.save(src, tmp_path / "edited.pt")
    torch.manual_seed(0)
    model = create_model("cifar_resnet_tiny", num_classes=7, **TINY)  # 7 classes, not 4
    fresh_head = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("fc.")}
    report = apply_init(model, str(tmp_path / "edited.pt"))
    assert report["head"].startswith("replaced") and "(4, 16)->(7, 16)" in report["head"]
    assert report["missing"] == [dropped] and report["unexpected"] == ["extra.weight"]
    state = model.state_dict()
    assert same(state, fresh_head, fresh_head)  # the new head is the fresh one
    assert same(state, src, [k for k in src if k in state and not k.startswith("fc.")])
    assert head_keys(model) == {"fc.weight", "fc.bias"}

    # end to end: the same problems land in the run's log, init.json and result row
    path = ft_suite(tmp_path, f"  - {{name: cifar_resnet_tiny, args: {{width: 4}}, label: ft, "
                              f"init: {tmp_path / 'edited.pt'}}}", classes=7)
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 0
    run_dir = out / "runs" / "ft-s0"
    log = (run_dir / "log.txt").read_text()
    assert "1 missing (stages.2.0.bn2.weight)" in log and "1 unexpected (extra.weight)" in log
    assert "head replaced" in log
    row = json.loads((run_dir / "result.json").read_text())
    assert row["init_missing"] == dropped and row["init_unexpected"] == "extra.weight"
    assert row["init_head"].startswith("replaced")
    assert json.loads((run_dir / "config.json").read_text())["init"]["source"] == str(tmp_path / "edited.pt")
    csv = pd.read_csv(out / "results.csv")
    assert csv.init_missing[0] == dropped


def test_strict_mode_errors_at_plan_time(scratch_run, tmp_path):
    src = dict(trained_state(scratch_run))
    src["extra.weight"] = torch.zeros(3)
    torch.save(src, tmp_path / "extra.pt")
    model = create_model("cifar_resnet_tiny", num_classes=4, **TINY)
    with pytest.raises(InitError, match="init_strict: 1 unexpected"):
        apply_init(model, str(tmp_path / "extra.pt"), strict=True)
    # a different head alone is not a strict-mode error
    apply_init(create_model("cifar_resnet_tiny", num_classes=9, **TINY), str(scratch_run),
               strict=True)
    path = ft_suite(tmp_path, f"  - {{name: cifar_resnet_tiny, args: {{width: 4}}, "
                              f"init: {tmp_path / 'extra.pt'}, init_strict: true}}")
    with pytest.raises(SuiteError, match=r"models\[0\]\.init: init_strict"):
        plan_suite(load_suite(path), str(path))


def test_wrong_checkpoint_is_an_error_not_a_silent_no_op(tmp_path):
    torch.save({"something.else": torch.zeros(4, 4)}, tmp_path / "other.pt")
    with pytest.raises(InitError, match="fills only 0%"):
        apply_init(create_model("cifar_resnet_tiny", num_classes=4, **TINY), str(tmp_path / "other.pt"))


def test_missing_checkpoint_one_line_error_nothing_written(tmp_path, capsys):
    path = ft_suite(tmp_path, "  - {name: cifar_resnet_tiny, init: runs/nope/runs/x-s0}")
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "models[0].init" in err and "runs/nope/runs/x-s0 does not exist" in err
    assert not out.exists()


def test_unfinished_run_dir_is_refused(scratch_run, tmp_path):
    import shutil
    partial = tmp_path / "partial"
    shutil.copytree(scratch_run, partial)
    (partial / "result.json").unlink()
    with pytest.raises(InitError, match="has not finished"):
        apply_init(create_model("cifar_resnet_tiny", num_classes=4, **TINY), str(partial))


def test_timm_tag_offline_one_line_message(monkeypatch, tmp_path):
    import timm.models._builder as builder

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")
    monkeypatch.setattr(builder, "load_pretrained", offline)
    with pytest.raises(InitError) as exc:
        apply_init(create_model("cifar_resnet18", num_classes=10, width=8), "timm:resnet18.a1_in1k")
    msg = str(exc.value)
    assert "\n" not in msg
    assert "huggingface.co/timm/resnet18.a1_in1k" in msg and "pretrained_cfg_overlay" in msg
    path = ft_suite(tmp_path, "  - {name: cifar_resnet18, args: {width: 8}, init: 'timm:resnet18.a1_in1k'}")
    with pytest.raises(SuiteError, match=r"models\[0\]\.init: timm:resnet18.a1_in1k: pretrained"):
        plan_suite(load_suite(path), str(path))
    with pytest.raises(InitError, match="timm has no model"):
        apply_init(create_model("cifar_resnet_tiny", num_classes=4, **TINY), "timm:no_such_net")


def test_timm_imagenet_resnet_file_maps_onto_cifar_resnet(tmp_path):
    import timm
    imagenet = timm.create_model("resnet18", pretrained=False)  # stands in for a downloaded file
    torch.save(imagenet.state_dict(), tmp_path / "resnet18.pth")
    model = create_model("cifar_resnet18", num_classes=10)
    report = apply_init(model, str(tmp_path / "resnet18.pth"))
    assert report["mismatched"] == ["stem.0.weight (64, 3, 7, 7)->(64, 3, 3, 3)"]
    assert report["unexpected"] == [] and report["missing"] == []
    assert report["head"].startswith("replaced") and report["backbone_fraction"] > 0.99
    assert torch.equal(model.stages[3][1].conv2.weight, imagenet.layer4[1].conv2.weight)


# --------------------------------------------------------------------------- training side

def test_freeze_backbone_epochs_leave_backbone_unchanged():
    data = synthetic(4, 32, 16, 16)
    torch.manual_seed(0)
    model = create_model("cifar_resnet_tiny", num_classes=4, **TINY)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    recipe = Recipe(epochs=2, batch_size=16, eval_batch_size=32, lr=0.05, schedule="constant",
                    freeze_backbone_epochs=1)
    snapshots = []
    train(model, data, recipe, seed=0, callbacks=recipe_callbacks(recipe),
          on_epoch=lambda m: snapshots.append({k: v.clone() for k, v in model.state_dict().items()}))
    head = head_keys(model)
    backbone = [k for k in before if k not in head]
    after1, after2 = snapshots
    assert same(after1, before, backbone)                 # weights and BN statistics
    assert not same(after1, before, head)                 # the head learned
    assert not same(after2, after1, backbone)             # epoch 2: everything trains
    assert all(p.requires_grad for p in model.parameters())


def test_input_size_resizes_batches_and_counts_macs_at_that_size(tmp_path):
    data = synthetic(4, 64, 32, 16)
    recipe = Recipe(epochs=1, batch_size=16, lr=0.05, input_size=24)
    from mpbench.training.trainer import make_loaders
    loader, _ = resize_batches(*make_loaders(data, recipe, torch.device("cpu"), 0, False), size=24)
    x, _ = next(iter(loader))
    assert x.shape[-2:] == (24, 24) and len(loader) == 4
    res = train(create_model("cifar_resnet_tiny", num_classes=4, **TINY), data, recipe, seed=0,
                callbacks=recipe_callbacks(recipe))
    assert res.final["epoch"] == 1
    small = ft_suite(tmp_path, "  - {name: cifar_resnet_tiny}", name="a.yaml")
    big = ft_suite(tmp_path, "  - {name: cifar_resnet_tiny}", recipe=", input_size: 32", name="b.yaml")
    g16, g32 = (plan_suite(load_suite(p))[0].gmacs for p in (small, big))
    assert g32 == pytest.approx(4 * g16, rel=0.05)


def test_resizing_callback_feeds_the_validation_split_not_the_test_set(tmp_path, monkeypatch):
    """Where loader-replacing callbacks (input_size) meet a validation split: through the
    runner, every evaluation of "val" reads the 12 held-out training images (3 per class of 4,
    synthetic labels being exactly balanced), resized like the test set, and every evaluation of
    "test" the 40 test images (10 per class); a val loader built from the test loader would
    read 40 test images as "val"."""
    from collections import Counter

    from mpbench.config import DatasetConfig
    from mpbench.data import load_dataset
    from mpbench.training import trainer

    seen = []
    original = trainer.evaluate

    def recording(model, loader, autocast, split="test", *rest, **kw):
        ys = [y.cpu() for _, y in loader]
        sizes = {tuple(x.shape[-2:]) for x, _ in loader}
        seen.append((split, torch.cat(ys), sizes))
        return original(model, loader, autocast, split, *rest, **kw)

    monkeypatch.setattr(trainer, "evaluate", recording)
    suite = tmp_path / "val.yaml"
    suite.write_text(
        "name: val\n"
        "dataset: {name: synthetic, num_classes: 4, num_train: 64, num_test: 40, image_size: 16,"
        " val_split: 12}\n"
        "recipe: {epochs: 2, batch_size: 16, eval_batch_size: 8, lr: 0.05, input_size: 24,"
            " corruptions: false}\n"
        "seeds: [0]\nmodels:\n  - {name: cifar_resnet_tiny, args: {width: 4}, label: tiny}\n")
    assert main(["run", str(suite), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    data = load_dataset(DatasetConfig(name="synthetic", num_classes=4, num_train=64, num_test=40,
                                      image_size=16, val_split=12))
    assert [split for split, _, _ in seen] == ["val", "test", "val"]  # val every epoch, test last
    for split, labels, sizes in seen:
        assert sizes == {(24, 24)}, split                         # the callback resized it
        expected = data.val_y if split == "val" else data.test_y
        assert Counter(labels.tolist()) == {c: 3 if split == "val" else 10 for c in range(4)}
        assert torch.equal(labels, expected.cpu()), split


# --------------------------------------------------------------------------- upcycling

def _randomised_single(num_classes=5):
    """A single-path ResNet with random weights *and* BN statistics (a stand-in for a
    trained one: at init the zero-gamma residual branches would make the test trivial)."""
    torch.manual_seed(1)
    single = create_model("cifar_resnet_tiny", num_classes=num_classes, width=8)  # depth 8
    with torch.no_grad():
        for k, v in single.state_dict().items():
            if v.is_floating_point():
                v.copy_(torch.rand_like(v) + 0.5 if ("running_var" in k) else torch.randn_like(v) * 0.3)
    return single.eval()


@pytest.mark.parametrize("paths", [2, 4])
@pytest.mark.parametrize("route,norm,merge", [
    ("fdcc", "softmax_dest", "concat"), ("fdcc", "sigmoid", "mean_logits"),
    ("static", "softmax_src", "concat"), ("cross_pred", "softmax_dest", "concat"),
    ("none", "softmax_dest", "concat")])
def test_upcycled_logits_equal_single_path_at_init(paths, route, norm, merge, tmp_path):
    single = _randomised_single()
    torch.save({"model": single.state_dict()}, tmp_path / "single.pt")
    mp = create_model("mp_resnet_tiny", num_classes=5, width=8, paths=paths, route=route,
                      norm=norm, merge=merge)
    report = apply_init(mp, str(tmp_path / "single.pt"), mode="upcycle", noise=0)
    assert report["paths"] == paths and report["missing"] == []
    mp.eval()
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        ref, out = single(x), mp(x)
    assert ref.abs().max() > 0.1  # a non-trivial function
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)


def test_upcycle_noise_breaks_symmetry_deterministically(tmp_path):
    single = _randomised_single()
    torch.save(single.state_dict(), tmp_path / "single.pt")
    outs = []
    for seed in (0, 0, 1):
        mp = create_model("mp_resnet_tiny", num_classes=5, width=8, paths=2)
        apply_init(mp, str(tmp_path / "single.pt"), mode="upcycle", noise=0.01, seed=seed)
        w = mp.get_submodule("stages.1.0.conv1").weight
        assert not torch.equal(w[:w.shape[0] // 2], w[w.shape[0] // 2:])
        outs.append(w.clone())
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])


def test_upcycle_noise_defaults_to_breaking_the_symmetry(tmp_path):
    from mpbench.suite.starts import init_config
    from mpbench.models.mp_resnet import UPCYCLE_NOISE

    single = _randomised_single()
    torch.save(single.state_dict(), tmp_path / "single.pt")
    mp = create_model("mp_resnet_tiny", num_classes=5, width=8, paths=2)
    report = apply_init(mp, str(tmp_path / "single.pt"), mode="upcycle")  # no noise given
    assert report["noise"] == UPCYCLE_NOISE > 0
    w = mp.get_submodule("stages.1.0.conv1").weight
    assert not torch.equal(w[:w.shape[0] // 2], w[w.shape[0] // 2:])
    path = ft_suite(tmp_path, f"  - {{name: mp_resnet_tiny, args: {{width: 8, paths: 2}}, "
                              f"init: {tmp_path / 'single.pt'}, init_mode: upcycle, match: false}}")
    suite = load_suite(path)
    assert suite.models[0].upcycle_noise is None
    assert init_config(suite.models[0])["init"]["upcycle_noise"] == UPCYCLE_NOISE  # config.json
    plan_suite(suite, str(path))


def test_zero_upcycle_noise_is_refused_for_a_routed_model_at_planning(tmp_path):
    single = _randomised_single()
    torch.save(single.state_dict(), tmp_path / "single.pt")
    entry = (f"  - {{name: mp_resnet_tiny, args: {{width: 8, paths: 2, route: ROUTE}}, "
             f"init: {tmp_path / 'single.pt'}, init_mode: upcycle, upcycle_noise: 0, "
             f"match: false}}")
    for route in ("fdcc", "static", "cross_pred"):
        path = ft_suite(tmp_path, entry.replace("ROUTE", route))
        with pytest.raises(SuiteError, match=r"ft\.yaml: models\[0\]\.upcycle_noise: 0 leaves a "
                                             r"routed model's paths identical"):
            plan_suite(load_suite(path), str(path))
    path = ft_suite(tmp_path, entry.replace("ROUTE", "none"))  # an ensemble may start exact
    plan_suite(load_suite(path), str(path))


def test_one_path_with_a_route_is_a_suite_error(tmp_path):
    path = ft_suite(tmp_path, "  - {name: mp_resnet_tiny, args: {width: 4, paths: 1}, match: false}")
    with pytest.raises(SuiteError, match=r"models\[0\]\.args: .*route: fdcc needs paths >= 2"):
        plan_suite(load_suite(path), str(path))


def test_upcycle_errors_are_one_line(tmp_path):
    single = _randomised_single()
    torch.save(single.state_dict(), tmp_path / "single.pt")
    with pytest.raises(InitError, match="same depth and width"):
        apply_init(create_model("mp_resnet_tiny", num_classes=5, width=6, paths=2),
                   str(tmp_path / "single.pt"), mode="upcycle")
    with pytest.raises(InitError, match="not one"):
        apply_init(create_model("cifar_resnet_tiny", num_classes=5, width=8),
                   str(tmp_path / "single.pt"), mode="upcycle")


# --------------------------------------------------------------------------- end to end

def test_scratch_then_finetune_and_upcycle_end_to_end(scratch_run, tmp_path):
    models = (f"  - {{name: cifar_resnet_tiny, args: {{width: 4}}, label: continued, init: {scratch_run}}}\n"
              f"  - {{name: mp_resnet_tiny, args: {{width: 4, paths: 2, route: fdcc}}, label: upcycled,\n"
              f"     init: {scratch_run}, init_mode: upcycle, upcycle_noise: 0.01, match: false}}\n")
    path = ft_suite(tmp_path, models, recipe=", freeze_backbone_epochs: 1, epochs: 2")
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 0
    csv = pd.read_csv(out / "results.csv").set_index("label")
    assert list(csv.status) == ["done", "done"]
    assert csv.loc["continued", "init_head"] == "loaded"
    assert csv.loc["upcycled", "init_mode"] == "upcycle"
    assert csv.loc["upcycled", "gmacs"] > csv.loc["continued", "gmacs"]
    log = (out / "runs" / "upcycled-s0" / "log.txt").read_text()
    assert "init (upcycle)" in log and "2 paths, noise 0.01" in log
    # finished runs are skipped, and a rerun neither re-plans into an error nor re-inits
    assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 0
    assert log.count("init (") == 1


def test_committed_suites_parse():
    for name in ("cifar100-finetune.yaml", "cifar10-jpg-finetune.yaml"):
        suite = load_suite(REPO / "suites" / name)
        assert all(m.init for m in suite.models)
        assert not any(m.init.startswith("/") for m in suite.models)  # no machine paths
