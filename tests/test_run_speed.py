"""The wall-clock axis (issue #16): after training, every run measures its model's training
and inference throughput on its own device (``runner.measure_speed`` ->
``mpbench.bench.run_speed``), within a budget of ``SPEED_SHARE`` of its training time and
``SPEED_MAX_S`` seconds, without disturbing any RNG or the trained weights, and a failing
measurement costs the speed fields, never the run."""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mpbench.cli import main
from mpbench.suite import runner

SUITE = """\
name: speed
dataset: {{name: synthetic, num_classes: 4, num_train: 64, num_test: 32, image_size: 16}}
recipe: {{epochs: 2, batch_size: 16, eval_batch_size: 32, lr: 0.05, schedule: cosine, deterministic: true}}
seeds: {seeds}
models:
  - {{name: cifar_resnet_tiny, args: {{width: 4}}}}
"""
SPEED_FIELDS = ("speed_train_img_s", "speed_infer_img_s", "speed_batch_size", "speed_device")


def run_tiny(tmp_path: Path, seeds: str = "[0]", name: str = "out") -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(SUITE.format(seeds=seeds))
    out = tmp_path / name
    assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 0
    return out


def result(out: Path, run_id: str = "cifar_resnet_tiny-s0") -> dict:
    return json.loads((out / "runs" / run_id / "result.json").read_text())


def test_finished_run_records_its_speed_in_result_and_csv(tmp_path):
    out = run_tiny(tmp_path)
    r = result(out)
    assert r["status"] == "done"
    for key in ("speed_train_img_s", "speed_infer_img_s"):
        assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] > 0, (key, r[key])
    assert r["speed_batch_size"] == 16  # the recipe's batch (64 training images: no cap)
    assert r["speed_device"].startswith("cpu (")  # its own device, in words
    assert r["speed_repeats"] == 3 and r["speed_steps"] >= 1  # median of 3 timed blocks
    row = pd.read_csv(out / "results.csv").iloc[0]
    for key in SPEED_FIELDS:
        assert row[key] == pytest.approx(r[key]) if key != "speed_device" else row[key] == r[key]
    # the measurement is one fixed batch of 16 images, timed: img/s = 16 x steps / seconds.
    # Inference (no backward, no optimizer) is faster than training
    assert r["speed_infer_img_s"] > r["speed_train_img_s"]


def _fake_result(step_s: float, steps_per_epoch: int, train_time_s: float):
    from mpbench.training.trainer import TrainResult

    return TrainResult(history=[{"epoch_time_s": step_s * steps_per_epoch}] * 2,
                       train_time_s=train_time_s)


@pytest.fixture(scope="module")
def tiny_plan(tmp_path_factory):
    """A planned tiny run, its suite and data, and a trained-looking model."""
    from mpbench.config import parse_suite
    from mpbench.data import load_dataset
    from mpbench.registry import create_model
    from mpbench.suite.plan import plan_suite
    import yaml

    suite = parse_suite(yaml.safe_load(SUITE.format(seeds="[0]")))
    plan = plan_suite(suite)[0]
    torch.manual_seed(0)
    model = create_model(plan.model, **plan.args)
    return plan, suite, load_dataset(suite.dataset), model


def _measured_step_s(plan, suite, data, model) -> float:
    """Seconds per training step of this model here (the median of a few real steps)."""
    import copy
    import time

    from mpbench.bench.throughput import TrainStep
    from mpbench.data import normalize
    m = copy.deepcopy(model)
    x = normalize(data.train_x[:16], data.mean, data.std)
    y = data.train_y[:16]
    step = TrainStep(m, torch.device("cpu"), lambda: torch.autocast("cpu", enabled=False))
    step(x, y)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        step(x, y)
        times.append(time.perf_counter() - t0)
    return sorted(times)[2]


@pytest.mark.parametrize("train_time_s,max_s,budget", [
    (40.0, 3.0, 0.8),    # 2% of 40 s = 0.8 s, below SPEED_MAX_S
    (1000.0, 0.5, 0.5),  # 2% of 1000 s = 20 s, capped at SPEED_MAX_S (0.5 here)
])
def test_measurement_stays_within_its_budget(tiny_plan, monkeypatch, train_time_s, max_s,
                                             budget):
    plan, suite, data, model = tiny_plan
    monkeypatch.setattr(runner, "SPEED_MAX_S", max_s)
    assert runner.SPEED_SHARE == 0.02
    step_s = _measured_step_s(plan, suite, data, model)
    steps_per_epoch = 64 // 16
    res = _fake_result(step_s, steps_per_epoch, train_time_s)
    speed = runner.measure_speed(plan, model, data, suite, torch.device("cpu"), res,
                                 lambda m: None)
    assert speed["speed_steps"] > 1  # the budget holds many steps: sized, not the minimum
    # sized from the run's own seconds per step: the planned work (repeats x steps, each a
    # training step and an inference pass of ~1/3 step) fills the budget without exceeding
    # it. Work, not wall-clock: on a shared machine the seconds themselves are noise.
    planned = speed["speed_repeats"] * speed["speed_steps"] * step_s * 4 / 3
    assert 0.5 * budget <= planned <= budget + 1e-9, (planned, budget, speed)


