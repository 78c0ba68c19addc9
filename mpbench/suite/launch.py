"""Run a suite on a SLURM cluster through submitit: one job per pending run (a job array),
or, for a suite with ``tune:``, N tuning workers sharing the studies (``--tune-workers``).

Each job trains its single run through the normal runner (:func:`mpbench.suite.runner.run_suite` with
``only=[run_id]``), so the run directory, the ``flock`` claim, atomic writes, resume from
``checkpoint.pt`` and ``results.csv`` are exactly those of a local ``mpbench run``: the results
layout does not depend on the launcher, and ``mpbench status`` / ``mpbench report`` read the
output directory alone.

Preemption and time limits use submitit's checkpointing protocol: :class:`RunJob` is a
callable with a ``checkpoint()`` method returning a ``DelayedSubmission`` of itself. When
SLURM signals the job (``USR2`` before the time limit, or on preemption), submitit calls it,
requeues the job, and the requeued job resumes from the run's last epoch checkpoint: the
job's state *is* the run directory.

With ``--gpus-per-run N > 1`` a job has N tasks (one per GPU); each task exports the
``env://`` variables (``TorchDistributedEnvironment``) and the run trains with DDP exactly as
under ``torchrun``.
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mpbench.errors import UserError

#: ``cluster`` for :class:`submitit.AutoExecutor`; ``local`` runs the jobs as local
#: subprocesses (submitit's LocalExecutor) to try the SLURM path on one machine.
CLUSTER_ENV = "MPBENCH_SUBMITIT_CLUSTER"


@dataclass
class RunJob:
    """One run of a suite as a submitit job.

    It holds the suite and every plan as plain JSON data (what suite.json and plan.json hold),
    re-validated in the job: a job pickled by one mpbench version still runs, or fails with a
    clear validation error, after an upgrade (a pickled pydantic object would not).
    """

    suite: dict                     # Suite.model_dump(mode="json")
    plans: list                     # every RunPlan.as_dict() (plan.json lists them all)
    run_id: str
    out: str
    source: str | None = None       # the suite file (plugins, provenance)
    data_root: str | None = None
    device: str = "auto"
    attempts: int = field(default=0)  # how many times this job was checkpointed and requeued

    def __call__(self) -> dict:
        from mpbench.config import Suite
        from mpbench.suite.plan import RunPlan
        from mpbench.plugins import load_plugins
        from mpbench.suite.runner import run_suite
        from mpbench.storage import read_json

        _export_torch_distributed_env()
        load_plugins(self.suite.get("plugins") or [], self.source or "<suite>")
        suite = Suite.model_validate(self.suite)
        plans = [RunPlan(**p) for p in self.plans]
        out = Path(self.out)
        counts = run_suite(suite, plans, out, data_root=self.data_root,
                           device=self.device, progress=False, source=self.source,
                           only=[self.run_id])
        result = out / "runs" / self.run_id / "result.json"
        return {"run_id": self.run_id, "counts": counts,
                "result": read_json(result) if result.exists() else None}

    def checkpoint(self, *args: Any, **kwargs: Any):
        """Called by submitit on preemption / timeout: requeue the same run.

        Nothing needs saving here: the trainer checkpoints after every epoch and every
        ``recipe.checkpoint_every_min`` inside one, and the requeued job resumes from
        ``runs/<run_id>/checkpoint.pt`` at the next batch (losing at most that interval).
        submitit's SIGTERM handler stays installed (the trainer only takes over SIGTERM and
        SIGUSR1 when they have their default handlers).
        """
        import submitit

        again = RunJob(self.suite, self.plans, self.run_id, self.out, self.source,
                       self.data_root, self.device, self.attempts + 1)
        return submitit.helpers.DelayedSubmission(again)


@dataclass
class TuneWorkerJob:
    """One worker of a suite with ``tune:`` as a submitit job: what a local ``mpbench run``
    does (:func:`mpbench.suite.tuned.tune_suite`), so N jobs share the trials and then the
    final runs through the study storage and the output directory's claims, exactly as N
    local workers do. A preempted or timed-out job is requeued and takes its trial over from
    the trial's checkpoint (the claim died with the process)."""

    suite: dict
    plans: list
    worker: int
    out: str
    source: str | None = None
    data_root: str | None = None
    device: str = "auto"
    attempts: int = field(default=0)

    def __call__(self) -> dict:
        from mpbench.config import Suite
        from mpbench.plugins import load_plugins
        from mpbench.suite.plan import RunPlan
        from mpbench.suite.tuned import tune_suite

        load_plugins(self.suite.get("plugins") or [], self.source or "<suite>")
        counts = tune_suite(Suite.model_validate(self.suite), [RunPlan(**p) for p in self.plans],
                            Path(self.out), data_root=self.data_root, device=self.device,
                            progress=False, source=self.source or "<suite>")
        return {"worker": self.worker, "counts": counts, "result": None}

    def checkpoint(self, *args: Any, **kwargs: Any):
        import submitit

        return submitit.helpers.DelayedSubmission(TuneWorkerJob(
            self.suite, self.plans, self.worker, self.out, self.source, self.data_root,
            self.device, self.attempts + 1))


