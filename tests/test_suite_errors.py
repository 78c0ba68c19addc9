"""Bad suites and arguments: one line naming the file and the field, exit 2, nothing written."""
from pathlib import Path

import pytest

from mpbench.cli import main

REPO = Path(__file__).resolve().parents[1]

BASE = {
    "name": "bad",
    "dataset": "{name: synthetic, num_classes: 4, num_train: 32, num_test: 16, image_size: 16}",
    "recipe": "{epochs: 1, batch_size: 16}",
    "models": "\n  - {name: cifar_resnet_tiny, args: {width: 4}}",
}


def suite_text(**changes) -> str:
    fields = {**BASE, **changes}
    return "".join(f"{k}: {v}\n" for k, v in fields.items() if v is not None)


def _synthetic(extra: str) -> str:
    """BASE's data set with more fields."""
    return BASE["dataset"][:-1] + ", " + extra + "}"


CASES = [
    # (id, suite text, expected fragments of the message)
    ("yaml-syntax", "name: bad\nmodels: [unclosed\n", ["invalid YAML", "line"]),
    ("not-a-mapping", "- just\n- a list\n", ["expected a mapping"]),
    ("unknown-top-key", suite_text(epochs=3), ["epochs", "unknown key"]),
    ("missing-name", suite_text(name=None), ["name", "required"]),
    ("missing-models", suite_text(models=None), ["models", "required"]),
    ("empty-models", suite_text(models="[]"), ["models", "at least one model"]),
    ("epochs-wrong-type", suite_text(recipe="{epochs: ten}"), ["recipe.epochs", "integer"]),
    ("negative-epochs", suite_text(recipe="{epochs: -3}"), ["recipe.epochs", "greater than"]),
    ("unknown-recipe-key", suite_text(recipe="{epochs: 1, learning_rate: 0.1}"),
     ["recipe.learning_rate", "unknown key"]),
    ("bad-schedule", suite_text(recipe="{schedule: linear}"), ["recipe.schedule"]),
    ("negative-lr", suite_text(recipe="{lr: -0.1}"), ["recipe.lr"]),
    ("warmup-too-long", suite_text(recipe="{epochs: 2, warmup_epochs: 5}"), ["recipe", "warmup"]),
    ("unknown-dataset", suite_text(dataset="{name: imagenet}"), ["dataset.name"]),
    ("duplicate-seeds", suite_text(seeds="[0, 0]"), ["seeds", "duplicate"]),
    ("empty-seeds", suite_text(seeds="[]"), ["seeds", "at least one seed"]),
    ("negative-budget", suite_text(budgets_gmacs="[-0.1]"), ["budgets_gmacs", "positive"]),
    ("bad-suite-name", suite_text(name="'a b/c'"), ["name"]),
    ("duplicate-models", suite_text(models="\n  - {name: cifar_resnet_tiny}\n  - {name: cifar_resnet_tiny}"),
     ["models", "duplicate model entry"]),
    ("unknown-model", suite_text(models="\n  - {name: cifar_resnet5}"),
     ["models[0].name", "unknown model", "cifar_resnet56"]),
    ("unknown-model-arg", suite_text(models="\n  - {name: cifar_resnet_tiny, args: {widht: 4}}"),
     ["models[0]", "widht"]),
    ("unknown-model-key", suite_text(models="\n  - {name: cifar_resnet_tiny, arg: {}}"),
     ["models[0].arg", "unknown key"]),
    ("bad-plugin", suite_text(plugins="[no_such_plugin_module]"), ["plugins[0]", "no_such_plugin_module"]),
    ("unreachable-budget", suite_text(budgets_gmacs="[500.0]"), ["budgets_gmacs", "cifar_resnet_tiny"]),
    ("reference-no-such-label", suite_text(reference="cifar_resnet_tin"),
     ["reference", "no model is labelled 'cifar_resnet_tin'", "did you mean 'cifar_resnet_tiny'"]),
    ("reference-unrelated-label", suite_text(reference="zzz"),
     ["reference", "'zzz'", "labels: cifar_resnet_tiny"]),
    ("published-top1-above-100", suite_text(
        models="\n  - {name: cifar_resnet_tiny, reference: {top1: 120, source: x}}"),
     ["models[0].reference.top1", "less than or equal to 100"]),
    ("published-without-source", suite_text(
        models="\n  - {name: cifar_resnet_tiny, reference: {top1: 90}}"),
     ["models[0].reference.source", "required"]),
    ("published-unknown-key", suite_text(
        models="\n  - {name: cifar_resnet_tiny, reference: {top1: 90, source: x, err: 1}}"),
     ["models[0].reference.err", "unknown key"]),
    ("bad-significance-level", suite_text(significance_level="1.5"),
     ["significance_level", "less than 1"]),
    ("bad-significance-correction", suite_text(significance_correction="bonferroni"),
     ["significance_correction", "'holm' or 'none'"]),
    # dataset.val_split (BASE: 4 synthetic classes, 32 training images, 8 of each class)
    ("val-split-whole-training-set", suite_text(dataset=_synthetic("val_split: 32")),
     ["dataset.val_split", "32 leaves no training images", "the training set has 32"]),
    ("val-split-above-training-set", suite_text(dataset=_synthetic("val_split: 40")),
     ["dataset.val_split", "40 leaves no training images", "the training set has 32"]),
    ("val-split-whole-train-subset", suite_text(dataset=_synthetic("train_subset: 16, val_split: 16")),
     ["dataset.val_split", "16 leaves no training images", "the training set has 16"]),
    ("val-split-not-divisible", suite_text(dataset=_synthetic("val_split: 6")),
     ["dataset.val_split", "6 does not divide across the 4 classes", "a multiple of 4"]),
    ("val-split-not-divisible-cifar100", suite_text(dataset="{name: cifar100, val_split: 250}"),
     ["dataset.val_split", "250 does not divide across the 100 classes"]),
    ("val-split-zero", suite_text(dataset=_synthetic("val_split: 0")),
     ["dataset.val_split", "greater than or equal to 1"]),
    ("val-seed-without-split", suite_text(dataset=_synthetic("val_seed: 3")),
     ["dataset.val_seed", "needs a dataset.val_split"]),
    ("decode-device-without-stream", suite_text(
        dataset="{name: imagefolder, root: /nonexistent/imgs, decode: device}"),
     ["dataset.decode", "set loader: stream"]),
    # an image folder that is not there, and whose classes the suite does not give
    ("image-folder-missing", suite_text(dataset="{name: imagefolder, root: /nonexistent/imgs}"),
     ["dataset.root", "/nonexistent/imgs", "pass --data-root"]),
    # its classes given, but not the size its models see: only the data can tell
    ("image-folder-missing-size-unknown", suite_text(
        dataset="{name: imagefolder, root: /nonexistent/imgs, num_classes: 10}"),
     ["dataset.root", "pass --data-root", "give dataset.crop_size or image_size"]),
    # ResNeXt-29 8x64d at base width 1 is 0.03304 GMACs at 16x16, 4 classes: within 2% of the
    # budget, but only at the bottom of its knob's range
    ("knob-at-range-end", suite_text(models="\n  - {name: cifar_resnext29_8x64d}",
                                     budgets_gmacs="[0.033]"),
     ["budgets_gmacs", "cifar_resnext29_8x64d", "base_width=", "the low end of its range [1, 256]"]),
]


