"""The streaming input pipeline (mpbench.data.streaming) on synthetic JPEG folders written
here: loader choice, bad input, batches, determinism across worker counts, starting an epoch
at batch k, DDP-style shards, unreadable files skipped and counted, and a trainer run that
resumes from a mid-epoch checkpoint with the metrics of an uninterrupted one. The real-data
run on the CIFAR-10 JPEG copy is ``slow``."""
from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from mpbench.config import DatasetConfig, Recipe
from mpbench.data import DataError, StreamingDataset, StreamLoader, load_dataset
from mpbench.data import streaming
from mpbench.data.streaming import ShardSampler, choose_loader

CLASSES = ("ant", "bee", "cat", "dog")


def write_folder(root: Path, n_train: int = 8, n_test: int = 2, size=(40, 30),
                 vary: bool = False, truncated: bool = False) -> Path:
    """A learnable JPEG image folder: class c is a colour, plus noise."""
    from PIL import Image

    rng = np.random.default_rng(0)
    colours = rng.integers(0, 255, (len(CLASSES), 3))
    for split, n in (("train", n_train), ("test", n_test)):
        for c, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                w, h = (size[0] + 4 * (i % 3), size[1]) if vary else size
                noise = rng.integers(0, 60, (h, w, 3))
                arr = np.clip(colours[c] * 0.8 + noise, 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(root / split / name / f"{i:04d}.jpg", quality=90)
    if truncated:
        bad = root / "train" / CLASSES[1] / "0003.jpg"
        data = bad.read_bytes()
        bad.write_bytes(data[:len(data) // 3])
    return root


@pytest.fixture
def folder(tmp_path):
    return write_folder(tmp_path / "imgs")


def stream_cfg(root: Path, **kw) -> dict:
    return DatasetConfig(name="imagefolder", root=str(root), loader="stream", crop_size=16,
                         **kw).model_dump()


def loader_for(data: StreamingDataset, **kw) -> StreamLoader:
    args = dict(train=True, size=data.crop_size, seed=3, num_workers=0, scale_min=0.3)
    args.update(kw)
    return StreamLoader(data.train_files, data.train_y, kw.pop("batch_size", 8),
                        **{k: v for k, v in args.items() if k != "batch_size"})


def batches(loader, epoch: int, start: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.set_epoch(epoch, start)
    return [(x.clone(), y.clone()) for x, y in loader]


# --------------------------------------------------------------------------- choice, bad input

def test_auto_keeps_memory_when_it_fits_and_streams_when_it_does_not(folder):
    cfg = DatasetConfig(name="imagefolder").model_dump()
    assert choose_loader(cfg, folder)[0] == "memory"
    assert choose_loader({**cfg, "memory_budget_gib": 1e-6}, folder)[0] == "stream"
    assert choose_loader({**cfg, "loader": "stream"}, folder)[0] == "stream"
    data = load_dataset({**cfg, "root": str(folder), "memory_budget_gib": 1e-6})
    assert isinstance(data, StreamingDataset) and data.image_size == (3, 224, 224)
    memory = load_dataset({**cfg, "root": str(folder)})
    assert not isinstance(memory, StreamingDataset) and memory.image_size == (3, 30, 40)


def test_auto_streams_images_of_different_sizes(tmp_path):
    root = write_folder(tmp_path / "v", vary=True)
    cfg = DatasetConfig(name="imagefolder").model_dump()
    assert choose_loader(cfg, root) == ("stream", "images differ in size")
    with pytest.raises(DataError, match="one size"):
        choose_loader({**cfg, "loader": "memory"}, root)


def test_memory_that_does_not_fit_is_one_line_naming_the_field(folder, monkeypatch):
    monkeypatch.setattr(streaming, "available_ram", lambda: 1000)
    cache = Path(os.environ["MPBENCH_CACHE"])
    before = set(cache.rglob("*"))
    cfg = DatasetConfig(name="imagefolder", root=str(folder), loader="memory").model_dump()
    with pytest.raises(DataError, match=r"dataset.loader: memory: the decoded set needs .* "
                                        r"use loader: stream"):
        load_dataset(cfg)
    assert set(cache.rglob("*")) == before  # nothing decoded, nothing written


def test_folder_without_images_and_empty_class_folder_are_errors(tmp_path, folder):
    (tmp_path / "empty" / "train").mkdir(parents=True)
    (tmp_path / "empty" / "test").mkdir()
    with pytest.raises(DataError, match="no images found under train"):
        load_dataset(stream_cfg(tmp_path / "empty"))
    (folder / "test" / "eel").mkdir()
    (folder / "train" / "eel").mkdir()
    with pytest.raises(DataError, match=r"train/eel: a class folder with no images"):
        load_dataset(stream_cfg(folder))
    with pytest.raises(DataError, match="train/eel: a class folder with no images"):
        load_dataset(DatasetConfig(name="imagefolder", root=str(folder)).model_dump())


def test_stream_needs_an_extracted_folder(tmp_path, folder):
    with tarfile.open(tmp_path / "imgs.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname="imgs")
    (tmp_path / "a").mkdir()
    os.replace(tmp_path / "imgs.tar.gz", tmp_path / "a" / "imgs.tar.gz")
    with pytest.raises(DataError, match="extract the archive first"):
        load_dataset(stream_cfg(tmp_path / "a"))


def test_loader_fields_are_for_image_folders_and_leave_fingerprints_alone():
    with pytest.raises(ValueError, match="imagefolder only"):
        DatasetConfig(name="cifar10", loader="stream")
    assert DatasetConfig(name="cifar10").model_dump() == {
        k: v for k, v in DatasetConfig(name="cifar10").model_dump().items()
        if k not in ("loader", "memory_budget_gib", "crop_size", "num_workers")}
    assert "loader" not in DatasetConfig(name="imagefolder").model_dump()
    recipe = Recipe().model_dump(mode="json")
    assert not {"crop_pct", "crop_scale_min", "checkpoint_every_min"} & set(recipe)
    assert Recipe(checkpoint_every_min=0.5).model_dump()["checkpoint_every_min"] == 0.5


# --------------------------------------------------------------------------- the loader

def test_batches_are_normalised_float_on_the_device_in_either_layout(folder):
    data = load_dataset(stream_cfg(folder))
    ld = loader_for(data)
    assert len(ld) == 32 // 8
    got = batches(ld, 0)
    assert len(got) == 4 and all(x.shape == (8, 3, 16, 16) and x.dtype == torch.float32
                                 for x, _ in got)
    assert -3 < float(torch.cat([x for x, _ in got]).mean()) < 3
    cl = batches(loader_for(data, channels_last=True), 0)[0][0]
    assert cl.is_contiguous(memory_format=torch.channels_last)
    test = StreamLoader(data.test_files, data.test_y, 5, train=False, size=16, num_workers=0)
    xs = batches(test, 0)
    assert [len(y) for _, y in xs] == [5, 3] and torch.equal(torch.cat([y for _, y in xs]),
                                                             data.test_y)


def test_epochs_are_the_same_whatever_the_workers_and_leave_global_rngs_alone(folder):
    data = load_dataset(stream_cfg(folder))
    before = torch.get_rng_state()
    zero = batches(loader_for(data, num_workers=0), 1)
    assert torch.equal(torch.get_rng_state(), before)
    two = batches(loader_for(data, num_workers=2), 1)
    for (x0, y0), (x2, y2) in zip(zero, two, strict=True):
        assert torch.equal(x0, x2) and torch.equal(y0, y2)
    other = batches(loader_for(data), 2)
    assert not torch.equal(zero[0][0], other[0][0])  # a new permutation and new crops


@pytest.mark.parametrize("workers", [0, 2])
def test_an_epoch_started_at_batch_k_is_the_tail_of_the_whole_one(folder, workers):
    data = load_dataset(stream_cfg(folder))
    ld = loader_for(data, num_workers=workers)
    whole = batches(ld, 1)
    tail = batches(ld, 1, start=2)
    assert len(tail) == 2
    for (xa, ya), (xb, yb) in zip(whole[2:], tail, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert len(batches(ld, 1)) == 4  # the next pass over an epoch is whole again


def test_ranks_read_disjoint_shards_that_make_up_the_global_batch():
    one = ShardSampler(40, 8, train=True, seed=1)
    ranks = [ShardSampler(40, 4, train=True, seed=1, rank=r, world=2) for r in (0, 1)]
    for s in (one, *ranks):
        s.set_epoch(3)
    whole = list(one)
    shards = [list(s) for s in ranks]
    assert not {i for i, _ in shards[0]} & {i for i, _ in shards[1]}
    for b in range(len(one) // 8):  # step b: the union of the ranks' batches, same seeds
        union = shards[0][4 * b:4 * b + 4] + shards[1][4 * b:4 * b + 4]
        assert sorted(union) == sorted(whole[8 * b:8 * b + 8])
    evals = [ShardSampler(10, 4, train=False, rank=r, world=3) for r in range(3)]
    assert [i for s in evals for i, _ in s] == list(range(10))


def test_unreadable_jpeg_is_skipped_and_counted(tmp_path):
    root = write_folder(tmp_path / "t", truncated=True)
    data = load_dataset(stream_cfg(root))
    ld = loader_for(data)
    got = batches(ld, 0)
    assert sum(len(y) for _, y in got) == 31 and ld.epoch_skipped == 1
    assert ld.skipped_files == [str(root / "train" / "bee" / "0003.jpg")]
    assert batches(ld, 1) and ld.epoch_skipped == 1  # the same file, every epoch


# --------------------------------------------------------------------------- the trainer

def _train(data, recipe, **kw):
    from mpbench.registry import create_model
    from mpbench.training.trainer import seed_everything, train

    seed_everything(0, True)
    model = create_model("cifar_resnet_tiny", width=4, num_classes=4)
    return train(model, data, recipe, seed=0, progress=False, **kw)


def test_trainer_streams_and_resumes_mid_epoch_to_the_same_metrics(tmp_path, monkeypatch):
    import mpbench.training.trainer as trainer

    root = write_folder(tmp_path / "t", truncated=True)
    data = load_dataset({**stream_cfg(root), "num_workers": 2})
    recipe = Recipe(epochs=2, batch_size=8, eval_batch_size=16, lr=0.05, schedule="cosine",
                    deterministic=True, crop_scale_min=0.3)
    whole = _train(data, recipe).history
    assert [h["skipped_images"] for h in whole] == [1, 1]
    assert all(h["data_wait_s"] >= 0 and 0 <= h["data_wait_share"] <= 1 for h in whole)

    class Killed(Exception):
        pass

    real_save = trainer.save_checkpoint

    def save_then_die(path, *args, batch=0, **kw):
        real_save(path, *args, batch=batch, **kw)
        if batch:  # the first mid-epoch checkpoint: epoch 1, batch 2
            raise Killed

    monkeypatch.setenv("MPBENCH_CHECKPOINT_EVERY_BATCHES", "2")
    monkeypatch.setattr(trainer, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        _train(data, recipe, checkpoint=tmp_path / "ck.pt")
    state = trainer.load_checkpoint(tmp_path / "ck.pt", log=pytest.fail)
    assert (state["epoch"], state["batch"]) == (0, 2)
    monkeypatch.setattr(trainer, "save_checkpoint", real_save)
    resumed = _train(data, recipe, checkpoint=tmp_path / "ck.pt", resume=state).history
    keys = ("epoch", "lr", "train_loss", "train_acc", "test_loss", "test_top1", "skipped_images")
    assert [[h[k] for k in keys] for h in resumed] == [[h[k] for k in keys] for h in whole]


# --------------------------------------------------------------------------- real data (slow)

CIFAR_JPG = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpg" / \
    "cifar10-images-jpg.tar.gz"


@pytest.mark.slow
@pytest.mark.skipif(not CIFAR_JPG.exists(), reason=f"{CIFAR_JPG} absent (a fresh clone has no "
                                                   f"../shared)")
def test_cifar10_jpeg_copy_streamed_at_64px_learns(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar10jpg")
    subprocess.run(["tar", "xzf", str(CIFAR_JPG), "-C", str(root)], check=True)
    folder = next(p.parent for p in root.rglob("train") if p.is_dir())
    cfg = DatasetConfig(name="imagefolder", root=str(folder), loader="stream", crop_size=64,
                        train_subset=5000, num_workers=2).model_dump()
    data = load_dataset(cfg)
    assert isinstance(data, StreamingDataset) and data.num_classes == 10
    assert len(data.train_files) == 5000 and len(data.test_files) == 10000
    assert data.classes[0] == "airplane" and data.classes[-1] == "truck"
    recipe = Recipe(epochs=2, batch_size=64, eval_batch_size=500, lr=0.1, schedule="cosine",
                    crop_scale_min=0.35, crop_pct=1.0, weight_decay=5e-4)
    history = _train_real(data, recipe)
    assert history[-1]["test_top1"] > 25.0, history  # chance: 10 %
    assert history[-1]["skipped_images"] == 0


def _train_real(data, recipe):
    from mpbench.registry import create_model
    from mpbench.training.trainer import seed_everything, train

    seed_everything(0)
    model = create_model("cifar_resnet_tiny", width=8, num_classes=10)
    return train(model, data, recipe, seed=0, progress=False).history


def test_truncated_jpeg_in_the_memory_pipeline_is_one_line_naming_it(tmp_path):
    root = write_folder(tmp_path / "t", truncated=True)
    with pytest.raises(DataError, match=r"train/bee/0003.jpg: unreadable image"):
        load_dataset(DatasetConfig(name="imagefolder", root=str(root), loader="memory").model_dump())


def test_bad_folder_stops_mpbench_run_with_one_line_exit_2_nothing_written(tmp_path, capsys,
                                                                           folder):
    from mpbench.cli import main

    (folder / "train" / "eel").mkdir()
    suite = tmp_path / "s.yaml"
    suite.write_text(f"name: s\ndataset: {{name: imagefolder, root: {folder}, loader: stream, "
                     f"crop_size: 16}}\nrecipe: {{epochs: 1, batch_size: 8}}\n"
                     f"models: [{{name: cifar_resnet_tiny, match: false}}]\n")
    assert main(["run", str(suite), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train/eel: a class folder with no images" in err, err
    assert not (tmp_path / "o").exists()


def test_mpbench_run_streams_a_folder_end_to_end(tmp_path, folder):
    import json

    from mpbench.cli import main

    suite = tmp_path / "s.yaml"
    suite.write_text(f"name: s\ndataset: {{name: imagefolder, root: {folder}, loader: stream, "
                     f"crop_size: 16, num_workers: 0}}\n"
                     f"recipe: {{epochs: 1, batch_size: 8, eval_batch_size: 8}}\n"
                     f"models: [{{name: cifar_resnet_tiny, match: false, args: {{width: 4}}}}]\n")
    assert main(["run", str(suite), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    run = next((tmp_path / "o" / "runs").iterdir())
    (m,) = json.loads((run / "metrics.json").read_text())
    assert m["skipped_images"] == 0 and "data_wait_share" in m and m["test_top1"] is not None
    assert "data wait" in (run / "log.txt").read_text()
