"""The validation split (``dataset.val_split``, issue #16): which training images it holds
out (class-balanced, fixed by ``val_seed`` alone, carved after ``train_subset``), on the
in-memory data sets and on streamed image folders; which epochs evaluate it and the test set;
what result.json and the report say about the splits.

Every count below is worked out by hand from how the test data are made (synthetic labels
are ``arange(n) % classes``, shuffled: exactly ``n / classes`` images per class; the image
folders have a known number of files per class folder), not read back from the code."""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from mpbench.cli import main
from mpbench.config import DatasetConfig, SuiteError, parse_suite
from mpbench.data import DataError, StreamingDataset, load_dataset
from mpbench.data.datasets import Dataset, synthetic


def image_keys(x: torch.Tensor) -> list[bytes]:
    """One fingerprint per image (synthetic images are noise: no two are alike)."""
    return [hashlib.sha1(img.contiguous().numpy().tobytes()).digest() for img in x]


def per_class(labels) -> dict[int, int]:
    return dict(Counter(int(v) for v in labels))


# --------------------------------------------------------------------------- in memory

def test_synthetic_images_are_distinct():
    """The disjointness checks below identify images by their pixels: that needs every
    synthetic image to be distinct (they carry 40% uniform noise)."""
    data = synthetic(4, 64, 32, 16)
    keys = image_keys(data.train_x)
    assert len(set(keys)) == 64


