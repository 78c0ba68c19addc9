"""DDP on CPU (gloo): the same trajectory as one process at the same global batch; rank 0 writes.

Tolerance: losses agree to rtol 1e-4, accuracies to within one image (DDP averages the two
half-batch gradients where one process averages the full batch, so only float32 summation
order differs; the data, augmentation and learning rates are identical). The
equivalence test uses a batch-norm-free net because CPU has no SyncBatchNorm kernel: on CUDA
mpbench synchronises BN (same maths); on CPU each rank normalises over its own share.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn as nn

from mpbench.config import Recipe
from mpbench.data import synthetic
from mpbench.data.loader import BatchLoader

from conftest import TINY_SUITE

RTOL = 1e-4
REPO = Path(__file__).resolve().parents[1]


class TinyNet(nn.Module):
    """No batch norm: a DDP step is then exactly the single-process step (up to fp order)."""

    def __init__(self, classes: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


def _data():
    # 8 images held out: the validation loader shards across ranks like the test loader
    return synthetic(num_classes=4, num_train=72, num_test=32, image_size=8).split_val(8)


def _recipe():
    return Recipe(epochs=3, batch_size=16, eval_batch_size=32, lr=0.05, schedule="cosine",
                  amp="off", deterministic=True,  # crop + flip on: augmentation must agree too
                  test_every=1)  # test-set curves, to compare every epoch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_rank_shares_make_the_single_process_batch():
    d = _data()
    kw = dict(train=True, mean=d.mean, std=d.std, seed=3, padding=4, flip=True)
    single = BatchLoader(d.train_x, d.train_y, 16, **kw)
    ranks = [BatchLoader(d.train_x, d.train_y, 8, shard=(r, 2), **kw) for r in range(2)]
    for loader in (single, *ranks):
        loader.set_epoch(1)
    assert len(single) == len(ranks[0]) == len(ranks[1]) == 4
    for (x, y), (x0, y0), (x1, y1) in zip(single, *ranks):
        assert torch.equal(x[0::2], x0) and torch.equal(x[1::2], x1)  # same crops and flips
        assert torch.equal(y[0::2], y0) and torch.equal(y[1::2], y1)


def _worker(rank: int, world: int, port: int, tmp: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from mpbench.training import distributed
    from mpbench.training.trainer import load_checkpoint, seed_everything, train

    tmp = Path(tmp)
    assert distributed.setup("cpu") == torch.device("cpu") and distributed.world_size() == world
    out = {}
    for name, resume in (("fresh", None), ("resumed", tmp / "single_ep1.pt")):
        seed_everything(0, True)
        torch.manual_seed(100 + rank)  # different init per rank: DDP must broadcast rank 0's
        model = TinyNet()
        state = load_checkpoint(resume) if resume else None
        own = tmp / f"{name}-rank{rank}"  # each rank gets its own folder: only rank 0's fills
        own.mkdir()
        res = train(model, _data(), _recipe(), seed=0, device="cpu", checkpoint=own / "ckpt.pt",
                    resume=state, progress=False,
                    on_epoch=lambda m, own=own: (own / f"epoch{m['epoch']}").touch())
        out[name] = res.history
    if rank == 0:
        (tmp / "ddp.json").write_text(json.dumps(out))
    distributed.teardown()


def _close(a: list[dict], b: list[dict]) -> None:
    assert [h["epoch"] for h in a] == [h["epoch"] for h in b]
    for u, v in zip(a, b):
        for key in ("train_loss", "test_loss", "val_loss", "lr"):
            assert u[key] == pytest.approx(v[key], rel=RTOL, abs=1e-7), (u["epoch"], key)
        for key in ("train_acc", "test_top1", "val_top1"):  # counts: at most one image apart
            assert abs(u[key] - v[key]) <= 100 / 32 + 1e-9, (u["epoch"], key)


def test_ddp_two_gloo_processes_match_one_process(tmp_path):
    import shutil

    import torch.multiprocessing as mp

    from mpbench.training.trainer import evaluate, load_checkpoint, make_loaders, seed_everything, train

    torch.set_num_threads(1)
    seed_everything(0, True)
    torch.manual_seed(100)  # what rank 0 draws: DDP starts every rank from rank 0's weights
    single = train(TinyNet(), _data(), _recipe(), seed=0, device="cpu",
                   checkpoint=tmp_path / "single.pt", progress=False,
                   on_epoch=lambda m: m["epoch"] == 1 and shutil.copy(tmp_path / "single.pt",
                                                                      tmp_path / "single_ep1.pt"))
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ddp = json.loads((tmp_path / "ddp.json").read_text())

    _close(ddp["fresh"], single.history)
    _close(ddp["resumed"][1:], single.history[1:])       # resumed from a 1-process checkpoint
    assert ddp["resumed"][0] == single.history[0]         # history restored, not retrained
    for name, epochs in (("fresh", ["epoch1", "epoch2", "epoch3"]), ("resumed", ["epoch2", "epoch3"])):
        wrote = sorted(p.name for p in (tmp_path / f"{name}-rank0").iterdir())
        assert wrote == ["ckpt.pt", "ckpt.pt.prev", *epochs]      # rank 0: checkpoint + callbacks
        assert list((tmp_path / f"{name}-rank1").iterdir()) == []  # rank 1: nothing at all

    # the DDP checkpoint has no ``module.`` prefix and loads into a plain single-process model
    state = load_checkpoint(tmp_path / "fresh-rank0" / "ckpt.pt")
    assert not any(k.startswith("module.") for k in state["model"])
    model = TinyNet()
    model.load_state_dict(state["model"])
    _, test = make_loaders(_data(), _recipe(), torch.device("cpu"), 0, False)
    assert evaluate(model, test, torch.autocast("cpu", enabled=False))["test_loss"] == \
        pytest.approx(ddp["fresh"][-1]["test_loss"], rel=1e-6)


def _torchrun(args: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node 2 -m mpbench ARGS``; on timeout SIGTERM the agent (it stops
    its workers) rather than SIGKILL it (which would orphan them)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(_free_port()), "-m", "mpbench", *args]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, err = proc.communicate(timeout=60)
        raise AssertionError(f"torchrun timed out after {timeout}s\n{out}\n{err}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_torchrun_suite_rank0_writes_and_single_process_resumes_it(tmp_path, capsys):
    """`torchrun --nproc_per_node 2 -m mpbench run`: one writer; its checkpoint resumes in 1 process."""
    from mpbench.cli import main

    suite = tmp_path / "s.yaml"
    suite.write_text(TINY_SUITE)
    out = tmp_path / "o"
    proc = _torchrun(["run", str(suite), "--out", str(out), "--no-progress", "--device", "cpu"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("suite tiny: done 1") == 1  # only rank 0 reports

    run_dir = out / "runs" / "cifar_resnet_tiny-s0"
    rows = pd.read_csv(out / "results.csv")
    assert len(rows) == 1 and rows.status[0] == "done" and rows.epochs[0] == 2
    assert rows.world_size[0] == 2
    log = (run_dir / "log.txt").read_text()
    assert log.count("epoch 1/2") == 1 and log.count("epoch 2/2") == 1, log  # one writer
    assert sorted(p.name for p in run_dir.iterdir()) == [
        ".lock", "checkpoint.pt", "checkpoint.pt.prev", "config.json", "log.txt",
        "metrics.json", "result.json"]
    assert sorted(p.name for p in out.iterdir()) == [".lock", "plan.json", "results.csv", "runs",
                                                     "suite.json"]
    ddp_history = json.loads((run_dir / "metrics.json").read_text())
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2 and not any(k.startswith("module.") for k in state["model"])

    # pretend the torchrun job died during epoch 2: a plain `mpbench run` resumes its epoch-1 checkpoint
    for path in (run_dir / "result.json", run_dir / "checkpoint.pt", out / "results.csv"):
        path.unlink()
    (run_dir / "metrics.json").write_text(json.dumps(ddp_history[:1]))
    assert main(["run", str(suite), "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    assert "resuming after epoch 1" in (run_dir / "log.txt").read_text()
    rows = pd.read_csv(out / "results.csv")
    assert len(rows) == 1 and rows.status[0] == "done" and rows.epochs[0] == 2
    history = json.loads((run_dir / "metrics.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2] and history[0] == ddp_history[0]
