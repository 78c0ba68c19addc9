"""Run directories and the suite runner.

Layout of ``--out`` (default ``runs/<suite name>``)::

    suite.json            the validated suite, as run
    plan.json             every planned run (so `mpbench status` needs nothing else)
    results.csv           one row per finished run, rebuilt from the result files
    runs/<run_id>/
        config.json       resolved run config (model args after matching, recipe, data set)
        metrics.json      per-epoch metrics so far
        checkpoint.pt     latest epoch (+ checkpoint.pt.prev, the one before)
        result.json       final result; its presence means "never train this again"
        log.txt           what happened, including resumes and failures
        tensorboard/      event files (suite `tracking: {tensorboard: true}`)
        mlflow.json       the MLflow run id per tracking URI (suite `tracking: {mlflow: URI}`)
        .lock             held (flock) by the process training it
    .lock                 held briefly by whoever writes suite.json, plan.json or results.csv

A run is claimed with a non-blocking ``flock`` on its ``.lock``: the kernel drops it when the
holder dies, so a crashed worker never blocks a run, and several ``mpbench run`` processes
on one output directory share the work. Only the claiming process holds it: a flock belongs
to the open file, which every forked child (a DataLoader worker) would share and keep past
the trainer's death, so each child closes its copies right after the fork (exec'd children,
as with the spawn and forkserver start methods, never get them: Python opens fds
non-inheritable).
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
import traceback
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch

from mpbench.config import Suite, SuiteError
from mpbench.plugins import load_run_plugins
from mpbench.suite.plan import RunPlan, suite_for
from mpbench.storage import (atomic_write_json, atomic_write_text, is_disk_full, read_json,
                             remove_stale_temps)

RESULT_COLUMNS = [
    "suite", "run_id", "model", "label", "family", "budget_gmacs", "gmacs", "params",
    "deviation", "knob", "knob_value", "seed", "epochs", "top1", "top5", "val_top1", "val_top5",
    "nll", "ece", "brier", "superclass_top1", "corrupt_top1", "corrupt_set",
    "train_images", "val_images", "test_images", "test_evals", "test_curve", "train_time_s",
    "img_per_s", "speed_train_img_s", "speed_infer_img_s", "speed_batch_size", "speed_device",
    "activations_m", "train_peak_mem_mb", "infer_peak_mem_mb", "mem_method", "mem_device",
    "status", "dataset", "device", "finished_at",
    "tuned", "tune_trials", "tune_best_val_top1", "tune_cost_s",
]
#: the longest a run's own speed measurement may take, and its share of the run's training time
SPEED_MAX_S = 3.0
SPEED_SHARE = 0.02


def run_config(plan: RunPlan, suite: Suite, source: str | None = None) -> dict:
    """Everything that determines a run's outcome; a changed config must not reuse a run dir.

    ``plugins`` and ``suite_file`` let :func:`load_run` rebuild a user's plugin model later.
    """
    from mpbench import __version__
    from mpbench.suite.starts import init_config, spec_for

    suite = suite_for(suite, plan)  # a tuned final run: the recipe with its chosen values
    return {**plan.as_dict(), **init_config(spec_for(suite, plan)),
            "dataset": suite.dataset.model_dump(),
            "recipe": suite.recipe.model_dump(mode="json"), "plugins": list(suite.plugins),
            "suite_file": str(Path(source).resolve()) if source else None,
            "mpbench_version": __version__}


#: config fields that do not change a run's outcome: changing them under an existing --out is fine.
#: How often a run is evaluated changes its curves, never its weights: runs made before
#: `test_every` existed evaluated the test set every `eval_every` epochs, and stay resumable.
#: Nor do the extra evaluations after the last epoch (corruptions): `mpbench evaluate` adds them.
NOT_FINGERPRINTED = {"dataset": ("num_workers", "corruptions_root"),
                     "recipe": ("checkpoint_every_min", "eval_every", "test_every",
                                "corruptions")}
#: scores of an evaluation beyond top-1 (mpbench.training.metrics), per split
SCORES = ("nll", "ece", "brier", "superclass_top1")


def _fingerprint(config: dict) -> dict:
    out = {k: config.get(k) for k in ("model", "args", "seed", "dataset", "recipe", "init")}
    for key, names in NOT_FINGERPRINTED.items():
        if isinstance(out.get(key), dict):
            out[key] = {k: v for k, v in out[key].items() if k not in names}
    return out


def check_existing(plans: list[RunPlan], suite: Suite, out: Path, source: str) -> None:
    """Refuse to mix a changed suite into runs made with another config (before any write)."""
    for plan in plans:
        cfg_path = out / "runs" / plan.run_id / "config.json"
        if not cfg_path.exists():
            continue
        old, new = _fingerprint(read_json(cfg_path)), _fingerprint(json.loads(
            json.dumps(run_config(plan, suite), default=str)))
        if old != new:
            changed = next(k for k in new if old.get(k) != new.get(k))
            raise SuiteError(
                f"{source}: {changed}: run {plan.run_id} in {out} was made with a different "
                f"{changed}; use another --out (or delete that run) to train the new config")


# Lock fds this process opened (fd -> pid that opened it): a forked child closes its copies
# at once, so that a lock dies with the process that took it, never with its last child.
_LOCK_FDS: dict[int, int] = {}


def _close_inherited_locks() -> None:
    for fd in list(_LOCK_FDS):
        try:
            os.close(fd)  # the child's copy only: the parent's lock stands
        except OSError:
            pass
    _LOCK_FDS.clear()


os.register_at_fork(after_in_child=_close_inherited_locks)


@contextmanager
def _lock_fd(path: Path) -> Iterator[int]:
    """``path`` opened for locking; closed (dropping its flock) on exit, in this process
    only: a forked child that unwinds the same stack neither unlocks nor closes it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    _LOCK_FDS[fd] = os.getpid()
    try:
        yield fd
    finally:
        if _LOCK_FDS.get(fd) == os.getpid():
            del _LOCK_FDS[fd]
            os.close(fd)


