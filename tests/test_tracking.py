"""Suite ``tracking:``: TensorBoard and MLflow, read back with the libraries' own readers.

Everything runs against the real libraries: event files through tensorboard's
EventAccumulator, MLflow through MlflowClient on a file store and on a real ``mlflow server``
(127.0.0.1, a free port, SQLite backend in tmp_path).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import TINY_SUITE, python_process
from mpbench.config import SuiteError, parse_suite
from mpbench.storage import read_json
from mpbench.suite.plan import plan_suite
from mpbench.suite.runner import run_suite
from mpbench.suite.sync_tracking import sync_tracking, tracking_of

pytest.importorskip("mlflow")
pytest.importorskip("tensorboard")
from mlflow.tracking import MlflowClient  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

HERE = Path(__file__).resolve().parent
RUN_ID = "cifar_resnet_tiny-s0"
STEPS_PER_EPOCH = 64 // 16  # num_train / batch_size of TINY_SUITE


def tiny(tracking: dict | None, **recipe) -> dict:
    data = yaml.safe_load(TINY_SUITE)
    data["recipe"].update(recipe)
    if tracking is not None:
        data["tracking"] = tracking
    return data


def train(data: dict, out: Path) -> dict:
    suite = parse_suite(data, "tiny.yaml")
    return run_suite(suite, plan_suite(suite, "tiny.yaml", None), out, device="cpu",
                     progress=False, echo=lambda *_: None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def only_run(client: MlflowClient, experiment: str = "tiny"):
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return runs[0]


def epochs_of(client: MlflowClient, run, key: str = "train_loss") -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run.info.run_id, key))


def test_tracking_section_validated_and_left_out_by_default():
    assert "tracking" not in parse_suite(tiny(None)).model_dump(mode="json")  # fingerprints keep
    with pytest.raises(SuiteError, match=r"tiny.yaml: tracking.mlflow_experiment: needs"):
        parse_suite(tiny({"mlflow_experiment": "x"}), "tiny.yaml")
    with pytest.raises(SuiteError, match=r"tiny.yaml: tracking.mlflow: 'ftp://h' is not"):
        parse_suite(tiny({"mlflow": "ftp://h"}), "tiny.yaml")
    with pytest.raises(SuiteError, match=r"tracking.tensorbord: unknown key"):
        parse_suite(tiny({"tensorbord": True}), "tiny.yaml")


def test_tensorboard_and_mlflow_file_store(tmp_path):
    store = f"file:{tmp_path / 'mlruns'}"
    out = tmp_path / "out"
    assert train(tiny({"tensorboard": True, "mlflow": store}), out)["done"] == 1
    run_dir = out / "runs" / RUN_ID
    history = read_json(run_dir / "metrics.json")
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("epoch/train_loss")] == [1, 2]
    assert [e.value for e in acc.Scalars("epoch/train_loss")] == pytest.approx(
        [h["train_loss"] for h in history])
    assert [e.step for e in acc.Scalars("epoch/test_top1")] == [2]  # tested after the last only
    assert [e.step for e in acc.Scalars("step/loss")] == list(range(2 * STEPS_PER_EPOCH))
    # lr of the last step of a cosine schedule over 8 steps: 0.05 * (1 + cos(pi * 7/8)) / 2
    assert acc.Scalars("step/lr")[-1].value == pytest.approx(0.05 * (1 + (-0.9238795)) / 2, rel=1e-5)
    text = acc.Tensors("model/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "GMACs" in text and "M params" in text

    client = MlflowClient(tracking_uri=store)
    run = only_run(client)
    assert run.info.run_name == RUN_ID and run.info.status == "FINISHED"
    assert run.data.params["recipe.lr"] == "0.05" and run.data.params["args.width"] == "4"
    assert run.data.params["recipe.momentum"] == "0.9"  # a default, left out of config.json
    assert epochs_of(client, run) == [1, 2]
    assert run.data.metrics["final_top1"] == read_json(run_dir / "result.json")["top1"]
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"result.json", "config.json"}

    # a replay adds nothing: the same run, every epoch once
    tracking, name = tracking_of(out)
    assert sync_tracking(out, tracking, name, echo=lambda *_: None)["synced"] == 1
    assert epochs_of(client, only_run(client)) == [1, 2]
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("epoch/train_loss")] == [1, 2]


def test_sync_tracking_replays_runs_made_without_tracking(tmp_path):
    out, store = tmp_path / "out", f"sqlite:///{tmp_path / 'm.db'}"
    train(tiny(None), out)
    proc = python_process("-m", "mpbench", "sync-tracking", out, "--mlflow", store)
    assert proc.wait(timeout=120) == 0, proc.stdout.read()
    client = MlflowClient(tracking_uri=store)
    run = only_run(client)
    assert epochs_of(client, run) == [1, 2] and run.info.status == "FINISHED"
    proc = python_process("-m", "mpbench", "sync-tracking", out, "--mlflow", store)  # idempotent
    assert proc.wait(timeout=120) == 0
    assert epochs_of(client, only_run(client)) == [1, 2]


@pytest.fixture
def mlflow_server(tmp_path):
    """A real ``mlflow server`` on 127.0.0.1 (SQLite backend, proxied artifacts)."""
    port = free_port()
    exe = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or shutil.which("mlflow")
    proc = subprocess.Popen(
        [exe, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2)
                break
            except OSError:
                assert proc.poll() is None, "mlflow server exited"
                assert time.monotonic() < deadline, "mlflow server not ready in 120 s"
                time.sleep(0.5)
        yield uri
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()


def test_kill_and_resume_on_a_real_mlflow_server(tmp_path, mlflow_server):
    """SIGKILL right after epoch 2's metrics.json (before the trackers saw epoch 2); the resume
    logs epoch 2 from metrics.json and trains epoch 3: one MLflow run, every epoch once."""
    suite = tmp_path / "tiny.yaml"
    suite.write_text(yaml.safe_dump(tiny({"mlflow": mlflow_server, "tensorboard": True},
                                         epochs=3)))
    out = tmp_path / "out"
    killed = python_process(HERE / "fault_inject.py", "metrics.json", 2, "renamed", "run", suite,
                            "--out", out, "--no-progress", "--device", "cpu")
    assert killed.wait(timeout=180) == -9, killed.stdout.read()
    client = MlflowClient(tracking_uri=mlflow_server)
    assert epochs_of(client, only_run(client)) == [1]
    resumed = python_process("-m", "mpbench", "run", suite, "--out", out, "--no-progress",
                             "--device", "cpu")
    assert resumed.wait(timeout=180) == 0, resumed.stdout.read()
    run = only_run(client)
    assert epochs_of(client, run) == [1, 2, 3] and epochs_of(client, run, "epoch") == [1, 2, 3]
    assert run.info.status == "FINISHED" and run.data.tags["mpbench.resumes"] == "1"
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"result.json", "config.json"}
    acc = EventAccumulator(str(out / "runs" / RUN_ID / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("epoch/train_loss")] == [1, 2, 3]
    steps = [e.step for e in acc.Scalars("step/loss")]
    # per-step points are not stored: those the killed process had not flushed (epoch 2's) are
    # gone; every step the resumed process trained is there, and none twice
    assert len(steps) == len(set(steps))
    assert set(range(2 * STEPS_PER_EPOCH, 3 * STEPS_PER_EPOCH)) <= set(steps)


def test_unreachable_tracker_neither_fails_nor_stalls_training(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    t0 = time.monotonic()
    assert train(tiny(None), tmp_path / "plain")["done"] == 1
    plain_s = time.monotonic() - t0
    t0 = time.monotonic()
    assert train(tiny({"mlflow": dead}), tmp_path / "dead")["done"] == 1
    dead_s = time.monotonic() - t0
    log = (tmp_path / "dead" / "runs" / RUN_ID / "log.txt").read_text()
    warnings = [line for line in log.splitlines() if "tracking:" in line]
    assert len(warnings) == 1 and "mlflow" in warnings[0] and "sync-tracking" in warnings[0]
    assert (tmp_path / "dead" / "runs" / RUN_ID / "result.json").exists()
    print(f"plain {plain_s:.1f}s, dead tracker {dead_s:.1f}s")
    assert dead_s - plain_s < 20  # a first mlflow import costs seconds; no 120 s timeouts
