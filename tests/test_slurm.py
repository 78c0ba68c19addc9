"""The SLURM path through submitit, run with submitit's local executor (real subprocess jobs).

``MPBENCH_SUBMITIT_CLUSTER=local`` makes ``--launcher slurm`` use ``AutoExecutor(cluster="local")``:
the same RunJob, checkpoint()/requeue protocol and results layout as on a cluster.
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pandas as pd
import pytest

# submitit is the optional `slurm` extra; the `test` extra installs it, so CI never skips this file
pytest.importorskip("submitit", reason="submitit (the `slurm` extra) is not installed: pip install -e '.[slurm]'")

from mpbench.cli import main
from mpbench.config import load_suite
from mpbench.suite.launch import RunJob, SlurmOptions, parse_mem_gb, parse_time_min, submit_suite
from mpbench.suite.plan import plan_suite
from mpbench.suite.runner import suite_status

from conftest import TINY_SUITE, child_pids

REPO = Path(__file__).resolve().parents[1]

# long enough per epoch that a job can be caught mid-run (a few seconds an epoch here)
SLOW_SUITE = """\
name: slow
dataset: {name: synthetic, num_classes: 4, num_train: 2048, num_test: 64, image_size: 16}
recipe: {epochs: 3, batch_size: 32, eval_batch_size: 64, lr: 0.05, schedule: cosine, deterministic: true}
seeds: [0]
models:
  - {name: cifar_resnet_tiny, args: {width: 8}}
"""


@pytest.fixture(autouse=True)
def _local_cluster(monkeypatch):
    monkeypatch.setenv("MPBENCH_SUBMITIT_CLUSTER", "local")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def test_time_and_memory_parsing():
    assert [parse_time_min(t) for t in ("90", "1:30:00", "2-00", "0-01:00:30")] == [90, 90, 2880, 61]
    assert [parse_mem_gb(m) for m in ("32G", "32GB", "512M", "1T", "8")] == [32, 32, 1, 1024, 8]


def test_cli_submits_one_job_per_pending_run_and_collects(tmp_path, capsys):
    suite = tmp_path / "s.yaml"
    suite.write_text(TINY_SUITE.replace("seeds: [0]", "seeds: [0, 1]"))
    out = tmp_path / "o"
    assert main(["run", str(suite), "--out", str(out), "--launcher", "slurm", "--time", "10",
                 "--gpus-per-run", "0", "--wait"]) == 0
    text = capsys.readouterr().out
    assert text.count("submitted as job") == 2 and "done 2" in text
    rows = pd.read_csv(out / "results.csv")
    assert sorted(rows.run_id) == ["cifar_resnet_tiny-s0", "cifar_resnet_tiny-s1"]
    assert set(rows.status) == {"done"} and set(rows.epochs) == {2}
    assert [r["state"] for r in suite_status(out)] == ["done", "done"]
    jobs = [json.loads(line) for line in (out / "slurm" / "jobs.jsonl").read_text().splitlines()]
    assert sorted(j["run_id"] for j in jobs) == sorted(rows.run_id)
    # same layout as a local run; a second submission has nothing to do
    assert sorted(p.name for p in (out / "runs" / "cifar_resnet_tiny-s0").iterdir()) == [
        ".lock", "checkpoint.pt", "checkpoint.pt.prev", "config.json", "log.txt",
        "metrics.json", "result.json"]
    assert main(["run", str(suite), "--out", str(out), "--launcher", "slurm"]) == 0
    assert "nothing to submit (2 finished" in capsys.readouterr().out


def _wait_for_epoch(run_dir: Path, epoch: int, job, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if len(json.loads((run_dir / "metrics.json").read_text())) >= epoch:
                return
        except (OSError, ValueError):
            pass
        assert not job.done(), job.stderr()
        time.sleep(0.2)
    raise AssertionError(f"no epoch {epoch} within {timeout}s")


def test_preempted_job_is_requeued_and_killed_job_resubmitted_both_resume(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(SLOW_SUITE)
    suite = load_suite(path)
    plans = plan_suite(suite, str(path))
    out = tmp_path / "o"
    run_dir = out / "runs" / plans[0].run_id
    options = SlurmOptions(time="10", gpus_per_run=0)

    # 1. preemption: SIGUSR2 -> RunJob.checkpoint() -> requeue -> resume from the checkpoint
    (job,) = submit_suite(suite, plans, out, options, source=str(path), echo=lambda m: None)
    _wait_for_epoch(run_dir, 1, job)
    assert suite_status(out)[0]["state"] == "running"
    # what SLURM (and submitit's local controller near its time limit) sends the job's task
    (task,) = child_pids(int(job.job_id))  # the local "job id" is the controller's pid
    os.kill(task, signal.SIGUSR2)
    res = job.result()  # the requeued job's result
    assert res["result"]["status"] == "done" and res["result"]["epochs"] == 3
    log = (run_dir / "log.txt").read_text()
    assert "resuming after epoch" in log, log
    assert "Caught signal SIGUSR2" in job.stderr(), job.stderr()  # submitit's handler ran

    # 2. a hard kill (node failure, scancel): the run stays resumable; resubmitting resumes it
    for name in ("result.json", "checkpoint.pt", "checkpoint.pt.prev", "metrics.json"):
        (run_dir / name).unlink()
    (run_dir / "log.txt").write_text("")
    (job,) = submit_suite(suite, plans, out, options, source=str(path), echo=lambda m: None)
    _wait_for_epoch(run_dir, 1, job)
    for pid in (*child_pids(int(job.job_id)), int(job.job_id)):  # task first, then controller
        os.kill(pid, signal.SIGKILL)
    deadline = time.time() + 30
    while suite_status(out)[0]["state"] == "running" and time.time() < deadline:
        time.sleep(0.2)
    assert suite_status(out)[0]["state"] == "partial"
    (job,) = submit_suite(suite, plans, out, options, source=str(path), echo=lambda m: None)
    assert job.result()["result"]["status"] == "done"
    log = (run_dir / "log.txt").read_text()
    assert log.count("resuming after epoch") == 1 and log.count("epoch 3/3") == 1, log
    rows = pd.read_csv(out / "results.csv")
    assert len(rows) == 1 and rows.status[0] == "done" and rows.epochs[0] == 3


def test_run_job_is_picklable_and_checkpoints_itself(tmp_path):
    import pickle

    path = tmp_path / "s.yaml"
    path.write_text(TINY_SUITE)
    suite = load_suite(path)
    job = RunJob(suite.model_dump(mode="json"), [p.as_dict() for p in plan_suite(suite)],
                 "cifar_resnet_tiny-s0", str(tmp_path / "o"))
    delayed = pickle.loads(pickle.dumps(job)).checkpoint()
    assert delayed.function.run_id == job.run_id and delayed.function.attempts == 1
