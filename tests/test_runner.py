"""The suite runner end to end: stable ids, skip finished runs, resume after SIGKILL."""
import json
import signal
import time

import pandas as pd

from mpbench.cli import main
from mpbench.config import load_suite
from mpbench.suite.plan import plan_suite
from mpbench.suite.runner import RESULT_COLUMNS, suite_status

from conftest import TINY_SUITE, python_process


def test_dry_run_lists_runs_and_writes_nothing(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(TINY_SUITE.replace("seeds: [0]", "seeds: [0, 1]"))
    assert main(["run", str(path), "--out", str(tmp_path / "o"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "cifar_resnet_tiny-s0" in out and "cifar_resnet_tiny-s1" in out
    assert not (tmp_path / "o").exists()


def test_run_ids_are_stable(tmp_path):
    (tmp_path / "s.yaml").write_text(TINY_SUITE)
    suite = load_suite(tmp_path / "s.yaml")
    assert [p.run_id for p in plan_suite(suite)] == [p.run_id for p in plan_suite(suite)]


def test_run_writes_layout_and_never_retrains(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(TINY_SUITE)
    out = tmp_path / "o"
    assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 0
    run_dir = out / "runs" / "cifar_resnet_tiny-s0"
    for name in ("config.json", "metrics.json", "checkpoint.pt", "result.json", "log.txt"):
        assert (run_dir / name).exists(), name
    results = pd.read_csv(out / "results.csv")
    assert list(results.columns[:len(RESULT_COLUMNS)]) == RESULT_COLUMNS
    assert len(results) == 1 and results.status[0] == "done" and results.epochs[0] == 2
    assert results.gmacs[0] > 0 and results.params[0] > 0
    first = json.loads((run_dir / "result.json").read_text())
    capsys.readouterr()
    assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 0
    assert "finished earlier, skipped" in capsys.readouterr().out
    assert json.loads((run_dir / "result.json").read_text()) == first
    assert suite_status(out)[0]["state"] == "done"


def test_changed_config_is_refused(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(TINY_SUITE)
    out = tmp_path / "o"
    assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 0
    path.write_text(TINY_SUITE.replace("lr: 0.05", "lr: 0.01"))
    assert main(["run", str(path), "--out", str(out)]) == 2
    assert "recipe" in capsys.readouterr().err


KILL_SUITE = """\
name: killme
dataset: {name: synthetic, num_classes: 4, num_train: 1536, num_test: 64, image_size: 16}
recipe: {epochs: 4, batch_size: 32, eval_batch_size: 64, lr: 0.05, schedule: cosine, deterministic: true}
seeds: [0]
models:
  - {name: cifar_resnet_tiny, args: {width: 8}}
"""


def _mpbench(*args, **kw):
    return python_process("-m", "mpbench", *args, **kw)


def test_sigkill_mid_epoch_then_rerun_resumes(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(KILL_SUITE)
    out = tmp_path / "o"
    metrics = out / "runs" / "cifar_resnet_tiny-s0" / "metrics.json"
    proc = _mpbench("run", str(path), "--out", str(out), "--no-progress")
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and json.loads(metrics.read_text())[-1]["epoch"] >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "run finished before it could be killed: make the suite longer"
    time.sleep(0.5)  # into epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (metrics.parent / "result.json").exists()

    rerun = _mpbench("run", str(path), "--out", str(out), "--no-progress")
    text = rerun.communicate(timeout=300)[0]
    assert rerun.returncode == 0, text
    log = (metrics.parent / "log.txt").read_text()
    assert "resuming after epoch" in log
    history = json.loads(metrics.read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]

    # the interrupted run ends where an uninterrupted one does (CPU, deterministic)
    ref = _mpbench("run", str(path), "--out", str(tmp_path / "ref"), "--no-progress")
    assert ref.wait(timeout=300) == 0
    ref_hist = json.loads((tmp_path / "ref" / "runs" / "cifar_resnet_tiny-s0" / "metrics.json").read_text())
    for a, b in zip(history, ref_hist):
        assert a["train_loss"] == b["train_loss"] and a["test_top1"] == b["test_top1"]

    again = _mpbench("run", str(path), "--out", str(out), "--no-progress")
    assert "finished earlier, skipped" in again.communicate(timeout=120)[0]
    assert len(pd.read_csv(out / "results.csv")) == 1
