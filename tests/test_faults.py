"""Fault tests of the suite runner: a process killed at each kind of write, a full disk,
damaged checkpoints, divergence and out-of-memory. After a fault, rerunning the same command
must finish every run exactly once, with the metrics of an uninterrupted run (CPU,
deterministic) and a ``results.csv`` with one row per run."""
import json
import subprocess
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import torch

from mpbench.cli import main
from mpbench.storage import atomic_write_bytes
from mpbench.training.trainer import load_checkpoint

from conftest import child_pids, python_process

HERE = Path(__file__).parent
RUN_IDS = ["cifar_resnet_tiny-s0", "cifar_resnet_tiny-s1"]
SUITE = """\
name: faults
dataset: {name: synthetic, num_classes: 4, num_train: 256, num_test: 64, image_size: 16, val_split: 32}
recipe: {epochs: 3, batch_size: 32, eval_batch_size: 64, lr: 0.05, schedule: cosine, deterministic: true}
seeds: [0, 1]
models:
  - {name: cifar_resnet_tiny, args: {width: 4}}
"""


def _mpbench(args, fault=None) -> subprocess.CompletedProcess:
    """The CLI in a fresh process, with ``fault`` = (file, n, mode) injected if given."""
    prefix = [HERE / "fault_inject.py", *fault] if fault else ["-m", "mpbench"]
    proc = python_process(*prefix, *args, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _run_args(suite: Path, out: Path) -> list[str]:
    return ["run", str(suite), "--out", str(out), "--no-progress"]


def _start_held_in_batch(marker: Path, batch: int, suite: Path, out: Path) -> subprocess.Popen:
    """``mpbench run`` in a fresh process, returned once it is held inside training batch
    ``batch`` (tests/signal_inject.py writes ``marker`` there and waits for ``marker.sent``)."""
    import time

    proc = python_process(HERE / "signal_inject.py", marker, batch, *_run_args(suite, out),
                          stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    return proc


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Per-epoch metrics of the uninterrupted suite."""
    root = tmp_path_factory.mktemp("reference")
    (root / "s.yaml").write_text(SUITE)
    done = _mpbench(_run_args(root / "s.yaml", root / "o"))
    assert done.returncode == 0, done.stdout + done.stderr
    return {rid: _history(root / "o" / "runs" / rid) for rid in RUN_IDS}


def _history(run_dir: Path) -> list[tuple]:
    return [(h["epoch"], h["train_loss"], h["val_loss"], h["val_top1"], h["test_top1"])
            for h in json.loads((run_dir / "metrics.json").read_text())]


def _assert_complete_and_equal(out: Path, reference) -> None:
    results = pd.read_csv(out / "results.csv")
    assert sorted(results.run_id) == RUN_IDS  # one row per run: none missing, none twice
    assert (results.status == "done").all() and (results.epochs == 3).all()
    for rid in RUN_IDS:
        run_dir = out / "runs" / rid
        assert _history(run_dir) == reference[rid]
        result = json.loads((run_dir / "result.json").read_text())
        assert result["top1"] == reference[rid][-1][4]  # final test top-1
        log = (run_dir / "log.txt").read_text()
        assert log.count("epoch 1/3") == 1, log  # never started over
        assert log.count("finished: done") <= 1, log  # (a kill may fall between result and log)
        assert not (run_dir / "failure.json").exists()
    assert not list(out.rglob("*.tmp")), "temp files of the interrupted write were left behind"


# (file, which write of it, how it fails, epoch the rerun resumes after: None = no resume)
KILLS = [
    ("checkpoint.pt", 2, "torn", 1),       # epoch 2 of s0: half-written temp file
    ("checkpoint.pt", 2, "unrenamed", 1),  # .prev linked, the new one complete but not renamed
    ("checkpoint.pt", 3, "renamed", 3),    # epoch 3 saved, metrics and result not yet
    ("result.json", 1, "torn", 3),         # s0 trained, its result half-written
    ("result.json", 1, "renamed", None),   # s0 finished, results.csv not yet rebuilt
    ("results.csv", 1, "torn", None),
    ("results.csv", 2, "unrenamed", None),  # after s1 finished
]


@pytest.mark.parametrize("name,nth,mode,resume_epoch", KILLS,
                         ids=[f"{n}-{i}-{m}" for n, i, m, _ in KILLS])
def test_sigkill_while_writing_then_rerun(tmp_path, reference, name, nth, mode, resume_epoch):
    suite, out = tmp_path / "s.yaml", tmp_path / "o"
    suite.write_text(SUITE)
    killed = _mpbench(_run_args(suite, out), fault=(name, nth, mode))
    assert killed.returncode == -9, killed.stdout + killed.stderr  # the fault did fire
    if name != "results.csv":
        assert not (out / "runs" / RUN_IDS[1] / "result.json").exists()

    rerun = _mpbench(_run_args(suite, out))
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    log = (out / "runs" / RUN_IDS[0] / "log.txt").read_text()
    if resume_epoch is None:
        assert "resuming" not in log
        if name == "result.json" or nth == 2:  # s0's result had landed: not trained again
            assert f"{RUN_IDS[0]}: finished earlier, skipped" in rerun.stdout
    else:
        assert f"resuming after epoch {resume_epoch}" in log
    if mode in ("torn", "unrenamed") and name != "results.csv":
        assert "removed the temp files of an interrupted write" in log
    _assert_complete_and_equal(out, reference)


def test_disk_full_stops_with_one_line_and_resumes(tmp_path, reference):
    suite, out = tmp_path / "s.yaml", tmp_path / "o"
    suite.write_text(SUITE)
    full = _mpbench(_run_args(suite, out), fault=("checkpoint.pt", 2, "enospc"))
    assert full.returncode == 1, full.stdout + full.stderr
    err = full.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    ckpt = out / "runs" / RUN_IDS[0] / "checkpoint.pt"
    assert str(ckpt) in err and "No space left on device" in err and "rerun" in err
    state = load_checkpoint(ckpt, log=pytest.fail)  # the last complete one is intact
    assert state["epoch"] == 1
    assert not list(out.rglob("*.tmp")) and not (out / "runs" / RUN_IDS[1]).exists()
    assert not (ckpt.parent / "failure.json").exists()  # not a failure of the run itself

    rerun = _mpbench(_run_args(suite, out))
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    _assert_complete_and_equal(out, reference)


def _two_epoch_checkpoint(tmp_path):
    from mpbench.config import Recipe
    from mpbench.data import synthetic
    from mpbench.registry import create_model
    from mpbench.training.trainer import train

    data = synthetic(num_classes=4, num_train=64, num_test=32, image_size=16)
    train(create_model("cifar_resnet_tiny", width=4, num_classes=4), data,
          Recipe(epochs=2, batch_size=32, lr=0.05), seed=0, checkpoint=tmp_path / "ck.pt",
          progress=False)
    return tmp_path / "ck.pt"


def test_flipped_byte_in_checkpoint_is_detected(tmp_path):
    """torch.load itself accepts a changed weight byte; the zip CRC check must not."""
    ckpt = _two_epoch_checkpoint(tmp_path)
    with zipfile.ZipFile(ckpt) as archive:  # the largest tensor's bytes
        member = max(archive.infolist(), key=lambda i: i.file_size)
    raw = bytearray(ckpt.read_bytes())
    start = member.header_offset + 30 + len(member.filename.encode()) + len(member.extra)
    raw[start + member.file_size // 2] ^= 0x01
    ckpt.write_bytes(bytes(raw))
    notes = []
    state = load_checkpoint(ckpt, log=notes.append)
    assert state["epoch"] == 1  # fell back to checkpoint.pt.prev
    assert "unreadable" in notes[0] and "checksum" in notes[0] and "ck.pt.prev" in notes[1]


def test_missing_checkpoint_falls_back_to_previous_and_says_so(tmp_path):
    ckpt = _two_epoch_checkpoint(tmp_path)
    ckpt.unlink()
    notes = []
    assert load_checkpoint(ckpt, log=notes.append)["epoch"] == 1
    assert "missing" in notes[0]
    ckpt.with_name("ck.pt.prev").write_bytes(b"PK\x03\x04")
    assert load_checkpoint(ckpt, log=notes.append) is None and "starting over" in notes[-1]


def test_keep_previous_never_leaves_the_name_missing(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write_bytes(path, b"one", keep_previous=True)
    atomic_write_bytes(path, b"two", keep_previous=True)
    assert path.read_bytes() == b"two" and (tmp_path / "f.bin.prev").read_bytes() == b"one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin", "f.bin.prev"]


def test_divergence_is_retried_then_recorded_and_reported(tmp_path, capsys):
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE.replace("lr: 0.05", "lr: 1.0e+30, max_retries: 1")
                     .replace("seeds: [0, 1]", "seeds: [0]"))
    out = tmp_path / "o"
    assert main(_run_args(suite, out)) == 0
    log = (out / "runs" / RUN_IDS[0] / "log.txt").read_text()
    assert "diverged" in log and "retry 1/1" in log and log.count("diverged:") == 2
    result = json.loads((out / "runs" / RUN_IDS[0] / "result.json").read_text())
    assert result["status"] == "diverged" and "loss became" in result["error"]
    capsys.readouterr()
    assert main(_run_args(suite, out)) == 0  # final: not trained again
    assert "finished earlier, skipped" in capsys.readouterr().out
    assert main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
    assert "1 diverged" in (tmp_path / "rep" / "report.md").read_text()


def test_out_of_memory_is_recorded_the_suite_goes_on_and_the_next_run_retries(
        tmp_path, monkeypatch, capsys):
    import mpbench.training.trainer

    real_train = mpbench.training.trainer.train

    def train_that_runs_out(model, data, recipe, *, seed, **kw):
        if seed == 0:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\n"
                                              "(details)")
        return real_train(model, data, recipe, seed=seed, **kw)

    monkeypatch.setattr(mpbench.training.trainer, "train", train_that_runs_out)
    suite, out = tmp_path / "s.yaml", tmp_path / "o"
    suite.write_text(SUITE)
    assert main(_run_args(suite, out)) == 0
    results = pd.read_csv(out / "results.csv").set_index("run_id")
    assert results.status.to_dict() == {RUN_IDS[0]: "oom", RUN_IDS[1]: "done"}
    assert results.error[RUN_IDS[0]] == "CUDA out of memory. Tried to allocate 2.00 GiB"
    assert main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
    assert "1 done, 1 oom" in (tmp_path / "rep" / "report.md").read_text()
    assert main(["status", str(out)]) == 0
    assert "oom" in capsys.readouterr().out

    monkeypatch.setattr(mpbench.training.trainer, "train", real_train)  # more memory next time
    assert main(_run_args(suite, out)) == 0
    results = pd.read_csv(out / "results.csv")
    assert sorted(results.run_id) == RUN_IDS and (results.status == "done").all()
    assert not (out / "runs" / RUN_IDS[0] / "failure.json").exists()


# mid-epoch checkpoints (recipe.checkpoint_every_min; here forced every 3 batches of an epoch
# of 7): (which checkpoint write is killed, the resume it leads to). The 1st write is after
# epoch 1's 3rd batch; the 5th after epoch 2's 6th (the 3rd is the end of epoch 1).
MID_EPOCH_KILLS = [(1, "resuming after epoch 0 and 3 batches of epoch 1"),
                   (5, "resuming after epoch 1 and 6 batches of epoch 2")]


@pytest.mark.parametrize("nth,resumed", MID_EPOCH_KILLS, ids=["epoch1-batch3", "epoch2-batch6"])
def test_sigkill_after_mid_epoch_checkpoint_resumes_at_the_next_batch(
        tmp_path, reference, monkeypatch, nth, resumed):
    monkeypatch.setenv("MPBENCH_CHECKPOINT_EVERY_BATCHES", "3")
    suite, out = tmp_path / "s.yaml", tmp_path / "o"
    suite.write_text(SUITE)
    killed = _mpbench(_run_args(suite, out), fault=("checkpoint.pt", nth, "renamed"))
    assert killed.returncode == -9, killed.stdout + killed.stderr
    state = load_checkpoint(out / "runs" / RUN_IDS[0] / "checkpoint.pt", log=pytest.fail)
    assert state["batch"] in (3, 6) and state["partial"]["seen"] == 32 * state["batch"]

    rerun = _mpbench(_run_args(suite, out))
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert resumed in (out / "runs" / RUN_IDS[0] / "log.txt").read_text()
    _assert_complete_and_equal(out, reference)  # bit-equal per-epoch metrics


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGUSR1"])
def test_stop_signal_checkpoints_mid_epoch_exits_and_resumes(tmp_path, reference, signame):
    import os
    import signal

    suite, out, marker = tmp_path / "s.yaml", tmp_path / "o", tmp_path / "in-batch"
    suite.write_text(SUITE)
    # held inside the 12th training batch (in epoch 2) of the first run until the signal is sent
    proc = _start_held_in_batch(marker, 12, suite, out)
    sig = getattr(signal, signame)
    os.kill(proc.pid, sig)
    (tmp_path / "in-batch.sent").write_text("")
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, stdout + stderr  # a clean exit, not a kill
    assert "Traceback" not in stderr
    run0 = out / "runs" / RUN_IDS[0]
    state = load_checkpoint(run0 / "checkpoint.pt", log=pytest.fail)
    import yaml
    cfg = yaml.safe_load(SUITE)
    steps = ((cfg["dataset"]["num_train"] - cfg["dataset"].get("val_split", 0))
             // cfg["recipe"]["batch_size"])  # batches per epoch
    assert (state["epoch"], state["batch"]) == (1, 12 - steps)  # the 12th batch was the last
    assert state["partial"]["seen"] == 32 * state["batch"]
    assert f"{signame} after {state['batch']}/" in stderr and "checkpoint saved" in stderr
    assert not (run0 / "result.json").exists() and not (out / "runs" / RUN_IDS[1]).exists()
    assert f"interrupted by {signame}" in (run0 / "log.txt").read_text()

    rerun = _mpbench(_run_args(suite, out))
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"resuming after epoch 1 and {state['batch']} batches of epoch 2" in \
        (run0 / "log.txt").read_text()
    _assert_complete_and_equal(out, reference)


# --------------------------------------------------------------------------- worker processes

def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


STREAM_SUITE = """\
name: stream-kill
dataset: {{name: imagefolder, root: {root}, loader: stream, crop_size: 16, num_workers: 2}}
recipe: {{epochs: 2, batch_size: 8, eval_batch_size: 16, lr: 0.05, schedule: cosine, deterministic: true, crop_scale_min: 0.3}}
seeds: [0]
models:
  - {{name: cifar_resnet_tiny, match: false, args: {{width: 4}}}}
"""


def test_sigkilled_trainer_leaves_no_lock_in_its_loader_workers(tmp_path, monkeypatch):
    """SIGKILL of ``mpbench run`` streaming an image folder with 2 real DataLoader worker
    processes, mid-epoch: the workers outlive it for a while, and an immediate rerun must
    still train (not "being trained by another process") and resume from the mid-epoch
    checkpoint to the metrics of an uninterrupted run."""
    import os
    import signal

    from test_streaming import write_folder

    root = write_folder(tmp_path / "imgs")  # 4 classes x 8 train images: 4 batches of 8
    suite = tmp_path / "s.yaml"
    suite.write_text(STREAM_SUITE.format(root=root))
    monkeypatch.setenv("MPBENCH_CHECKPOINT_EVERY_BATCHES", "1")
    ref = _mpbench(_run_args(suite, tmp_path / "ref"))
    assert ref.returncode == 0, ref.stdout + ref.stderr
    (ref_dir,) = (tmp_path / "ref" / "runs").iterdir()

    out, marker = tmp_path / "o", tmp_path / "in-batch"
    # held inside the 6th training batch (epoch 2, batch 2) until the kill
    proc = _start_held_in_batch(marker, 6, suite, out)
    workers = child_pids(proc.pid)
    assert len(workers) >= 2, workers  # the train loader's worker processes
    # Orphaned workers notice their parent's death within seconds (sooner than a slow
    # rerun starts); stopped, they outlive it for as long as the rerun takes, with whatever
    # they inherited still open: the worst case, without timing luck.
    for w in workers:
        os.kill(w, signal.SIGSTOP)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -9  # (not communicate: the workers hold its pipes open)
    try:
        assert all(_alive(w) for w in workers)
        rerun = _mpbench(_run_args(suite, out))
        assert all(_alive(w) for w in workers)
    finally:
        for w in workers:  # orphans of the killed trainer: ours to end
            if _alive(w):
                os.kill(w, signal.SIGKILL)
        proc.communicate(timeout=60)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "being trained by another process" not in rerun.stdout, rerun.stdout
    (run_dir,) = (out / "runs").iterdir()
    assert "resuming after epoch 1 and 1 batches of epoch 2" in (run_dir / "log.txt").read_text()
    keys = ("epoch", "lr", "train_loss", "train_acc", "test_loss", "test_top1", "skipped_images")
    got, want = (json.loads((d / "metrics.json").read_text()) for d in (run_dir, ref_dir))
    assert [[h[k] for k in keys] for h in got] == [[h[k] for k in keys] for h in want]
    assert json.loads((run_dir / "result.json").read_text())["top1"] == want[-1]["test_top1"]


HOLD_AND_DIE = """\
import multiprocessing, os, signal, sys, time
from pathlib import Path
from mpbench.suite.runner import claim
with claim(Path(sys.argv[1])) as mine:
    assert mine
    child = multiprocessing.get_context(sys.argv[2]).Process(target=time.sleep, args=(60,))
    child.start()
    print(child.pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_a_claim_dies_with_its_holder_not_with_its_children(tmp_path, method):
    """Whatever the start method, a child started while a run is claimed does not keep the
    claim once its parent is SIGKILLed."""
    import os
    import signal

    from mpbench.suite.runner import claim, is_claimed

    run_dir = tmp_path / "run"
    holder = python_process("-c", HOLD_AND_DIE, run_dir, method)
    child = int(holder.stdout.readline())
    try:
        assert holder.wait(timeout=60) == -9
        assert _alive(child)
        assert not is_claimed(run_dir)
        with claim(run_dir) as mine:
            assert mine
    finally:
        os.kill(child, signal.SIGKILL)
        holder.communicate(timeout=60)