@contextmanager
def claim(run_dir: Path) -> Iterator[bool]:
    """Try to own a run; yields False if another live process holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with _lock_fd(run_dir / ".lock") as fd:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        os.ftruncate(fd, 0)
        os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
        owner = os.getpid()
        try:
            yield True
        finally:
            if os.getpid() == owner:  # (closing drops it too, where no copy is left open)
                fcntl.flock(fd, fcntl.LOCK_UN)


@contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Serialise the writers of the shared files in ``out`` (suite.json, plan.json,
    results.csv). Held for milliseconds; it makes the last writer of ``results.csv`` also the
    last reader of the result files, so no finished run is missing from it, and it lets the
    holder clear temp files that a killed writer left behind."""
    out.mkdir(parents=True, exist_ok=True)
    with _lock_fd(out / ".lock") as fd:  # closing drops the flock
        fcntl.flock(fd, fcntl.LOCK_EX)
        remove_stale_temps(out)
        yield


def is_claimed(run_dir: Path) -> bool:
    lock = run_dir / ".lock"
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


@contextmanager
def claim_on_main(run_dir: Path) -> Iterator[bool]:
    """:func:`claim` on rank 0, the only rank that takes locks; every rank gets its answer."""
    from mpbench.training.distributed import agree, is_main

    if not is_main():
        yield agree(None)
        return
    with claim(run_dir) as mine:
        yield agree(mine)


def _log(run_dir: Path, message: str) -> None:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    with open(run_dir / "log.txt", "a") as f:
        f.write(f"{stamp} {message}\n")