def _export_torch_distributed_env() -> None:
    """Inside a multi-task submitit job, set RANK/WORLD_SIZE/... for :func:`distributed.setup`."""
    try:
        import submitit
        env = submitit.JobEnvironment()
        tasks = env.num_tasks
    except Exception:  # not inside a submitit job (called directly)
        return
    if tasks > 1 and "WORLD_SIZE" not in os.environ:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def parse_time_min(text: str | int | None) -> int:
    """SLURM-style time: minutes (``90``), ``MM:SS``, ``HH:MM:SS`` or ``D-HH[:MM[:SS]]``."""
    if text is None:
        return 24 * 60
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not m:
        raise UserError(f"--time: {text!r} is not a time (minutes, HH:MM:SS or D-HH:MM:SS)")
    days, a, b, c = (int(v) if v else None for v in m.groups())
    if days is None and b is None:                  # "90": minutes
        return a
    if days is None and c is None:                  # "MM:SS"
        return a + (1 if b else 0)
    hours, minutes, seconds = a, b or 0, c or 0     # "HH:MM:SS" or "D-HH[:MM[:SS]]"
    return (days or 0) * 1440 + hours * 60 + minutes + (1 if seconds else 0)


def parse_mem_gb(text: str | None) -> int | None:
    """``32G``, ``32GB``, ``500M``, ``1T`` or a bare number of GB."""
    if text is None:
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([MGT]?)B?", text.strip(), flags=re.I)
    if not m:
        raise UserError(f"--mem: {text!r} is not a size (e.g. 32G)")
    value, unit = float(m.group(1)), m.group(2).upper() or "G"
    return max(1, round(value * {"M": 1 / 1024, "G": 1, "T": 1024}[unit]))


