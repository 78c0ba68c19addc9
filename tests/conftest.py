"""Shared fixtures: tiny synthetic data and suites, real CIFAR-10 JPEG copy when present."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_CIFAR10_JPG = REPO.parent / "shared" / "data" / "cifar10-jpg"


def python_process(*argv, **popen_kw) -> subprocess.Popen:
    """``python *argv`` in a fresh process with one OpenMP thread, so that runs of one suite in
    different processes are bit-identical. Output: text, stderr merged into stdout unless
    ``popen_kw`` says otherwise."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    kw = dict(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) | popen_kw
    return subprocess.Popen([sys.executable, *map(str, argv)], env=env, **kw)

def child_pids(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is ``pid``, read from /proc (Linux): a
    trainer's DataLoader workers, submitit's task under its controller."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            kids.append(int(stat.parent.name))
    return kids


# Two cores are shared by the test process and any subprocess it starts.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep image-folder caches out of the user's ~/.cache."""
    monkeypatch.setenv("MPBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "mpbench-cache"))
    # the per-run memory measurement forks a child from a fork server that imports mpbench
    # (seconds per process); tests/test_memory.py turns it back on
    monkeypatch.setenv("MPBENCH_MEMORY", "off")


@pytest.fixture
def cifar10_jpg() -> Path:
    if not SHARED_CIFAR10_JPG.exists():
        pytest.skip("real CIFAR-10 JPEG copy not present (../shared/data/cifar10-jpg)")
    return SHARED_CIFAR10_JPG


TINY_SUITE = """\
name: tiny
dataset: {name: synthetic, num_classes: 4, num_train: 64, num_test: 32, image_size: 16}
recipe: {epochs: 2, batch_size: 16, eval_batch_size: 32, lr: 0.05, schedule: cosine, deterministic: true}
seeds: [0]
models:
  - {name: cifar_resnet_tiny, args: {width: 4}}
"""
