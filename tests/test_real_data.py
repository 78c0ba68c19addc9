"""Real data: the CIFAR-10 JPEG copy in ../shared (skipped where absent). Run with -m slow."""
import pandas as pd
import pytest

from mpbench.cli import main
from mpbench.data import load_dataset

pytestmark = pytest.mark.slow


def test_jpeg_copy_reads_as_cifar10(cifar10_jpg):
    d = load_dataset({"name": "imagefolder"}, cifar10_jpg)
    assert d.train_x.shape == (50000, 3, 32, 32) and d.test_x.shape == (10000, 3, 32, 32)
    assert d.classes[0] == "airplane" and d.classes[-1] == "truck"
    assert d.train_y.bincount().tolist() == [5000] * 10


def test_short_real_training_beats_chance(cifar10_jpg, tmp_path):
    suite = tmp_path / "real.yaml"
    suite.write_text(f"""\
name: real-check
dataset: {{name: imagefolder, root: {cifar10_jpg}, train_subset: 2000}}
recipe: {{epochs: 2, batch_size: 64, lr: 0.05, schedule: cosine}}
models:
  - {{name: cifar_resnet_tiny, args: {{width: 8}}}}
""")
    assert main(["run", str(suite), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    results = pd.read_csv(tmp_path / "out" / "results.csv")
    assert results.status[0] == "done" and results.top1[0] > 20  # chance: 10
