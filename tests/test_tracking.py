"""Suite ``tracking:``: TensorBoard and MLflow, read back with the libraries' own readers.

Everything runs against the real libraries: event files through tensorboard's
EventAccumulator, MLflow through MlflowClient on a file store, a SQLite store and a real ``mlflow server``
(127.0.0.1, a free port, its store in tmp_path).
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
    # equal batches: an epoch's train_loss (the trainer's sum of loss x batch / images) is the
    # mean of its steps' losses, so the per-step points are the losses the steps trained on
    losses = [e.value for e in acc.Scalars("step/loss")]
    for epoch, h in enumerate(history):
        per_step = losses[epoch * STEPS_PER_EPOCH:(epoch + 1) * STEPS_PER_EPOCH]
        assert sum(per_step) / STEPS_PER_EPOCH == pytest.approx(h["train_loss"], rel=1e-6)
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

    # the hooks change nothing of what is trained: the same suite untracked, bit for bit
    def untimed(rows):  # wall-clock fields differ between any two runs
        return [{k: v for k, v in r.items() if not k.endswith(("_s", "_share"))} for r in rows]

    train(tiny(None), tmp_path / "plain")
    plain = read_json(tmp_path / "plain" / "runs" / RUN_ID / "metrics.json")
    assert untimed(plain) == untimed(history) and "train_loss" in untimed(plain)[0]

    # a replay adds nothing: the same run, every epoch once
    tracking, name = tracking_of(out)
    assert sync_tracking(out, tracking, name, echo=lambda *_: None)["synced"] == 1
    assert epochs_of(client, only_run(client)) == [1, 2]
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("epoch/train_loss")] == [1, 2]


def test_sync_tracking_replays_runs_made_without_tracking(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a database store keeps artifacts in ./mlruns of the cwd
    out, store = tmp_path / "out", f"sqlite:///{tmp_path / 'm.db'}"
    train(tiny(None), out)
    proc = python_process("-m", "mpbench", "sync-tracking", out, "--mlflow", store)
    assert proc.wait(timeout=120) == 0, proc.stdout.read()
    client = MlflowClient(tracking_uri=store)
    run = only_run(client)
    assert epochs_of(client, run) == [1, 2] and run.info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"result.json", "config.json"}
    assert list((tmp_path / "mlruns").rglob("result.json"))
    tracking, name = tracking_of(out, mlflow=store)  # a second replay adds nothing
    assert sync_tracking(out, tracking, name, echo=lambda *_: None)["synced"] == 1
    assert epochs_of(client, only_run(client)) == [1, 2]


@pytest.fixture
def mlflow_server(tmp_path):
    """A real ``mlflow server`` on 127.0.0.1 at a free port (file backend: ready in a third of
    the time a fresh SQLite backend's migrations take; proxied artifacts), killed after."""
    port = free_port()
    exe = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or shutil.which("mlflow")
    proc = subprocess.Popen(
        [exe, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"file:{tmp_path / 'server-store'}",
         "--artifacts-destination", str(tmp_path / "artifacts")],
        env={**os.environ, "MLFLOW_ALLOW_FILE_STORE": "true", "OMP_NUM_THREADS": "1"},
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


@pytest.fixture
def silent_server():
    """A port that accepts connections and never answers (a hung server, a black-holed
    proxy): each request waits for MLflow's HTTP timeout."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)  # the kernel completes handshakes; nobody ever reads
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


def test_unreachable_tracker_neither_fails_nor_stalls_training(tmp_path, silent_server):
    """A closed port (refused at once) and a silent one (each request times out): the run
    finishes, its log has one warning line, and the silent server costs seconds (MLflow's own
    defaults, 120 s timeout x 8 tries, would hold the run for many minutes)."""
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    t0 = time.monotonic()
    assert train(tiny(None), tmp_path / "plain")["done"] == 1
    took = {"plain": time.monotonic() - t0}
    for name, uri in (("closed", closed), ("silent", silent_server)):
        t0 = time.monotonic()
        assert train(tiny({"mlflow": uri}), tmp_path / name)["done"] == 1
        took[name] = time.monotonic() - t0
        run_dir = tmp_path / name / "runs" / RUN_ID
        warnings = [line for line in (run_dir / "log.txt").read_text().splitlines()
                    if "tracking:" in line]
        assert len(warnings) == 1 and "mlflow" in warnings[0] and "sync-tracking" in warnings[0]
        assert read_json(run_dir / "result.json")["status"] == "done"
    print(took)
    assert took["closed"] - took["plain"] < 15  # a first mlflow import costs seconds
    assert took["silent"] - took["plain"] < 30  # 2 tries x 5 s (TIMEOUTS), not minutes


def test_missing_tracker_package_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    """``import mlflow`` failing (sys.modules entry None, as an uninstalled package looks to
    importlib.util.find_spec): exit 2, one line naming the suite file and the field."""
    from mpbench.cli import main

    suite = tmp_path / "tiny.yaml"
    suite.write_text(yaml.safe_dump(tiny({"mlflow": f"file:{tmp_path / 'mlruns'}"})))
    monkeypatch.setitem(sys.modules, "mlflow", None)
    assert main(["run", str(suite), "--out", str(tmp_path / "out"), "--device", "cpu",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"{suite}: tracking.mlflow: needs the mlflow package" in err and "[tracking]" in err
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_tuned_final_run_logs_its_tuned_values_as_params(tmp_path):
    """A tuned suite's final run (plan.tune, as mpbench.suite.tuned hands it over) trains with
    the chosen lr: the params show that lr, not the suite's 0.05, and the tune values."""
    from dataclasses import replace

    store = f"file:{tmp_path / 'mlruns'}"
    suite = parse_suite(tiny({"mlflow": store}, epochs=1), "tiny.yaml")
    tune = {"values": {"lr": 0.2, "weight_decay": 0.001}, "trials": 3, "best_val_top1": 40.0,
            "cost_s": 1.5}
    plans = [replace(p, tune=tune) for p in plan_suite(suite, "tiny.yaml", None)]
    assert run_suite(suite, plans, tmp_path / "out", device="cpu", progress=False,
                     echo=lambda *_: None)["done"] == 1
    params = only_run(MlflowClient(tracking_uri=store)).data.params
    assert params["recipe.lr"] == "0.2" and params["recipe.weight_decay"] == "0.001"
    assert params["tune.values.lr"] == "0.2" and params["tune.trials"] == "3"
    assert params["seed"] == "0" and params["model"] == "cifar_resnet_tiny"


def test_divergence_retry_is_a_second_mlflow_run_tagged_as_retry(tmp_path):
    store = f"file:{tmp_path / 'mlruns'}"
    out = tmp_path / "out"
    assert train(tiny({"mlflow": store, "tensorboard": True}, lr=1.0e30, max_retries=1),
                 out)["diverged"] == 1
    client = MlflowClient(tracking_uri=store)
    exp = client.get_experiment_by_name("tiny")
    runs = {r.data.tags.get("mpbench.retry", "0"): r for r in client.search_runs([exp.experiment_id])}
    assert sorted(runs) == ["0", "1"]
    first, retry = runs["0"], runs["1"]
    assert first.info.run_name == retry.info.run_name == RUN_ID
    assert retry.data.tags["mpbench.retry_of"] == first.info.run_id
    assert first.info.status == retry.info.status == "FAILED"
    assert retry.data.tags["mpbench.status"] == "diverged"
    assert "result.json" in {a.path for a in client.list_artifacts(retry.info.run_id)}
    # the first attempt's event files were set aside for the retry's
    assert list((out / "runs" / RUN_ID / "tensorboard" / "previous-1").glob("events.out.*"))


def test_restart_from_scratch_is_a_new_mlflow_run(tmp_path):
    """Checkpoints and result lost (only metrics.json's run dir is left): the run trains again
    from epoch 1, so its epochs cannot join the old MLflow run's; the old one ends FAILED and
    a new one, tagged restart_of, gets every epoch once."""
    store = f"file:{tmp_path / 'mlruns'}"
    out = tmp_path / "out"
    data = tiny({"mlflow": store}, epochs=1)
    train(data, out)
    run_dir = out / "runs" / RUN_ID
    for name in ("checkpoint.pt", "checkpoint.pt.prev", "result.json"):
        (run_dir / name).unlink(missing_ok=True)
    assert train(data, out)["done"] == 1
    client = MlflowClient(tracking_uri=store)
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
    assert len(runs) == 2
    old, new = runs
    assert old.info.status == "FAILED" and old.data.tags["mpbench.status"] == "restarted"
    assert new.data.tags["mpbench.restart_of"] == old.info.run_id
    assert new.info.status == "FINISHED" and epochs_of(client, new) == [1]


def test_torchrun_only_rank_0_tracks(tmp_path, monkeypatch):
    """Two gloo processes, global batch 16: one event file and one MLflow run, each step and
    epoch once (a second writer would double them or add a second file/run)."""
    store = f"file:{tmp_path / 'mlruns'}"
    suite = tmp_path / "tiny.yaml"
    suite.write_text(yaml.safe_dump(tiny({"mlflow": store, "tensorboard": True})))
    out = tmp_path / "out"
    proc = python_process("-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", free_port(), "-m", "mpbench", "run", suite,
                          "--out", out, "--no-progress", "--device", "cpu")
    assert proc.wait(timeout=300) == 0, proc.stdout.read()
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # for this process's reader
    logdir = out / "runs" / RUN_ID / "tensorboard"
    assert len(list(logdir.glob("events.out.tfevents.*"))) == 1
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("step/loss")] == list(range(2 * STEPS_PER_EPOCH))
    assert [e.step for e in acc.Scalars("epoch/train_loss")] == [1, 2]
    client = MlflowClient(tracking_uri=store)
    run = only_run(client)
    assert epochs_of(client, run) == [1, 2] and run.info.status == "FINISHED"
    assert run.data.params["recipe.batch_size"] == "16"


def test_sigterm_mid_epoch_then_resume_logs_every_step_once(tmp_path, monkeypatch):
    """SIGTERM inside epoch 1 (tests/signal_inject.py holds the process in a loss call): the
    trainer checkpoints at the next batch and stops; the MLflow run is KILLED and the steps
    trained so far are flushed. The resume continues at that batch: TensorBoard has steps
    0..7 once each, MLflow one FINISHED run with epochs 1 and 2."""
    import signal

    store = f"file:{tmp_path / 'mlruns'}"
    suite = tmp_path / "tiny.yaml"
    suite.write_text(yaml.safe_dump(tiny({"mlflow": store, "tensorboard": True})))
    out, marker = tmp_path / "out", tmp_path / "marker"
    args = ["run", suite, "--out", out, "--no-progress", "--device", "cpu"]
    # loss_fn calls: the trainer's, then the tracker's, per step; call 6 is step 2's (tracker)
    proc = python_process(HERE / "signal_inject.py", marker, 6, *args)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    (tmp_path / "marker.sent").write_text("")
    proc.wait(timeout=120)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # for this process's reader
    client = MlflowClient(tracking_uri=store)
    run = only_run(client)
    assert run.info.status == "KILLED" and epochs_of(client, run) == []
    resumed = python_process("-m", "mpbench", *args)
    assert resumed.wait(timeout=180) == 0, resumed.stdout.read()
    run = only_run(client)
    assert run.info.status == "FINISHED" and epochs_of(client, run) == [1, 2]
    acc = EventAccumulator(str(out / "runs" / RUN_ID / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("step/loss")] == list(range(2 * STEPS_PER_EPOCH))
    assert "resuming after epoch 0 and 3 batches" in (out / "runs" / RUN_ID / "log.txt").read_text()