def result_row(config: dict, status: str, history: list[dict], train_time_s: float,
               device: str, error: str | None = None) -> dict:
    last = history[-1] if history else {}
    speeds = [h["img_per_s"] for h in history]
    row = {k: config.get(k) for k in RESULT_COLUMNS if k in config}
    val = [h for h in history if h.get("val_top1") is not None]
    tests = [h for h in history if h.get("test_top1") is not None]
    row.update(
        dataset=config["dataset"]["name"], epochs=last.get("epoch", 0),
        top1=last.get("test_top1"), top5=last.get("test_top5"),  # the test set, after the last epoch
        val_top1=val[-1]["val_top1"] if val else None,  # the validation split, after the last epoch
        val_top5=val[-1]["val_top5"] if val else None,
        val_images=config["dataset"].get("val_split") or 0,
        # how often the test set was evaluated: more than once means the run has test-set curves
        test_evals=len(tests), test_curve=len(tests) > 1, train_time_s=train_time_s,
        img_per_s=sorted(speeds)[len(speeds) // 2] if speeds else None, status=status,
        device=device, finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    if config.get("tune"):  # a tuned suite's final run (mpbench.suite.tune)
        tune = config["tune"]
        row.update(tuned=json.dumps(tune["values"], sort_keys=True),
                   tune_trials=tune["trials"], tune_best_val_top1=tune["best_val_top1"],
                   tune_cost_s=tune["cost_s"])
    row.update(evaluation_fields(history))
    if error:
        row["error"] = error
    return row


def evaluation_fields(history: list[dict]) -> dict:
    """The last test and validation evaluations' calibration scores and reliability
    histograms (None where a run made before them, or not evaluated, lacks them)."""
    last = history[-1] if history else {}
    val = next((h for h in reversed(history) if h.get("val_top1") is not None), {})
    out = {k: last.get(f"test_{k}") for k in SCORES}
    out.update({f"val_{k}": val.get(f"val_{k}") for k in SCORES if f"val_{k}" in val})
    out["reliability"] = last.get("test_reliability")
    if val.get("val_reliability") is not None:
        out["val_reliability"] = val["val_reliability"]
    return out


def execute_run(plan: RunPlan, suite: Suite, run_dir: Path, data, device: torch.device,
                progress: bool | None = None, echo: Callable[[str], None] = print,
                source: str | None = None) -> dict:
    """Train one claimed run to completion (resuming if it can) and write its result."""
    from mpbench.registry import create_model
    from mpbench.errors import Interrupted
    from mpbench.training.trainer import Diverged, load_checkpoint, seed_everything, train
    from mpbench.training.distributed import agree, is_distributed, is_main, world_size

    from mpbench.suite.memory import run_memory
    from mpbench.suite.starts import init_result_fields, init_run, spec_for
    from mpbench.training.callbacks import recipe_callbacks
    from mpbench.training.tracking import RunTracker, open_tracker

    suite = suite_for(suite, plan)  # a tuned final run trains with its chosen values
    config = run_config(plan, suite, source)
    spec = spec_for(suite, plan)
    if is_main() and not (run_dir / "config.json").exists():
        atomic_write_json(run_dir / "config.json", config)

    def note(msg: str) -> None:
        if not is_main():  # only rank 0 writes
            return
        _log(run_dir, msg)
        echo(f"  {plan.run_id}: {msg}")

    retries = suite.recipe.max_retries
    for attempt in range(retries + 1):
        seed = plan.seed + 1000 * attempt  # a retry after divergence draws a new seed
        resume = agree(load_checkpoint(run_dir / "checkpoint.pt", log=note)  # rank 0's, everywhere
                       if attempt == 0 and is_main() else None)
        if resume is not None:
            note(f"resuming after epoch {resume['epoch']}" + (
                f" and {resume['batch']} batches of epoch {resume['epoch'] + 1}"
                if resume.get("batch") else ""))
        seed_everything(seed, suite.recipe.deterministic)
        model = create_model(plan.model, **plan.args)
        if resume is None:  # fine-tune/upcycle init (suite `init:`); a resumed run has its weights
            init_run(model, spec, seed, run_dir, note)

        def on_epoch(m: dict) -> None:
            history.append(m)
            atomic_write_json(run_dir / "metrics.json", history, durable=False)
            test = (f"top1 {m['test_top1']:.2f} top5 {m['test_top5']:.2f} "
                    if m["test_top1"] is not None else "")
            if m.get("val_top1") is not None:
                test = f"val top1 {m['val_top1']:.2f} " + (f"test {test}" if test else "")
            note(f"epoch {m['epoch']}/{suite.recipe.epochs} loss {m['train_loss']:.3f} {test}"
                 f"{m['img_per_s']:.0f} img/s"
                 + (f", data wait {m['data_wait_share']:.0%}" if "data_wait_share" in m else ""))
            if m.get("skipped_images"):  # streamed folders skip unreadable images
                note(f"skipped {m['skipped_images']} unreadable image(s) in epoch {m['epoch']}: "
                     f"{', '.join(m.get('skipped_files', []))}")
            tracker.log_epoch(m)  # TensorBoard / MLflow, after metrics.json

        history = list(resume["history"]) if resume else []
        if resume is not None and is_main():  # a kill may have come between checkpoint and metrics
            atomic_write_json(run_dir / "metrics.json", history, durable=False)
        tracker = (open_tracker(suite.tracking, suite.name, run_dir, config, note,
                                attempt=None if resume is not None else attempt,
                                fresh=resume is None, out_hint=str(run_dir.parent.parent),
                                label_smoothing=suite.recipe.label_smoothing)
                   if is_main() else RunTracker([], note))  # suite `tracking:`, rank 0 only
        tracker.catch_up(history)  # epochs stored before a kill that a tracker missed
        try:
            res = train(model, data, suite.recipe, seed=seed, device=device,
                        checkpoint=run_dir / "checkpoint.pt", resume=resume, on_epoch=on_epoch,
                        progress=progress, desc=plan.run_id,
                        callbacks=[*recipe_callbacks(suite.recipe), tracker])
            row = result_row(config, "done", res.history, res.train_time_s, str(device))
            row.update(measure_corruptions(model, data, suite, device, note))
            row.update(measure_speed(plan, model, data, suite, device, res, note))
            row.update(run_memory(plan, suite, data, device, res, note, source))
            break
        except Interrupted as exc:  # SIGTERM / SIGUSR1: checkpointed; the process stops
            note(f"interrupted by {exc.args[0]}; checkpoint saved, rerun the same command to "
                 f"resume")
            tracker.end("KILLED", "interrupted")
            raise
        except Diverged as exc:
            note(f"diverged: {exc}" + (f"; retry {attempt + 1}/{retries}" if attempt < retries else ""))
            if attempt < retries:  # the last attempt's result.json still goes to the trackers
                tracker.end("FAILED", "diverged")
            for name in ("checkpoint.pt", "checkpoint.pt.prev"):
                if is_main():
                    (run_dir / name).unlink(missing_ok=True)
            row = result_row(config, "diverged", history, 0.0, str(device), str(exc))
        except torch.cuda.OutOfMemoryError as exc:
            tracker.end("FAILED", "oom")
            if is_distributed():
                raise  # one rank's OOM: end the job (torchrun stops the others); resume later
            note("out of memory; recorded as oom, tried again by the next `mpbench run`")
            row = result_row(config, "oom", history, 0.0, str(device), str(exc).split("\n")[0])
            break
        except BaseException:
            tracker.end("FAILED", "error")  # the trackers close; the error is the run's
            raise
    row.update(init_result_fields(run_dir))  # what the run started from, if not from scratch
    row.update(train_images=len(data.train_y), test_images=len(data.test_y))
    if world_size() > 1:
        row["world_size"] = world_size()
    if is_main() and row["status"] == "oom":  # memory depends on the machine: not final
        atomic_write_json(run_dir / "failure.json", row)
    elif is_main():
        atomic_write_json(run_dir / "result.json", row)
        (run_dir / "failure.json").unlink(missing_ok=True)
        _log(run_dir, f"finished: {row['status']}, top1 {row['top1']}")
        tracker.finish(row, run_dir)  # final metrics, result.json / config.json artifacts
    return row


def measure_corruptions(model: torch.nn.Module, data, suite: Suite, device: torch.device,
                        note: Callable[[str], None]) -> dict:
    """Top-1 under corruptions (:func:`mpbench.training.robustness.evaluate_corruptions`); on
    one process a failure (e.g. out of memory) costs these fields, not the run."""
    from mpbench.training.distributed import is_distributed
    from mpbench.training.robustness import evaluate_corruptions, not_measured

    try:
        return evaluate_corruptions(model, data, suite.recipe, suite.dataset, device, note)
    except Exception as exc:
        if is_distributed():
            raise  # the ranks cannot go on out of step
        note(f"corruption evaluation failed ({type(exc).__name__}: {exc}); fields left empty")
        return not_measured()


def measure_speed(plan: RunPlan, model: torch.nn.Module, data, suite: Suite,
                  device: torch.device, res, note: Callable[[str], None]) -> dict:
    """The run's wall-clock axis (:func:`mpbench.bench.run_speed`), after its last checkpoint
    and metrics are written: a fresh copy of the architecture with the trained weights, the
    run's batch size and device, sized from its own seconds per step to at most
    ``SPEED_SHARE`` of its training time and ``SPEED_MAX_S`` seconds (one step per block at
    least). Every RNG is saved and restored around it, so nothing after it draws differently.
    Under torchrun only rank 0 measures (its own device, the per-rank batch): the other ranks
    go on to the next run's first collective. A failure costs the speed fields, not the run."""
    from mpbench.bench import run_speed
    from mpbench.registry import create_model
    from mpbench.training.distributed import is_main, shard_batch_size, unwrap
    from mpbench.training.trainer import rng_state, set_rng_state

    empty = dict.fromkeys(("speed_train_img_s", "speed_infer_img_s", "speed_batch_size",
                           "speed_device"))
    if not is_main():
        return empty
    batch = shard_batch_size(suite.recipe.batch_size)
    epoch_s = sorted(h["epoch_time_s"] for h in res.history)
    steps_per_epoch = max(1, len(data.train_y) // suite.recipe.batch_size)
    step_s = epoch_s[len(epoch_s) // 2] / steps_per_epoch if epoch_s else None
    budget = min(SPEED_MAX_S, SPEED_SHARE * res.train_time_s)
    state = rng_state()
    try:
        copy = create_model(plan.model, **plan.args)
        copy.load_state_dict(unwrap(model).state_dict())
        speed = run_speed(copy, data, suite.recipe, device, batch_size=batch, step_s=step_s,
                          budget_s=budget)
    except Exception as exc:  # an OOM at the end of a finished run must not lose the run
        note(f"speed measurement failed ({type(exc).__name__}: {exc}); speed fields left empty")
        return empty
    finally:
        set_rng_state(state)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    note(f"speed: train {speed['speed_train_img_s']:.0f} img/s, infer "
         f"{speed['speed_infer_img_s']:.0f} img/s at batch {speed['speed_batch_size']} "
         f"({speed['speed_steps']} steps x {speed['speed_repeats']}, {speed['speed_time_s']:.2f}s)")
    return speed


def collect_results(out: Path) -> list[dict]:
    """One row per run that finished or failed (a failed run is retried by the next `run`)."""
    rows = []
    for run_dir in sorted(p for p in (out / "runs").glob("*") if p.is_dir()):
        for name in ("result.json", "failure.json"):
            if (run_dir / name).exists():
                try:
                    rows.append(read_json(run_dir / name))
                except (OSError, json.JSONDecodeError):
                    pass  # written atomically, so only foreign junk can be unreadable
                break
    return rows


def write_results_csv(out: Path) -> Path:
    """Rebuild ``results.csv`` from the result files: never a partial or duplicate row.

    Under :func:`output_lock`, so that with several workers the last write saw every result.
    """
    import pandas as pd

    with output_lock(out):
        rows = collect_results(out)  # nested fields (histograms) stay in result.json only
        extra = sorted({k for r in rows for k, v in r.items() if not isinstance(v, (dict, list))}
                       - set(RESULT_COLUMNS))
        frame = pd.DataFrame(rows, columns=RESULT_COLUMNS + extra)
        path = out / "results.csv"
        atomic_write_text(path, frame.to_csv(index=False))
    return path


def run_suite(suite: Suite, plans: list[RunPlan], out: Path, *, data_root=None,
              device: str = "auto", progress: bool | None = None,
              echo: Callable[[str], None] = print, source: str | None = None,
              only: Iterable[str] | None = None) -> dict:
    """Train every pending run of ``plans`` (or of those whose id is in ``only``); returns
    counts by outcome.

    Under ``torchrun`` every rank calls this; rank 0 takes the locks and writes, and the other
    ranks follow its decisions (see :mod:`mpbench.training.distributed`). A full disk stops the suite
    with :class:`~mpbench.errors.DiskFull` (every later write would fail too).
    """
    try:
        return _run_suite(suite, plans, out, data_root=data_root, device=device,
                          progress=progress, echo=echo, source=source, only=only)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        from mpbench.errors import DiskFull
        raise DiskFull(f"{exc.filename or out}: {exc.strerror}; free space and rerun the same "
                       f"command (finished runs are kept, an interrupted run resumes from its "
                       f"last complete checkpoint)") from exc


def _run_suite(suite: Suite, plans: list[RunPlan], out: Path, *, data_root, device, progress,
               echo, source, only) -> dict:
    from mpbench.data import load_dataset
    from mpbench.training.distributed import agree, is_distributed, is_main, main_first, setup

    if suite.recipe.corruptions and suite.dataset.corruptions_root:  # before anything is written
        from mpbench.data.corruptions import check_corruptions_root
        check_corruptions_root(suite.dataset.corruptions_root)
    dev = setup(device)  # resolve_device(device), joining torchrun's process group if any
    if not is_main():
        echo, progress = (lambda *_: None), False
    if is_main():
        with output_lock(out):
            atomic_write_json(out / "suite.json", suite.model_dump(mode="json"))
            atomic_write_json(out / "plan.json", [p.as_dict() for p in plans])
    only = None if only is None else set(only)
    counts = {"done": 0, "skipped": 0, "busy": 0, "diverged": 0, "oom": 0, "failed": 0}
    data = None
    t_suite = time.perf_counter()
    todo = [(i, p) for i, p in enumerate(plans, 1) if only is None or p.run_id in only]
    for second_look in (False, True):  # runs busy on the first pass: their holder may have died
        busy = []
        for i, plan in todo:
            run_dir = out / "runs" / plan.run_id
            head = f"[{i}/{len(plans)}] {plan.run_id}"
            if agree((run_dir / "result.json").exists()):
                counts["skipped"] += 1
                echo(f"{head}: finished " + ("by another process" if second_look else "earlier, skipped"))
                continue
            with claim_on_main(run_dir) as mine:
                if not mine:
                    busy.append((i, plan))
                    echo(f"{head}: " + ("still being trained by another process" if second_look else
                                        "being trained by another process; will look again at the end"))
                    continue
                if agree((run_dir / "result.json").exists()):  # finished while we waited
                    counts["skipped"] += 1
                    continue
                if second_look:
                    echo(f"{head}: its other process let go of it; taking it over")
                if is_main() and remove_stale_temps(run_dir):
                    _log(run_dir, "removed the temp files of an interrupted write")
                if data is None:
                    data = main_first(lambda: load_dataset(suite.dataset, data_root))
                echo(f"{head}: {plan.model} {plan.gmacs:.4f} GMACs {plan.params / 1e6:.3f}M params "
                     f"on {dev}")
                try:
                    row = execute_run(plan, suite, run_dir, data, dev, progress, echo, source)
                except Exception as exc:  # an unexpected failure: record, go on, retry next time
                    if not is_main() or is_disk_full(exc):
                        raise  # ranks cannot go on out of step (torchrun stops all); disk: stop
                    _log(run_dir, "failed:\n" + traceback.format_exc())
                    atomic_write_json(run_dir / "failure.json", result_row(
                        run_config(plan, suite, source), "failed", [], 0.0, str(dev),
                        f"{type(exc).__name__}: {exc}"))
                    echo(f"{head}: FAILED ({type(exc).__name__}: {exc}); see {run_dir / 'log.txt'}")
                    counts["failed"] += 1
                    if is_distributed():
                        raise
                    continue
                counts[row["status"]] += 1
                if row["status"] == "oom" and dev.type == "cuda":
                    torch.cuda.empty_cache()  # hand the failed run's cached blocks to the next
                if is_main():
                    write_results_csv(out)
                echo(f"{head}: {row['status']} top1 "
                     f"{row['top1'] if row['top1'] is not None else '-'} in {row['train_time_s']:.0f}s")
        todo = busy
        if not todo:
            break
    counts["busy"] = len(todo)
    if is_main():
        write_results_csv(out)
    counts["wall_s"] = time.perf_counter() - t_suite
    return counts


def suite_status(out: Path) -> list[dict]:
    """State of every planned run, read from the output directory alone."""
    plan_path = out / "plan.json"
    if not plan_path.exists():
        from mpbench.errors import UserError
        raise UserError(f"{out}: no plan.json here; is this an `mpbench run` output directory?")
    rows = []
    for plan in read_json(plan_path):
        run_dir = out / "runs" / plan["run_id"]
        state, epoch, top1 = "pending", 0, None
        if (run_dir / "result.json").exists():
            result = read_json(run_dir / "result.json")
            state, epoch, top1 = result["status"], result.get("epochs"), result.get("top1")
        elif (run_dir / "failure.json").exists() and not is_claimed(run_dir):
            failure = read_json(run_dir / "failure.json")  # tried again by the next run
            state, epoch = failure["status"], failure.get("epochs")
        else:
            if (run_dir / "metrics.json").exists():
                try:
                    history = read_json(run_dir / "metrics.json")
                    epoch, top1 = history[-1]["epoch"], history[-1]["test_top1"]
                except (ValueError, IndexError, KeyError):
                    pass
                state = "partial"
            if is_claimed(run_dir):
                state = "running"
        rows.append({"run_id": plan["run_id"], "state": state, "epoch": epoch, "top1": top1})
    return rows


def load_run(run_dir: str | Path) -> tuple[torch.nn.Module, dict]:
    """The trained model of a run (final checkpoint, eval mode) and its resolved config."""
    from mpbench.errors import UserError
    from mpbench.registry import create_model
    from mpbench.training.trainer import load_checkpoint

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise UserError(f"{run_dir}: not a run directory (no config.json)")
    config = read_json(run_dir / "config.json")
    load_run_plugins(config)
    state = load_checkpoint(run_dir / "checkpoint.pt", log=lambda m: None)
    if state is None:
        raise UserError(f"{run_dir}: no readable checkpoint.pt; train it with `mpbench run` first")
    model = create_model(config["model"], **config["args"])
    model.load_state_dict(state["model"])
    return model.eval(), config


def build_untrained(config: dict) -> torch.nn.Module:
    """The run's network as initialised before training (same seed, same init)."""
    from mpbench.registry import create_model
    from mpbench.training.trainer import seed_everything

    load_run_plugins(config)
    seed_everything(config["seed"])
    return create_model(config["model"], **config["args"]).eval()