def test_measurement_restores_every_rng_and_leaves_the_model_alone(tiny_plan):
    plan, suite, data, model = tiny_plan
    before = {k: v.clone() for k, v in model.state_dict().items()}
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    states = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    speed = runner.measure_speed(plan, model, data, suite, torch.device("cpu"),
                                 _fake_result(0.01, 4, 10.0), lambda m: None)
    assert speed["speed_train_img_s"] > 0
    assert random.getstate() == states[0]
    assert np.array_equal(np.random.get_state()[1], states[1])
    assert torch.equal(torch.get_rng_state(), states[2])
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN buffers
    assert model.training  # mode untouched (the copy was trained, not this one)


def test_runs_after_a_measurement_train_exactly_as_without_one(tmp_path, monkeypatch):
    """Two runs in one process: the second's metrics are the same whether or not the first
    measured its speed (and its own measurement does not change its own metrics)."""
    measured = run_tiny(tmp_path, "[0, 1]", "measured")
    monkeypatch.setattr(runner, "measure_speed",
                        lambda *a, **k: dict.fromkeys(SPEED_FIELDS))
    plain = run_tiny(tmp_path, "[0, 1]", "plain")
    for run_id in ("cifar_resnet_tiny-s0", "cifar_resnet_tiny-s1"):
        def curve(out):
            return [(h["train_loss"], h["test_top1"], h["test_loss"]) for h in
                    json.loads((out / "runs" / run_id / "metrics.json").read_text())]
        assert curve(measured) == curve(plain), run_id
        assert result(measured, run_id)["top1"] == result(plain, run_id)["top1"]
        assert result(plain, run_id)["speed_train_img_s"] is None
        assert result(measured, run_id)["speed_train_img_s"] > 0


def test_failed_measurement_keeps_the_run_with_empty_speed_fields(tmp_path, monkeypatch):
    import mpbench.bench

    def broken(*args, **kwargs):
        torch.rand(3)  # draws before failing: the RNGs must still come back
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(mpbench.bench, "run_speed", broken)
    out = run_tiny(tmp_path)
    r = result(out)
    assert r["status"] == "done" and r["top1"] is not None
    for key in SPEED_FIELDS:
        assert r[key] is None, key
    row = pd.read_csv(out / "results.csv").iloc[0]
    assert row["status"] == "done"
    assert all(pd.isna(row[key]) for key in SPEED_FIELDS)
    log = (out / "runs" / "cifar_resnet_tiny-s0" / "log.txt").read_text()
    assert ("speed measurement failed (RuntimeError: CUDA out of memory (simulated)); "
            "speed fields left empty") in log
    assert main(["run", str(tmp_path / "s.yaml"), "--out", str(out), "--no-progress"]) == 0
    assert result(out)["status"] == "done"  # finished: never trained again for its speed


def test_streamed_image_folder_runs_get_a_speed_too(tmp_path):
    """A streamed folder has no decoded images in memory: the measurement decodes its first
    files (before this, every streamed run lost its speed fields to an AttributeError)."""
    from PIL import Image

    from mpbench.bench import run_speed
    from mpbench.config import DatasetConfig, Recipe
    from mpbench.data import StreamingDataset, load_dataset
    from mpbench.registry import create_model

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 255, (20, 20, 3)).astype(np.uint8)).save(
                    tmp_path / split / c / f"{i}.jpg")
    data = load_dataset(DatasetConfig(name="imagefolder", root=str(tmp_path), loader="stream",
                                      crop_size=16).model_dump())
    assert isinstance(data, StreamingDataset)
    model = create_model("cifar_resnet_tiny", width=4, num_classes=2)
    speed = run_speed(model, data, Recipe(batch_size=8), "cpu", budget_s=0.1)
    assert speed["speed_batch_size"] == 6  # 6 training files < batch 8
    assert speed["speed_train_img_s"] > 0 and speed["speed_infer_img_s"] > 0
