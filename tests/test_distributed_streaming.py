"""DDP over the streaming loader (``dataset.loader: stream``), two gloo processes on CPU.

1. The loaders the trainer builds under DDP (:func:`mpbench.training.trainer.make_loaders`
   inside a real process group): each rank reads a disjoint shard of the (seed, epoch)
   permutation, the shards make up the usable epoch (``n // global_batch * global_batch``),
   rank r's batch i is the strided share ``[r::world]`` of a 1-process loader's batch i at
   the global batch (same images, same crops and flips), a new epoch is a new permutation
   and the same (seed, epoch) gives it back; 0 and 1 DataLoader workers read the same
   batches; the test loader gives every rank a contiguous chunk, every image once.
2. A SLURM multi-task job body (:class:`mpbench.suite.launch.RunJob`, with the ``SLURM_*``
   variables of a 2-task job, so submitit's ``TorchDistributedEnvironment`` exports the
   ``env://`` variables) trains 2 epochs on the streamed folder through the runner; its
   metrics equal a 1-process ``run_suite`` of the same suite.
3. An unreadable file in rank 1's shard is counted and named in metrics.json as a
   1-process run counts it (the trainer sums the ranks' skip counts and gathers the names).

Ranks see which image they got through the labels: the recording loaders' label of image k
is ``k * 100 + label`` (the dataset's label list is replaced before the first batch).
Tolerance as tests/test_distributed.py: a batch-norm-free net (CPU has no SyncBatchNorm),
losses to rtol 1e-4, accuracies within one image.
"""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from mpbench.config import DatasetConfig, Recipe

CLASSES = ("ant", "bee", "cat", "dog")
N_TRAIN, N_TEST = 12, 3             # per class: 48 training, 12 test images of 16x16
GLOBAL_BATCH, WORLD, SEED = 10, 2, 7  # 4 steps of 10, 8 images left over each epoch
USABLE = 4 * N_TRAIN // GLOBAL_BATCH * GLOBAL_BATCH
RTOL = 1e-4
MODEL = "_test_stream_ddp_net"


