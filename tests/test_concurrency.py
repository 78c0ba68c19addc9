"""Several `mpbench run` processes on one output directory share the work."""
import subprocess
import sys

import pandas as pd

from mpbench.suite.runner import claim, is_claimed

from conftest import python_process

SUITE = """\
name: shared
dataset: {name: synthetic, num_classes: 4, num_train: 128, num_test: 32, image_size: 16}
recipe: {epochs: 2, batch_size: 32, eval_batch_size: 32, lr: 0.05, schedule: cosine}
seeds: [0, 1, 2]
models:
  - {name: cifar_resnet_tiny, args: {width: 4}}
"""


def test_claim_is_exclusive_and_released(tmp_path):
    run_dir = tmp_path / "r"
    with claim(run_dir) as first:
        assert first and is_claimed(run_dir)
        with claim(run_dir) as second:  # another open file description: flock conflicts
            assert not second
    assert not is_claimed(run_dir)


def _hold(run_dir):
    """Another process that claims ``run_dir`` and keeps it until killed."""
    code = ("import sys; from mpbench.suite.runner import claim\n"
            f"c = claim(__import__('pathlib').Path({str(run_dir)!r})); c.__enter__(); "
            "print('held', flush=True); sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_lock_of_a_killed_holder_is_free(tmp_path):
    run_dir = tmp_path / "r"
    proc = _hold(run_dir)
    assert is_claimed(run_dir)
    proc.kill()
    proc.wait()
    assert not is_claimed(run_dir)


def test_two_workers_train_each_run_once(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(SUITE)
    out = tmp_path / "o"
    procs = [python_process("-m", "mpbench", "run", path, "--out", out, "--no-progress")
             for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    results = pd.read_csv(out / "results.csv")
    assert sorted(results.run_id) == [f"cifar_resnet_tiny-s{s}" for s in range(3)]
    assert (results.status == "done").all()
    # each run was trained by exactly one process: one "epoch 1/2" line per run in its log
    for s in range(3):
        log = (out / "runs" / f"cifar_resnet_tiny-s{s}" / "log.txt").read_text()
        assert log.count("epoch 1/2") == 1, log


def test_a_run_whose_worker_died_is_taken_over_at_the_end(tmp_path):
    from mpbench.config import load_suite
    from mpbench.suite.plan import plan_suite
    from mpbench.suite.runner import run_suite

    path, out = tmp_path / "s.yaml", tmp_path / "o"
    path.write_text(SUITE.replace("seeds: [0, 1, 2]", "seeds: [0, 1]"))
    suite = load_suite(path)
    holder = _hold(out / "runs" / "cifar_resnet_tiny-s0")  # another worker, training s0
    lines = []

    def echo(msg: str) -> None:
        lines.append(msg)
        if "will look again at the end" in msg:  # that worker dies while we train s1
            holder.kill()
            holder.wait()

    counts = run_suite(suite, plan_suite(suite), out, echo=echo, progress=False)
    assert counts["done"] == 2 and counts["busy"] == 0, lines
    assert any("taking it over" in line for line in lines)
    assert sorted(pd.read_csv(out / "results.csv").run_id) == ["cifar_resnet_tiny-s0",
                                                               "cifar_resnet_tiny-s1"]


def test_a_run_held_by_a_live_worker_stays_busy(tmp_path):
    from mpbench.config import load_suite
    from mpbench.suite.plan import plan_suite
    from mpbench.suite.runner import run_suite

    path, out = tmp_path / "s.yaml", tmp_path / "o"
    path.write_text(SUITE.replace("seeds: [0, 1, 2]", "seeds: [0]"))
    suite = load_suite(path)
    holder = _hold(out / "runs" / "cifar_resnet_tiny-s0")
    try:
        lines = []
        counts = run_suite(suite, plan_suite(suite), out, echo=lines.append, progress=False)
    finally:
        holder.kill()
        holder.wait()
    assert counts["busy"] == 1 and counts["done"] == 0
    assert "still being trained by another process" in lines[-1]
    assert not (out / "runs" / "cifar_resnet_tiny-s0" / "result.json").exists()
