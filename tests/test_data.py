import pickle
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from mpbench.data import DataError, load_dataset, normalize, synthetic


def _pickle(path, obj, byte_keys):
    if byte_keys:
        obj = {k.encode(): v for k, v in obj.items()}
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_fake_cifar10(root, n_per_batch=6, byte_keys=False):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        _pickle(folder / f"data_batch_{i}", {
            "data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
            "labels": [int(v) for v in rng.integers(0, 10, n_per_batch)],
            "batch_label": f"training batch {i} of 5"}, byte_keys)
    test = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 9]}
    _pickle(folder / "test_batch", test, byte_keys)
    _pickle(folder / "batches.meta", {"label_names": [f"c{i}" for i in range(10)],
                                      "num_vis": 3072}, byte_keys)
    return test


def write_fake_cifar100(root, byte_keys=False):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    fine = np.arange(100)
    coarse = fine // 5
    for split, n in (("train", 100), ("test", 20)):
        idx = np.arange(n) % 100
        _pickle(folder / split, {
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "fine_labels": [int(v) for v in fine[idx]], "coarse_labels": [int(v) for v in coarse[idx]],
            "filenames": [f"img{i}.png" for i in range(n)]}, byte_keys)
    _pickle(folder / "meta", {"fine_label_names": [f"f{i}" for i in range(100)],
                              "coarse_label_names": [f"s{i}" for i in range(20)]}, byte_keys)


@pytest.mark.parametrize("byte_keys", [False, True])
def test_cifar10_pickles(tmp_path, byte_keys):
    test = write_fake_cifar10(tmp_path, byte_keys=byte_keys)
    d = load_dataset({"name": "cifar10"}, tmp_path)
    assert d.train_x.shape == (30, 3, 32, 32) and d.train_x.dtype == torch.uint8
    assert d.test_y.tolist() == [0, 1, 2, 9] and d.num_classes == 10
    # row-major CHW layout, as the CIFAR page specifies: first 1024 bytes are the red plane
    assert torch.equal(d.test_x[1, 0].flatten(), torch.from_numpy(test["data"][1, :1024]))
    assert torch.equal(d.test_x[1, 2].flatten(), torch.from_numpy(test["data"][1, 2048:]))


@pytest.mark.parametrize("byte_keys", [False, True])
def test_cifar100_keeps_coarse_labels(tmp_path, byte_keys):
    write_fake_cifar100(tmp_path, byte_keys=byte_keys)
    d = load_dataset({"name": "cifar100"}, tmp_path)
    assert d.num_classes == 100 and len(d.coarse_classes) == 20
    assert torch.equal(d.train_coarse, d.train_y // 5)
    assert d.test_coarse.shape == d.test_y.shape


def test_missing_cifar_offline_says_what_to_download(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset({"name": "cifar100", "download": False}, tmp_path)
    msg = str(err.value)
    assert "cifar-100-python.tar.gz" in msg and str(tmp_path) in msg and "\n" not in msg


def _write_images(root):
    rng = np.random.default_rng(0)
    pixels = {}
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                arr = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / split / cls / f"{i}.png")
                pixels[(split, cls, i)] = arr
    return pixels


def test_image_folder_decoded_once_and_cached(tmp_path, monkeypatch):
    pixels = _write_images(tmp_path / "imgs")
    d = load_dataset({"name": "imagefolder"}, tmp_path / "imgs")
    assert d.classes == ["cat", "dog"] and d.train_x.shape == (6, 3, 8, 8)
    assert d.train_y.tolist() == [0, 0, 0, 1, 1, 1]
    assert np.array_equal(d.test_x[2].permute(1, 2, 0).numpy(), pixels[("test", "dog", 0)])
    # second load must come from the cache: make decoding impossible and load again
    monkeypatch.setattr("mpbench.data.datasets._decode", lambda data: (_ for _ in ()).throw(AssertionError))
    d2 = load_dataset({"name": "imagefolder"}, tmp_path / "imgs")
    assert torch.equal(d.train_x, d2.train_x)


def test_image_folder_from_tar_gz(tmp_path):
    pixels = _write_images(tmp_path / "imgs")
    (tmp_path / "arch").mkdir()
    with tarfile.open(tmp_path / "arch" / "set.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "imgs" / "train", arcname="train")
        tar.add(tmp_path / "imgs" / "test", arcname="test")
    d = load_dataset({"name": "imagefolder"}, tmp_path / "arch")
    assert d.train_x.shape == (6, 3, 8, 8)
    assert np.array_equal(d.train_x[3].permute(1, 2, 0).numpy(), pixels[("train", "dog", 0)])


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_dataset({"name": "imagefolder"}, tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="train/<class>"):
        load_dataset({"name": "imagefolder"}, tmp_path / "empty")


def test_synthetic_is_deterministic_and_stats_are_right():
    a, b = synthetic(num_classes=4, num_train=40), synthetic(num_classes=4, num_train=40)
    assert torch.equal(a.train_x, b.train_x) and a.num_classes == 4
    x = normalize(a.train_x, a.mean, a.std)
    assert torch.allclose(x.mean((0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(x.std((0, 2, 3)), torch.ones(3), atol=1e-3)


def test_train_subset_is_balanced_fixed_and_keeps_test_set():
    d = synthetic(num_classes=4, num_train=400, num_test=40, image_size=8)
    s = load_dataset({"name": "synthetic", "num_classes": 4, "num_train": 400, "num_test": 40,
                      "image_size": 8, "train_subset": 100})
    assert len(s.train_y) == 100 and torch.bincount(s.train_y).tolist() == [25] * 4
    assert torch.equal(s.test_x, d.test_x) and s.mean == d.mean
    again = d.subset(100)
    assert torch.equal(again.train_x, s.train_x)
    assert torch.equal(s.train_coarse, s.train_y // 2)