def write_folder(root: Path) -> Path:
    """A JPEG class folder, every image different (class colour + noise)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    colours = rng.integers(0, 255, (len(CLASSES), 3))
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        for c, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                arr = np.clip(colours[c] * 0.8 + rng.integers(0, 60, (16, 16, 3)), 0, 255)
                Image.fromarray(arr.astype(np.uint8)).save(root / split / name / f"{i:03d}.jpg")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("ddp-stream") / "imgs")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _as_launched() -> None:
    """torchrun and srun start each rank as a fresh interpreter, whose DataLoader workers fork
    (Linux's default); mp.spawn's children inherit 'spawn', under which every worker would
    re-import torch (seconds each)."""
    import multiprocessing
    multiprocessing.set_start_method("fork", force=True)
    torch.set_num_threads(1)


@pytest.fixture
def one_thread():
    """One intra-op thread, as each rank has: the 1-process reference sums in the same order."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- 1. the shards

def _cfg(root: Path, workers: int) -> dict:
    return DatasetConfig(name="imagefolder", root=str(root), loader="stream", crop_size=16,
                         num_workers=workers).model_dump()


def _recipe() -> Recipe:
    return Recipe(batch_size=GLOBAL_BATCH, eval_batch_size=4, crop_scale_min=0.3)


def _record(root: Path, workers: int, epochs=(0, 1, 0)) -> dict:
    """Batches of the loaders :func:`make_loaders` builds in this process (its rank and world
    from the process group, if any): per epoch, the images' (index, label) codes and pixels."""
    from mpbench.data import load_dataset
    from mpbench.training.trainer import make_loaders

    data = load_dataset(_cfg(root, workers))
    train, test = make_loaders(data, _recipe(), torch.device("cpu"), SEED, False)
    for ld, y in ((train, data.train_y), (test, data.test_y)):
        ld.dataset.labels = [k * 100 + int(c) for k, c in enumerate(y)]  # before any worker forks
    out = {"workers": train.loader.num_workers, "shard": (train.rank, train.world), "test_shard": (test.rank, test.world),
           "steps": len(train), "epochs": [], "test": []}
    for epoch in epochs:
        train.set_epoch(epoch)
        got = [(y.tolist(), x.clone()) for x, y in train]
        out["epochs"].append(got)
    out["test"] = [y.tolist() for _, y in test]
    out["train_y"], out["test_y"] = data.train_y.tolist(), data.test_y.tolist()
    return out


def _record_rank(rank: int, world: int, port: int, root: str, tmp: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    _as_launched()
    from mpbench.training import distributed

    assert distributed.setup("cpu") == torch.device("cpu") and distributed.world_size() == world
    torch.save({w: _record(Path(root), w) for w in (0, 1)}, Path(tmp) / f"rank{rank}.pt")
    distributed.teardown()


def _index(codes: list[int]) -> list[int]:
    return [c // 100 for c in codes]


def test_ranks_stream_disjoint_shards_that_make_up_the_single_process_batches(folder, tmp_path,
                                                                              one_thread):
    import torch.multiprocessing as mp

    mp.spawn(_record_rank, args=(WORLD, _free_port(), str(folder), str(tmp_path)), nprocs=WORLD,
             join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    single = _record(folder, 0)  # no process group here: rank 0 of 1, the global batch
    assert single["shard"] == (0, 1) and single["steps"] == USABLE // GLOBAL_BATCH == 4

    for r, rec in enumerate(ranks):
        assert rec[0]["shard"] == rec[0]["test_shard"] == (r, WORLD)  # from the process group
        assert rec[0]["steps"] == single["steps"]
        assert (rec[0]["workers"], rec[1]["workers"]) == (0, 1)
        for e, (with_workers, without) in enumerate(zip(rec[1]["epochs"], rec[0]["epochs"])):
            for (y1, x1), (y0, x0) in zip(with_workers, without, strict=True):  # 1 worker = 0
                assert y1 == y0 and torch.equal(x1, x0), (r, e)
        for codes, _ in rec[0]["epochs"][0]:  # each image keeps its own label
            assert [c % 100 for c in codes] == [rec[0]["train_y"][c // 100] for c in codes]

    for e in range(3):
        shards = [[_index(y) for y, _ in rec[0]["epochs"][e]] for rec in ranks]
        whole = [_index(y) for y, _ in single["epochs"][e]]
        seen = [sum(s, []) for s in shards]
        assert all(len(s) == len(set(s)) == USABLE // WORLD for s in seen)  # no repeats
        assert not set(seen[0]) & set(seen[1])                               # disjoint
        assert sorted(seen[0] + seen[1]) == sorted(sum(whole, []))           # = the usable epoch
        assert len(set(seen[0]) | set(seen[1])) == USABLE
        for i, batch in enumerate(whole):  # step i: the strided shares of the global batch i
            x_single = single["epochs"][e][i][1]
            for r, rec in enumerate(ranks):
                assert shards[r][i] == batch[r::WORLD], (e, i, r)
                assert torch.equal(rec[0]["epochs"][e][i][1], x_single[r::WORLD]), (e, i, r)

    order = [sum((_index(y) for y, _ in single["epochs"][e]), []) for e in range(3)]
    assert order[1] != order[0]  # epoch 1: a new permutation
    assert order[2] == order[0]  # epoch 0 again: the same one, the same pixels
    for (ya, xa), (yb, xb) in zip(single["epochs"][0], single["epochs"][2], strict=True):
        assert ya == yb and torch.equal(xa, xb)
    # ... and another seed draws another one
    from mpbench.data.streaming import ShardSampler
    other = ShardSampler(4 * N_TRAIN, GLOBAL_BATCH, train=True, seed=SEED + 1)
    assert [i for i, _ in other][:USABLE] != order[0]

    # evaluation: contiguous chunks, every test image exactly once
    test = [_index(sum(rec[0]["test"], [])) for rec in ranks]
    assert test == [list(range(6)), list(range(6, 12))]
    assert _index(sum(single["test"], [])) == list(range(4 * N_TEST))


# --------------------------------------------------------------------------- 2. a SLURM job

class TinyNet(nn.Module):
    """No batch norm: a DDP step is then the single-process step (up to fp order)."""

    def __init__(self, num_classes: int = 4, in_chans: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, 8, 3, padding=1)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


def _register() -> None:
    from mpbench.registry import register_model
    register_model(TinyNet, name=MODEL, family="_test", timm=False)


@pytest.fixture
def tiny_model():
    from mpbench import registry
    _register()
    yield
    registry._REGISTRY.pop(MODEL, None)


def _suite_text(root: Path) -> str:
    return (f"name: ddpstream\n"
            f"dataset: {{name: imagefolder, root: {root}, loader: stream, crop_size: 16, "
            f"num_workers: 0, val_split: 4}}\n"
            f"recipe: {{epochs: 2, batch_size: {GLOBAL_BATCH}, eval_batch_size: 4, lr: 0.05, "
            f"schedule: cosine, amp: 'off', deterministic: true, test_every: 1, "
            f"crop_scale_min: 0.3}}\n"
            f"seeds: [{SEED}]\n"
            f"models: [{{name: {MODEL}, match: false}}]\n")


def _slurm_job_id() -> str:
    """A job id whose master port is free here: with no MASTER_PORT set, submitit's
    TorchDistributedEnvironment draws the port from the job id (random.Random(job_id),
    20000..60000), so every task of a job agrees on it."""
    import random
    return next(j for j in map(str, range(4242, 4342))
                if _is_free(random.Random(j).randint(20000, 60000)))


def _slurm_task(rank: int, world: int, job_id: str, job: dict, tmp: str) -> None:
    """One task of a 2-task SLURM job: only SLURM's variables, none of torchrun's."""
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
                "LOCAL_WORLD_SIZE"):
        os.environ.pop(key, None)
    os.environ.update(SUBMITIT_EXECUTOR="slurm", SLURM_JOB_ID=job_id, SLURM_NTASKS=str(world),
                      SLURM_JOB_NUM_NODES="1", SLURM_NODEID="0", SLURM_PROCID=str(rank),
                      SLURM_LOCALID=str(rank), SLURM_JOB_NODELIST="localhost")
    _as_launched()
    _register()
    from mpbench.suite.launch import RunJob
    from mpbench.training import distributed

    got = RunJob(**job)()
    assert os.environ["WORLD_SIZE"] == str(world) and os.environ["RANK"] == str(rank)
    assert distributed.world_size() == world and distributed.rank() == rank
    (Path(tmp) / f"task{rank}.json").write_text(json.dumps(got["counts"]))
    distributed.teardown()


def test_slurm_two_task_job_on_a_streamed_folder_matches_one_process(folder, tmp_path,
                                                                     tiny_model, one_thread):
    pytest.importorskip("submitit")
    import pandas as pd
    import torch.multiprocessing as mp

    from mpbench.config import load_suite
    from mpbench.suite.plan import plan_suite
    from mpbench.suite.runner import run_suite

    path = tmp_path / "s.yaml"
    path.write_text(_suite_text(folder))
    suite = load_suite(path)
    plans = plan_suite(suite, str(path))
    (run_id,) = [p.run_id for p in plans]
    job = dict(suite=suite.model_dump(mode="json"), plans=[p.as_dict() for p in plans],
               run_id=run_id, out=str(tmp_path / "ddp"), source=str(path), device="cpu")
    mp.spawn(_slurm_task, args=(WORLD, _slurm_job_id(), job, str(tmp_path)), nprocs=WORLD, join=True)
    counts = run_suite(suite, plans, tmp_path / "one", device="cpu", progress=False,
                       echo=lambda *_: None, source=str(path))
    assert counts["done"] == 1
    for r in range(WORLD):
        assert json.loads((tmp_path / f"task{r}.json").read_text())["done"] == 1

    ddp = json.loads((tmp_path / "ddp" / "runs" / run_id / "metrics.json").read_text())
    one = json.loads((tmp_path / "one" / "runs" / run_id / "metrics.json").read_text())
    assert [h["epoch"] for h in ddp] == [h["epoch"] for h in one] == [1, 2]
    one_image = {"train_acc": 100 / USABLE, "test_top1": 100 / (4 * N_TEST), "val_top1": 100 / 4}
    for u, v in zip(ddp, one):
        for key in ("train_loss", "test_loss", "val_loss", "lr"):
            assert u[key] == pytest.approx(v[key], rel=RTOL, abs=1e-7), (u["epoch"], key)
        for key, step in one_image.items():
            assert abs(u[key] - v[key]) <= step + 1e-9, (u["epoch"], key)
        assert u["skipped_images"] == v["skipped_images"] == 0
    ddp_row = pd.read_csv(tmp_path / "ddp" / "results.csv").iloc[0]
    one_row = pd.read_csv(tmp_path / "one" / "results.csv").iloc[0]
    assert ddp_row.status == one_row.status == "done" and ddp_row.world_size == WORLD
    assert ddp_row.train_images == one_row.train_images == 4 * N_TRAIN - 4
    log = (tmp_path / "ddp" / "runs" / run_id / "log.txt").read_text()
    assert log.count("epoch 1/2") == 1 and log.count("epoch 2/2") == 1, log  # rank 0 alone


# --------------------------------------------------------------------------- 3. unreadable files

def _train_rank(rank: int, world: int, port: int, root: str, tmp: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    _as_launched()
    from mpbench.training import distributed

    distributed.setup("cpu")
    history = _train_streamed(Path(root))
    if rank == 0:
        (Path(tmp) / "ddp.json").write_text(json.dumps(history))
    distributed.teardown()


def _train_streamed(root: Path) -> list[dict]:
    from mpbench.data import load_dataset
    from mpbench.training.trainer import seed_everything, train

    seed_everything(0, True)
    recipe = Recipe(epochs=1, batch_size=GLOBAL_BATCH, eval_batch_size=4, amp="off",
                    deterministic=True, crop_scale_min=0.3)
    return train(TinyNet(), load_dataset(_cfg(root, 0)), recipe, seed=SEED, device="cpu",
                 progress=False).history


def test_an_unreadable_image_in_another_ranks_shard_is_counted(folder, tmp_path, one_thread):
    """A file rank 1 reads is skipped, counted and named in metrics.json as in one process."""
    import shutil

    import torch.multiprocessing as mp

    from mpbench.data.streaming import ShardSampler, list_split

    root = tmp_path / "imgs"
    shutil.copytree(folder, root)
    files = list_split(root, "train")[0]
    order = [i for i, _ in ShardSampler(len(files), GLOBAL_BATCH, train=True, seed=SEED)]
    bad = Path(files[order[1]])  # epoch 0, global position 1: rank 1's first image
    bad.write_bytes(bad.read_bytes()[:200])
    single = _train_streamed(root)
    assert single[0]["skipped_images"] == 1 and single[0]["skipped_files"] == [str(bad)]
    mp.spawn(_train_rank, args=(WORLD, _free_port(), str(root), str(tmp_path)), nprocs=WORLD,
             join=True)
    ddp = json.loads((tmp_path / "ddp.json").read_text())
    assert ddp[0]["skipped_images"] == 1 and ddp[0].get("skipped_files") == [str(bad)], ddp[0]