@dataclass
class SlurmOptions:
    partition: str | None = None
    gpus_per_run: int = 1
    cpus_per_run: int | None = None
    time: str | int | None = None     # default 24 h
    mem: str | None = None
    array_parallelism: int = 64
    slurm_dir: str | None = None      # default <out>/slurm
    cluster: str | None = None        # None: auto-detect (slurm); "local": submitit LocalExecutor

    def executor(self, folder: Path, name: str):
        import submitit

        cluster = self.cluster or os.environ.get(CLUSTER_ENV) or None
        executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
        if executor.cluster == "debug":
            raise UserError("--launcher slurm: no SLURM here (sbatch not found); set "
                            f"{CLUSTER_ENV}=local to run the jobs as local subprocesses")
        tasks = max(1, self.gpus_per_run)
        params: dict[str, Any] = dict(
            name=name, timeout_min=parse_time_min(self.time), nodes=1, tasks_per_node=tasks,
            gpus_per_node=self.gpus_per_run, slurm_array_parallelism=self.array_parallelism)
        if self.cpus_per_run:
            params["cpus_per_task"] = max(1, self.cpus_per_run // tasks)
        mem = parse_mem_gb(self.mem)
        if mem:
            params["mem_gb"] = mem
        if self.partition:
            params["slurm_partition"] = self.partition
        executor.update_parameters(**params)
        return executor


def pending_runs(plans: list, out: Path) -> tuple[list, list[str], list[str]]:
    """(plans to submit, ids finished earlier, ids being trained now by a live process)."""
    from mpbench.suite.runner import is_claimed

    todo, done, busy = [], [], []
    for plan in plans:
        run_dir = out / "runs" / plan.run_id
        if (run_dir / "result.json").exists():
            done.append(plan.run_id)
        elif is_claimed(run_dir):
            busy.append(plan.run_id)
        else:
            todo.append(plan)
    return todo, done, busy


def submit_suite(suite, plans: list, out: Path, options: SlurmOptions, *,
                 source: str | None = None, data_root: str | None = None,
                 device: str = "auto", echo=print) -> list:
    """Submit one job per pending run (as one job array); returns the submitit jobs.

    Writes ``suite.json`` and ``plan.json`` first, so ``mpbench status`` lists every run as
    soon as the jobs are queued; appends ``run_id -> job_id`` to ``<slurm_dir>/jobs.jsonl``.
    """
    from mpbench.storage import atomic_write_json

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "suite.json", suite.model_dump(mode="json"))
    atomic_write_json(out / "plan.json", [p.as_dict() for p in plans])
    todo, done, busy = pending_runs(plans, out)
    for run_id in busy:
        echo(f"{run_id}: being trained by another process, not submitted")
    if not todo:
        echo(f"suite {suite.name}: nothing to submit ({len(done)} finished, {len(busy)} running)")
        return []
    folder = Path(options.slurm_dir or out / "slurm")
    executor = options.executor(folder, name=f"mpbench-{suite.name}")
    source = str(Path(source).resolve()) if source else None
    out = out.resolve()
    suite_data, plan_data = suite.model_dump(mode="json"), [p.as_dict() for p in plans]
    with executor.batch():
        jobs = [executor.submit(RunJob(suite_data, plan_data, p.run_id, str(out), source,
                                       data_root, device)) for p in todo]
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with open(folder / "jobs.jsonl", "a") as f:
        for plan, job in zip(todo, jobs):
            f.write(json.dumps({"run_id": plan.run_id, "job_id": job.job_id,
                                "submitted_at": stamp}) + "\n")
    for plan, job in zip(todo, jobs):
        echo(f"{plan.run_id}: submitted as job {job.job_id}")
    echo(f"suite {suite.name}: {len(jobs)} jobs submitted ({len(done)} finished earlier, "
         f"{len(busy)} running); logs in {folder}; watch with `mpbench status {out}`")
    return jobs


def submit_tune_workers(suite, plans: list, out: Path, options: SlurmOptions, workers: int, *,
                        source: str | None = None, data_root: str | None = None,
                        device: str = "auto", echo=print) -> list:
    """Submit ``workers`` tuning workers (one job array) for a suite with ``tune:``; each
    trains trials while any are left, then the final runs of finished studies."""
    from mpbench.storage import atomic_write_json

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "suite.json", suite.model_dump(mode="json"))
    atomic_write_json(out / "plan.json", [p.as_dict() for p in plans])
    folder = Path(options.slurm_dir or out / "slurm")
    executor = options.executor(folder, name=f"mpbench-{suite.name}-tune")
    source = str(Path(source).resolve()) if source else None
    suite_data, plan_data = suite.model_dump(mode="json"), [p.as_dict() for p in plans]
    with executor.batch():
        jobs = [executor.submit(TuneWorkerJob(suite_data, plan_data, w, str(out.resolve()),
                                              source, data_root, device))
                for w in range(workers)]
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with open(folder / "jobs.jsonl", "a") as f:
        for w, job in enumerate(jobs):
            f.write(json.dumps({"tune_worker": w, "job_id": job.job_id,
                                "submitted_at": stamp}) + "\n")
    echo(f"suite {suite.name}: {len(jobs)} tuning workers submitted (jobs "
         f"{', '.join(j.job_id for j in jobs)}); logs in {folder}; watch with `mpbench status {out}`")
    return jobs


def wait(jobs: list, poll_s: float = 5.0, echo=print) -> dict[str, int]:
    """Block until every job ends; counts of the runs' outcomes (``failed`` for a dead job)."""
    counts: dict[str, int] = {}
    while not all(job.done() for job in jobs):
        time.sleep(poll_s)
    for job in jobs:
        try:
            res = job.result()
            if "worker" in res:  # a tuning worker: the counts of what it trained
                for k, v in res["counts"].items():
                    if k != "wall_s" and isinstance(v, int):
                        counts[k] = counts.get(k, 0) + v
                continue
            status = (res["result"] or {}).get("status") or (
                "busy" if res["counts"].get("busy") else "failed")
        except Exception as exc:  # the job died: its run stays resumable
            echo(f"job {job.job_id}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            status = "failed"
        counts[status] = counts.get(status, 0) + 1
    return counts