def test_split_is_class_balanced_and_disjoint_from_training():
    data = synthetic(4, 64, 32, 16)  # 16 training images per class
    split = data.split_val(16, seed=0)
    assert per_class(split.val_y) == {0: 4, 1: 4, 2: 4, 3: 4}  # 16 / 4 classes
    assert per_class(split.train_y) == {0: 12, 1: 12, 2: 12, 3: 12}  # 16 - 4 each
    val, train = set(image_keys(split.val_x)), set(image_keys(split.train_x))
    assert len(val) == 16 and len(train) == 48 and not val & train
    assert val | train == set(image_keys(data.train_x))  # nothing lost, nothing duplicated
    # labels travel with their images (and CIFAR-100-style coarse labels with them)
    truth = dict(zip(image_keys(data.train_x), data.train_y.tolist()))
    assert [truth[k] for k in image_keys(split.val_x)] == split.val_y.tolist()
    assert torch.equal(split.val_coarse, split.val_y // 2)
    assert torch.equal(split.train_coarse, split.train_y // 2)
    # the test set is untouched
    assert torch.equal(split.test_x, data.test_x) and torch.equal(split.test_y, data.test_y)


def test_normalisation_statistics_exclude_the_validation_images():
    data = synthetic(4, 64, 32, 16)
    split = data.split_val(16)
    by_hand = split.train_x.double().mean(dim=(0, 2, 3)) / 255
    assert split.mean == pytest.approx(by_hand.tolist(), abs=1e-12)
    assert split.mean != pytest.approx(data.mean, abs=1e-6)


def test_split_ignores_the_run_seed_and_follows_val_seed():
    """Every run of a suite holds out the same images whatever the global RNGs (the run
    seeds) are; only val_seed changes them."""
    cfg = DatasetConfig(name="synthetic", num_classes=4, num_train=64, num_test=32,
                        image_size=16, val_split=16)
    torch.manual_seed(0)
    a = load_dataset(cfg)
    torch.manual_seed(12345)
    torch.rand(17)
    b = load_dataset(cfg)
    assert image_keys(a.val_x) == image_keys(b.val_x)
    assert image_keys(a.train_x) == image_keys(b.train_x)
    other = load_dataset(cfg.model_copy(update={"val_seed": 1}))
    assert set(image_keys(other.val_x)) != set(image_keys(a.val_x))
    assert per_class(other.val_y) == {0: 4, 1: 4, 2: 4, 3: 4}  # still balanced


def test_split_is_carved_after_train_subset():
    """train_subset 10000 + val_split 1000 -> 9000 training + 1000 validation images, all
    from the 10000 of the subset (issue #16's example; 10 classes: 100 val per class)."""
    cfg = dict(name="synthetic", num_classes=10, num_train=12000, num_test=20, image_size=8)
    subset = load_dataset(DatasetConfig(**cfg, train_subset=10000))
    both = load_dataset(DatasetConfig(**cfg, train_subset=10000, val_split=1000))
    assert len(subset.train_y) == 10000 and subset.val_x is None
    assert len(both.train_y) == 9000 and len(both.val_y) == 1000
    assert per_class(both.val_y) == {c: 100 for c in range(10)}
    assert per_class(both.train_y) == {c: 900 for c in range(10)}  # 1000 per class in the subset
    inside = set(image_keys(subset.train_x))
    val, train = set(image_keys(both.val_x)), set(image_keys(both.train_x))
    assert val <= inside and train <= inside and not val & train
    assert len(val | train) == 10000


def test_a_class_too_small_for_its_share_is_refused():
    # 3 classes of 6, 6 and 2 training images: 9 held out needs 3 per class
    x = torch.arange(14 * 3 * 8 * 8, dtype=torch.int64).remainder(251).to(torch.uint8)
    y = torch.tensor([0] * 6 + [1] * 6 + [2] * 2)
    data = Dataset("toy", x.view(14, 3, 8, 8), y, x.view(14, 3, 8, 8)[:3], y[:3],
                   ["a", "b", "c"])
    with pytest.raises(DataError, match=r"dataset\.val_split: class c has only 2 training "
                                        r"images, 3 needed per class"):
        data.split_val(9)
    assert per_class(data.split_val(6).val_y) == {0: 2, 1: 2, 2: 2}


# --------------------------------------------------------------------------- image folders

CLASSES = ("ant", "bee", "cat", "dog")


def write_folder(root: Path, n_train=(6, 6, 6, 6), n_test: int = 1) -> Path:
    """A JPEG image folder with ``n_train[c]`` training files in class folder c; each file
    is noise, so every image differs."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, counts in (("train", n_train), ("test", (n_test,) * len(CLASSES))):
        for name, n in zip(CLASSES, counts):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                arr = rng.integers(0, 255, (10, 12, 3)).astype(np.uint8)
                Image.fromarray(arr).save(root / split / name / f"{i:03d}.jpg", quality=95)
    return root


def folder_cfg(root: Path, loader: str, **kw) -> dict:
    extra = {"crop_size": 8} if loader == "stream" else {}
    return DatasetConfig(name="imagefolder", root=str(root), loader=loader, **extra,
                         **kw).model_dump()


def class_of(path: str) -> str:
    return Path(path).parent.name


@pytest.fixture
def folder(tmp_path):
    return write_folder(tmp_path / "imgs")


def test_streamed_split_is_class_balanced_disjoint_and_fixed(folder):
    data = load_dataset(folder_cfg(folder, "stream", val_split=8))
    assert isinstance(data, StreamingDataset)
    assert Counter(map(class_of, data.val_files)) == {c: 2 for c in CLASSES}  # 8 / 4
    assert Counter(map(class_of, data.train_files)) == {c: 4 for c in CLASSES}  # 6 - 2
    # labels agree with the class folders
    assert [CLASSES[v] for v in data.val_y.tolist()] == list(map(class_of, data.val_files))
    assert [CLASSES[v] for v in data.train_y.tolist()] == list(map(class_of, data.train_files))
    every = sorted(str(p) for p in (folder / "train").glob("*/*.jpg"))
    assert not set(data.val_files) & set(data.train_files)
    assert sorted(data.val_files + data.train_files) == every
    torch.manual_seed(999)  # another run seed: the same files
    again = load_dataset(folder_cfg(folder, "stream", val_split=8))
    assert again.val_files == data.val_files and again.train_files == data.train_files
    other = load_dataset(folder_cfg(folder, "stream", val_split=8, val_seed=3))
    assert set(other.val_files) != set(data.val_files)
    assert Counter(map(class_of, other.val_files)) == {c: 2 for c in CLASSES}


def test_streamed_split_is_carved_after_train_subset(folder):
    # 24 files, subset 20 (5 per class), then 8 held out (2 per class): 12 train (3 per class)
    subset = load_dataset(folder_cfg(folder, "stream", train_subset=20))
    data = load_dataset(folder_cfg(folder, "stream", train_subset=20, val_split=8))
    assert Counter(map(class_of, subset.train_files)) == {c: 5 for c in CLASSES}
    assert Counter(map(class_of, data.val_files)) == {c: 2 for c in CLASSES}
    assert Counter(map(class_of, data.train_files)) == {c: 3 for c in CLASSES}
    assert set(data.val_files) | set(data.train_files) == set(subset.train_files)


def test_memory_and_stream_pipelines_hold_out_the_same_images(folder):
    """Switching an image folder between loader: memory and stream (dataset.loader: auto on
    another budget) keeps the validation images: the decoded validation set is the stream's
    validation files, decoded."""
    from PIL import Image

    stream = load_dataset(folder_cfg(folder, "stream", val_split=8))
    memory = load_dataset(folder_cfg(folder, "memory", val_split=8))
    assert not isinstance(memory, StreamingDataset)
    assert per_class(memory.val_y) == {0: 2, 1: 2, 2: 2, 3: 2}
    assert len(memory.train_y) == 16
    decoded = [np.asarray(Image.open(f).convert("RGB")).transpose(2, 0, 1)
               for f in stream.val_files]
    assert image_keys(memory.val_x) == image_keys(torch.from_numpy(np.stack(decoded)))
    assert memory.val_y.tolist() == stream.val_y.tolist()


@pytest.mark.parametrize("loader", ["stream", "memory"])
def test_image_folder_with_a_small_class_is_refused(tmp_path, loader):
    root = write_folder(tmp_path / "imgs", n_train=(6, 6, 6, 1))
    with pytest.raises(DataError, match=r"dataset\.val_split: class dog has only 1 training "
                                        r"images, 2 needed per class"):
        load_dataset(folder_cfg(root, loader, val_split=8))


@pytest.mark.parametrize("val_split,fragment", [
    (6, "6 images cannot be held out"),    # 6 does not divide across 4 classes
    (24, "24 images cannot be held out"),  # the whole training set (24 files)
    (12, "class dog has only 1 training images, 3 needed per class"),
])
def test_bad_val_split_on_an_image_folder_stops_the_cli_before_writing(
        tmp_path, capsys, val_split, fragment):
    """An image folder's size is known only from the folder: planning reads it and refuses a
    split that does not fit, with one line naming the suite file and dataset.val_split."""
    root = write_folder(tmp_path / "imgs", n_train=(7, 7, 9, 1))
    path = tmp_path / "bad.yaml"
    path.write_text(f"name: bad\ndataset: {{name: imagefolder, root: {root}, loader: stream, "
                    f"crop_size: 8, val_split: {val_split}}}\nrecipe: {{epochs: 1, batch_size: 4}}\n"
                    f"models:\n  - {{name: cifar_resnet_tiny, args: {{width: 4}}}}\n")
    out = tmp_path / "out"
    rc = main(["run", str(path), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"{path}: dataset.val_split:" in err and fragment in err, err
    assert not out.exists()


# --------------------------------------------------------------------------- a whole run

SUITE = """\
name: valsplit
dataset: {{name: synthetic, num_classes: 4, num_train: 64, num_test: 40, image_size: 16, val_split: 12}}
recipe: {{epochs: 2, batch_size: 16, eval_batch_size: 64, lr: 0.05, schedule: cosine, deterministic: true{extra}}}
seeds: [0]
models:
  - {{name: cifar_resnet_tiny, args: {{width: 4}}}}
"""
RUN_ID = "cifar_resnet_tiny-s0"


def run_tiny(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(SUITE.format(extra=extra))
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 0
    return out


def test_run_evaluates_validation_every_epoch_and_test_once(tmp_path):
    out = run_tiny(tmp_path)
    history = json.loads((out / "runs" / RUN_ID / "metrics.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    for h in history:
        for key in ("val_loss", "val_top1", "val_top5"):
            assert isinstance(h[key], float), (key, h)
        # 12 validation images: top-1 is a whole number of them
        assert h["val_top1"] * 12 / 100 == pytest.approx(round(h["val_top1"] * 12 / 100))
    first, last = history
    assert first["test_loss"] is None and first["test_top1"] is None and first["test_top5"] is None
    assert all(isinstance(last[k], float) for k in ("test_loss", "test_top1", "test_top5"))
    assert last["test_top1"] * 40 / 100 == pytest.approx(round(last["test_top1"] * 40 / 100))
    result = json.loads((out / "runs" / RUN_ID / "result.json").read_text())
    # 64 training images, 12 held out (3 per class), 40 test images
    assert (result["train_images"], result["val_images"], result["test_images"]) == (52, 12, 40)
    assert result["top1"] == last["test_top1"] and result["val_top1"] == last["val_top1"]
    assert result["test_evals"] == 1 and result["test_curve"] is False
    import pandas as pd
    row = pd.read_csv(out / "results.csv").iloc[0]
    assert (row["train_images"], row["val_images"], row["test_images"]) == (52, 12, 40)
    assert not bool(row["test_curve"])

    from mpbench.report.figures import curve_key
    from mpbench.report import build_report, load_results
    assert curve_key(load_results(out), [RUN_ID]) == "val_top1"  # curves: the validation split
    build_report(out, tmp_path / "rep", figures=False, analyze=False)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "validation split: 12 class-balanced training images held out" in md
    assert "top-1 from the test set (see the recipe" in md
    assert "test set evaluated once, after the last epoch" in md
    assert "validation split evaluated every epoch" in md
    assert "test top-1 (%)" in md and "val top-1 (%)" in md  # each number names its split
    assert "test set also evaluated" not in md


def test_test_every_gives_test_curves_flagged_in_results(tmp_path):
    out = run_tiny(tmp_path, extra=", test_every: 1")
    history = json.loads((out / "runs" / RUN_ID / "metrics.json").read_text())
    assert len(history) == 2
    for h in history:
        assert isinstance(h["val_top1"], float) and isinstance(h["test_top1"], float)
    result = json.loads((out / "runs" / RUN_ID / "result.json").read_text())
    assert result["test_evals"] == 2 and result["test_curve"] is True
    from mpbench.report.header import describe_recipe
    suite = json.loads((out / "suite.json").read_text())
    text = describe_recipe(suite["recipe"], suite["dataset"])
    assert "test set also evaluated every 1 epochs (test-set curves)" in text


def test_epochs_that_evaluate():
    """Which epochs evaluate what (1-based): eval_every for the validation split (and always
    the last), the test set after the last only unless test_every asks for more."""
    from mpbench.config import Recipe
    from mpbench.training.trainer import evaluates

    r = Recipe(epochs=5, eval_every=2)
    assert [evaluates(r, e, True) for e in range(1, 6)] == [
        (False, False), (True, False), (False, False), (True, False), (True, True)]
    assert [evaluates(r, e, False) for e in range(1, 6)] == [(False, False)] * 4 + [(False, True)]
    r = Recipe(epochs=5, test_every=2)
    assert [evaluates(r, e, True)[1] for e in range(1, 6)] == [False, True, False, True, True]


def test_paper_suites_train_on_all_images_and_the_quick_suite_holds_out_5000():
    from mpbench.config import load_suite

    repo = Path(__file__).resolve().parents[1]
    for name in ("cifar100.yaml", "cifar10.yaml"):
        ds = load_suite(repo / "suites" / name).dataset
        assert ds.val_split is None and ds.train_subset is None, name
    quick = load_suite(repo / "suites" / "cifar100-quick.yaml").dataset
    assert quick.name == "cifar100" and quick.val_split == 5000  # 50 of each of 100 classes
    assert quick.val_split % 100 == 0


def test_unset_split_fields_keep_the_dataset_fingerprint():
    """Configs written before val_split existed dump the same dataset dict."""
    dumped = DatasetConfig(name="cifar100").model_dump()
    assert "val_split" not in dumped and "val_seed" not in dumped
    dumped = DatasetConfig(name="cifar100", val_split=5000, val_seed=2).model_dump()
    assert dumped["val_split"] == 5000 and dumped["val_seed"] == 2


def test_schema_errors_name_the_field():
    base = {"name": "x", "models": [{"name": "cifar_resnet_tiny"}]}
    with pytest.raises(SuiteError, match=r"^f\.yaml: dataset\.val_split: 1000 leaves no training "
                                         r"images \(the training set has 1000\)"):
        parse_suite({**base, "dataset": {"name": "cifar10", "train_subset": 1000,
                                         "val_split": 1000}}, "f.yaml")
    with pytest.raises(SuiteError, match=r"^f\.yaml: dataset\.val_split: 50 does not divide "
                                         r"across the 100 classes"):
        parse_suite({**base, "dataset": {"name": "cifar100", "val_split": 50}}, "f.yaml")
    with pytest.raises(SuiteError, match=r"^f\.yaml: dataset\.val_split: 6 does not divide "
                                         r"across the 4 classes"):  # a folder's given classes
        parse_suite({**base, "dataset": {"name": "imagefolder", "num_classes": 4,
                                         "val_split": 6}}, "f.yaml")


def test_runs_from_before_test_every_are_described_by_their_histories():
    """The committed CPU report's runs predate ``test_every``: their metrics.json files hold a
    test top-1 at epoch 2 of 4 (eval_every: 2 then meant the test set), so the recipe line
    says so; a history that evaluates only after the last epoch says nothing of the kind."""
    from mpbench.report.header import header_lines
    from mpbench.report.results import load_results

    rs = load_results(Path(__file__).parents[1] / "reports" / "cifar10-jpg-report" / "results")
    h = next(iter(rs.metrics.values()))
    assert [e["test_top1"] is not None for e in h] == [False, True, False, True]
    recipe = next(line for line in header_lines(rs, "t", "") if line.startswith("- **Recipe:**"))
    assert "test set evaluated every 2 epochs and after the last (test-set curves" in recipe
    for hist in rs.metrics.values():
        for e in hist[:-1]:
            e["test_top1"] = None
    recipe = next(line for line in header_lines(rs, "t", "") if line.startswith("- **Recipe:**"))
    assert "test set" not in recipe