@pytest.mark.parametrize("text,fragments", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_suite_exits_2_with_one_line(tmp_path, capsys, text, fragments):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    out = tmp_path / "out"
    rc = main(["run", str(path), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err and str(path) in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert not out.exists()


def test_missing_suite_file(tmp_path, capsys):
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert "missing.yaml" in err and "cannot read" in err


def test_bad_data_root_and_device(tmp_path, capsys):
    path = tmp_path / "ok.yaml"
    path.write_text(suite_text())
    assert main(["run", str(path), "--data-root", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "--data-root" in capsys.readouterr().err


def test_cuda_device_without_cuda_exits_2(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same on any machine
    path = tmp_path / "ok.yaml"
    path.write_text(suite_text())
    assert main(["run", str(path), "--device", "cuda:7", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--device cuda:7" in err and "CUDA" in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("device,fragment", [("cuda:7", "has 2 CUDA device(s), cuda:0 to cuda:1"),
                                             ("gpu", "not a device")])
def test_device_that_is_not_there_exits_2(tmp_path, capsys, monkeypatch, device, fragment):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a 2-GPU machine
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    path = tmp_path / "ok.yaml"
    path.write_text(suite_text())
    assert main(["run", str(path), "--device", device, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--device {device}" in err and fragment in err, err
    assert not (tmp_path / "o").exists()


def test_report_fields_keep_old_suite_json_and_fingerprint():
    """Unset reference/significance_level fields are left out of the dump (suite.json of old
    runs and run configs compare equal); set ones are kept."""
    import yaml

    from mpbench.config import parse_suite

    data = yaml.safe_load(suite_text())
    dumped = parse_suite(data).model_dump(mode="json")
    assert "reference" not in dumped and "significance_level" not in dumped
    assert "significance_correction" not in dumped
    assert "reference" not in dumped["models"][0]
    data["reference"] = "cifar_resnet_tiny"
    data["significance_level"] = 0.01
    data["significance_correction"] = "none"
    data["models"][0]["reference"] = {"top1": 91.25, "source": "He et al. 2016"}
    dumped = parse_suite(data).model_dump(mode="json")
    assert dumped["reference"] == "cifar_resnet_tiny" and dumped["significance_level"] == 0.01
    assert dumped["significance_correction"] == "none"
    assert dumped["models"][0]["reference"] == {"top1": 91.25, "source": "He et al. 2016"}


@pytest.mark.parametrize("suite,expected", [
    # label -> published top-1 = 100 - published error (%): ResNet-18 24.39 / SE-ResNet-18 23.56
    # (pytorch-cifar100 README), WRN-28-10 19.25 (Zagoruyko & Komodakis 2016), ResNeXt-29 8x64d
    # 17.77 (Xie et al. 2017); CIFAR-10 ResNet-20/56/110 8.75 / 6.97 / 6.43 (He et al. 2016)
    ("suites/cifar100.yaml", {"resnet18": 100 - 24.39, "se-resnet18": 100 - 23.56,
                              "wrn28-10": 100 - 19.25, "resnext29-8x64d": 100 - 17.77}),
    ("suites/cifar10.yaml", {"resnet20": 100 - 8.75, "resnet56": 100 - 6.97,
                             "resnet110": 100 - 6.43}),
])
def test_paper_suites_carry_published_references_on_exact_models_only(suite, expected):
    """The published numbers sit on the published models trained as given (match: false) and
    on no matched entry, whose architecture is not the published one."""
    from mpbench.config import load_suite

    parsed = load_suite(REPO / suite)
    assert parsed.reference == "resnet-depth_w24"
    with_ref = {m.display: m for m in parsed.models if m.reference is not None}
    assert {lab: m.reference.top1 for lab, m in with_ref.items()} == pytest.approx(expected)
    assert all(not m.match and m.reference.source for m in with_ref.values())
    assert all(not m.args for m in with_ref.values())  # the registered configuration itself
