"""Several ``mpbench run`` workers on one tuning study, on each kind of storage, and a worker
killed in the middle of a trial: no trial lost, none trained twice, the same trials as one
worker draws, and the taken-over trial's curve equal to an uninterrupted one.

The storages are real: SQLite, Optuna's journal file, and a PostgreSQL server started for the
test (tests/postgres_server.py; it fails rather than skips in CI, where .ci/run installs it).
"""
import json
import os
import re
import subprocess
import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml

from postgres_server import postgres_server

HERE = Path(__file__).parent
TRIALS, EPOCHS = 4, 3
SUITE = {"name": "w",
         "dataset": {"name": "synthetic", "num_classes": 4, "num_train": 160, "num_test": 32,
                     "image_size": 16, "val_split": 32},
         "recipe": {"epochs": EPOCHS, "batch_size": 16, "eval_batch_size": 32, "lr": 0.05,
                    "schedule": "cosine", "deterministic": True},
         "models": [{"name": "cifar_resnet_tiny", "args": {"width": 4}}],
         "seeds": [0],
         "tune": {"trials": TRIALS, "epochs": EPOCHS, "sampler": "random", "seed": 5,
                  "space": {"lr": {"low": 0.01, "high": 0.2, "log": True},
                            "weight_decay": {"low": 1.0e-5, "high": 1.0e-3, "log": True}}}}
STUDY = "cifar_resnet_tiny"


@contextmanager
def storage(kind: str, tmp_path: Path):
    """The ``tune.storage`` value of each kind (None: the default SQLite file in --out)."""
    if kind == "postgres":
        with postgres_server() as url:
            yield url
    else:
        with nullcontext():
            yield {"sqlite": None, "journal": f"journal:{tmp_path / 'shared' / 'journal.log'}"}[kind]


def write_suite(tmp_path: Path, url: str | None) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({**SUITE, "tune": {**SUITE["tune"], "storage": url}}))
    return path


def worker(suite: Path, out: Path, fault: tuple = ()) -> subprocess.Popen:
    """One ``mpbench run`` process (optionally through tests/fault_inject.py)."""
    prefix = [str(HERE / "fault_inject.py"), *fault] if fault else ["-m", "mpbench"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE)}
    return subprocess.Popen([sys.executable, *prefix, "run", str(suite), "--out", str(out),
                             "--no-progress", "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def finish(*procs: subprocess.Popen) -> list[str]:
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, o in zip(procs, outs):
        assert p.returncode == 0, o
    return outs


def expected_params() -> list[dict]:
    """What trial n must draw, by Optuna's own RandomSampler seeded as docs/tuning.md says
    (tune.seed * 100003 + n), in a study of its own: whichever worker asks trial n."""
    dists = {"lr": optuna.distributions.FloatDistribution(0.01, 0.2, log=True),
             "weight_decay": optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True)}
    out = []
    for n in range(TRIALS):
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=5 * 100_003 + n))
        out.append(study.ask(dists).params)
    return out


def check_study(out: Path) -> dict:
    """Every trial finished exactly once, with every epoch once; the final run trained once."""
    study = json.loads((out / "tune" / STUDY / "study.json").read_text())
    assert [t["number"] for t in study["trials"]] == list(range(TRIALS))
    assert [t["state"] for t in study["trials"]] == ["complete"] * TRIALS
    for t, want in zip(study["trials"], expected_params()):
        assert t["params"] == pytest.approx(want)
        trial_dir = out / "tune" / STUDY / f"trial-{t['number']}"
        epochs = [m["epoch"] for m in json.loads((trial_dir / "metrics.json").read_text())]
        assert epochs == list(range(1, EPOCHS + 1))
        log = (trial_dir / "log.txt").read_text()
        assert len(re.findall(r" complete, val top1 ", log)) == 1, log
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 1 and json.loads(results.tuned[0]).keys() == {"lr", "weight_decay"}
    assert results.tune_trials[0] == TRIALS
    return study


def trial_lines(outputs: list[str]) -> list[str]:
    return [m for o in outputs for m in re.findall(rf"{STUDY}: trial (\d+) \((new|taken over)\)", o)]


@pytest.mark.parametrize("kind", ["sqlite", "journal", "postgres"])
def test_two_workers_share_one_study(tmp_path, kind):
    with storage(kind, tmp_path) as url:
        suite, out = write_suite(tmp_path, url), tmp_path / "out"
        outputs = finish(worker(suite, out), worker(suite, out))
        check_study(out)
    taken = trial_lines(outputs)
    assert sorted(int(n) for n, _ in taken) == list(range(TRIALS))  # each trial by one worker
    assert all(how == "new" for _, how in taken)


@pytest.mark.parametrize("kind", ["sqlite", "journal", "postgres"])
def test_a_killed_workers_trial_is_taken_over_and_resumed(tmp_path, kind):
    """Worker A dies (SIGKILL) right after trial 0's second checkpoint; workers B and C then
    share the study: one of them takes trial 0 over and resumes it from that checkpoint, the
    trial's validation curve equal to the same trial trained without the kill."""
    with storage(kind, tmp_path) as url:
        suite, out = write_suite(tmp_path, url), tmp_path / "out"
        killed = worker(suite, out, fault=("checkpoint.pt", "2", "renamed"))
        killed.communicate(timeout=600)
        assert killed.returncode == -9
        trial0 = out / "tune" / STUDY / "trial-0"
        assert (trial0 / "checkpoint.pt").exists() and not (trial0 / "trial.json").exists()
        outputs = finish(worker(suite, out), worker(suite, out))
        study = check_study(out)
    taken = trial_lines(outputs)
    assert taken.count(("0", "taken over")) == 1 and len(taken) == TRIALS
    assert (trial0 / "log.txt").read_text().count("resuming after epoch") == 1

    (tmp_path / "ref").mkdir()
    finish(worker(write_suite(tmp_path / "ref", None), tmp_path / "ref" / "out"))
    ref = json.loads((tmp_path / "ref" / "out" / "tune" / STUDY / "study.json").read_text())
    assert study["trials"][0]["val_curve"] == ref["trials"][0]["val_curve"]


def test_slurm_tuning_workers_share_the_study(tmp_path, monkeypatch, capsys):
    """``--launcher slurm --tune-workers 2`` (submitit's local executor: real subprocess jobs)
    trains the same trials and final run as local workers."""
    pytest.importorskip("submitit", reason="submitit (the `slurm` extra): pip install -e '.[slurm]'")
    from mpbench.cli import main

    monkeypatch.setenv("MPBENCH_SUBMITIT_CLUSTER", "local")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONPATH", str(HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    suite, out = write_suite(tmp_path, None), tmp_path / "out"
    assert main(["run", str(suite), "--out", str(out), "--launcher", "slurm", "--time", "10",
                 "--gpus-per-run", "0", "--tune-workers", "2", "--wait"]) == 0
    text = capsys.readouterr().out
    assert "2 tuning workers submitted" in text and "trials 4" in text, text
    check_study(out)
    jobs = [json.loads(line) for line in (out / "slurm" / "jobs.jsonl").read_text().splitlines()]
    assert [j["tune_worker"] for j in jobs] == [0, 1]
