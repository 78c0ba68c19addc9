"""Bad suites and arguments: one line naming the file and the field, exit 2, nothing written."""
import pytest

from mpbench.cli import main

BASE = {
    "name": "bad",
    "dataset": "{name: synthetic, num_classes: 4, num_train: 32, num_test: 16, image_size: 16}",
    "recipe": "{epochs: 1, batch_size: 16}",
    "models": "\n  - {name: cifar_resnet_tiny, args: {width: 4}}",
}


def suite_text(**changes) -> str:
    fields = {**BASE, **changes}
    return "".join(f"{k}: {v}\n" for k, v in fields.items() if v is not None)


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
