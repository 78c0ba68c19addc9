"""Everything a GPU can tell mpbench, in one command (under 9 minutes on one modern GPU).

    python benchmarks/gpu_check.py --out gpu-check [--device cuda|cpu] [--quick]
                                   [--data-root ../shared/data/cifar10-jpg]

Stages, each with a time allowance (seconds; --quick in brackets). A stage runs in
subprocesses killed at its allowance (or at the overall deadline, if sooner); a stage that
cannot start in time is recorded as skipped with the reason, and the later ones still get
their turn:

1. ``environment`` (in-process): device name, torch/CUDA/cuDNN versions, GPU count, date.
2. ``cuda_tests`` 150 [60]: ``python -m pytest -m cuda tests/test_cuda.py`` (bf16 autocast,
   channels_last, the device loader on CUDA, grouped = loop path convs, torch.compile,
   checkpoint resume on CUDA, nvJPEG decoding (``dataset.decode: device``), NCCL DDP with 2+
   GPUs); pass/fail/skip counts and skip reasons.
3. ``bench`` 170 [60]: ``mpbench bench --json`` of ``cifar_resnet18`` vs ``mp_resnet18_p4_fdcc``
   at cifar_resnet18's MACs and ``cifar_resnet56`` vs ``mp_resnet56_p4_fdcc`` at ResNet-56's,
   the mp models with ``path_conv`` grouped and loop, eager then ``--compile``: training,
   end-to-end and inference img/s and MFU against the measured matmul peak in the training
   dtype (bf16 on CUDA: bench's ``MatmulPeak`` multiplies bf16 tensors). --quick: tiny models,
   a tiny budget, 2 steps; on CPU --quick leaves out ``--compile`` (inductor's C++ build alone
   takes ~40 s there; tests/test_train.py covers compile on CPU). From the grouped/loop ratio
   it recommends a ``path_conv`` setting for the device (recorded, never applied).
4. ``study`` 190 [75]: a short real study on the CIFAR-10 JPEG copy (``--data-root``): a suite
   YAML written to OUT (main families + the mp none/static/fdcc ablation at one budget,
   2 seeds, epochs sized from stage 3's img/s to fit the allowance), several ``mpbench run``
   workers in parallel on one ``--out`` (they share the suite through its locks), then
   ``mpbench report`` into OUT/report. Without the data it is skipped (recorded). --quick:
   tiny models on a 512-image subset (CUDA) or on synthetic data (CPU, or no JPEG copy).

OUT gets ``gpu_check.json`` (rewritten after every stage, so a killed check keeps what it
measured), ``summary.md``, the stages' logs and the study's suite, runs and report.
Exit status 0 when no stage failed (skipped is not failed), 1 otherwise.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEADLINE_S = 530           # the whole check, under 9 minutes
QUICK_DEADLINE_S = 240
ALLOWANCE = {"cuda_tests": 150, "bench": 170, "study": 190}
QUICK_ALLOWANCE = {"cuda_tests": 60, "bench": 60, "study": 75}
MIN_START = {"cuda_tests": 20, "bench": 20, "study": 30}  # a stage starts only with this much left
STAGES = ("environment", "cuda_tests", "bench", "study")

# (baseline, multi-path model, budget GMACs = the baseline's own MACs at its default width)
BENCH_PAIRS = [("cifar_resnet18", "mp_resnet18_p4_fdcc", 0.557),
               ("cifar_resnet56", "mp_resnet56_p4_fdcc", 0.127)]
QUICK_PAIRS = [("cifar_resnet_tiny", "mp_resnet_tiny:paths=2:route=fdcc", 0.004)]

STUDY_BUDGET = 0.127  # ResNet-56 scale
STUDY_MODELS = [
    ("cifar_resnet56", {}, "resnet56-depth"),
    ("cifar_resnet18", {}, "resnet18-width"),
    ("cifar_wrn28_10", {}, "wrn28"),
    ("cifar_resnext29_8x8d_w16", {}, "resnext29-8c_w16"),
    ("cifar_se_resnet56", {}, "se-resnet56"),
    ("cifar_skresnet56", {}, "sk-resnet56"),
    ("ensemble_resnet56_x2", {}, "ensemble-resnet56x2"),
    ("mp_resnet56_p4_none", {}, "mp56-p4-none"),
    ("mp_resnet56_p4_static", {}, "mp56-p4-static"),
    ("mp_resnet56_p4_fdcc", {}, "mp56-p4-fdcc"),
]
QUICK_BUDGET = 0.004
QUICK_MODELS = [
    ("cifar_resnet_tiny", {}, "resnet-tiny"),
    ("mp_resnet_tiny", {"paths": 2, "route": "none"}, "mp-tiny-p2-none"),
    ("mp_resnet_tiny", {"paths": 2, "route": "static"}, "mp-tiny-p2-static"),
    ("mp_resnet_tiny", {"paths": 2, "route": "fdcc"}, "mp-tiny-p2-fdcc"),
]


class Clock:
    def __init__(self, total: float):
        self.t0, self.total = time.monotonic(), total

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def left(self) -> float:
        return self.total - self.elapsed()


def run_cmd(argv: list[str], timeout: float, log: Path, env: dict | None = None) -> dict:
    """Run ``argv`` in its own process group, output to ``log``; killed (whole group) at
    ``timeout``. Returns rc (None if killed), wall time, timed_out and the output's tail."""
    t0 = time.monotonic()
    with open(log, "w") as f:
        f.write("$ " + shlex.join(argv) + "\n")
        f.flush()
        proc = subprocess.Popen(argv, cwd=REPO, env=env or os.environ.copy(), stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True, text=True)
        try:
            rc, timed_out = proc.wait(timeout=max(timeout, 1)), False
        except subprocess.TimeoutExpired:
            _kill(proc)
            rc, timed_out = None, True
    return {"rc": rc, "wall_s": round(time.monotonic() - t0, 1), "timed_out": timed_out,
            "log": log.name, "tail": _tail(log)}


def _kill(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _python() -> list[str]:
    return [sys.executable]


def _child_env(device: str, threads: int | None = None) -> dict:
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


# --------------------------------------------------------------------------- stages

def stage_environment(ctx: dict) -> dict:
    import torch

    from mpbench.bench.throughput import machine_info

    dev = torch.device(ctx["device"])
    info = {"device": ctx["device"], "torch": torch.__version__,
            "cuda_runtime": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
            "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
            "machine": machine_info(dev), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda: torch.cuda.is_available() is False on this machine")
        props = torch.cuda.get_device_properties(dev)
        info.update(device_name=props.name, capability=f"{props.major}.{props.minor}",
                    memory_gib=round(props.total_memory / 2**30, 1),
                    cudnn=torch.backends.cudnn.version(),
                    bf16_supported=torch.cuda.is_bf16_supported(),
                    gpus=[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
    else:
        info["device_name"] = info["machine"]["cpu"]
    return {"status": "ok", "figures": info}


def stage_cuda_tests(ctx: dict, allowance: float) -> dict:
    xml = ctx["out"] / "cuda-tests.xml"
    argv = _python() + ["-m", "pytest", "-m", "cuda", "tests/test_cuda.py", "-q", "-rs",
                        "-p", "no:cacheprovider", f"--junitxml={xml}"]
    r = run_cmd(argv, allowance, ctx["out"] / "cuda-tests.log", _child_env(ctx["device"]))
    figures = {"command": shlex.join(argv[1:]), **_junit_counts(xml)}
    if r["timed_out"]:
        return {"status": "timeout", "reason": f"pytest killed at its {allowance:.0f} s allowance",
                "figures": figures, "run": r}
    if figures.get("tests") is None:
        return {"status": "failed", "reason": f"pytest exited {r['rc']} without a report",
                "figures": figures, "run": r}
    bad = figures["failed"] + figures["errors"]
    status = "ok" if bad == 0 and r["rc"] == 0 else "failed"
    return {"status": status, "figures": figures, "run": r,
            **({"reason": f"{bad} test(s) failed or errored (see cuda-tests.log)"} if bad else {})}


def _junit_counts(xml: Path) -> dict:
    if not xml.exists():
        return {"tests": None}
    root = ET.parse(xml).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    cases = {"passed": [], "failed": [], "errors": [], "skipped": []}
    skip_reasons = {}
    for case in suite.iter("testcase"):
        name = case.get("name")
        if case.find("failure") is not None:
            cases["failed"].append(name)
        elif case.find("error") is not None:
            cases["errors"].append(name)
        elif (sk := case.find("skipped")) is not None:
            cases["skipped"].append(name)
            skip_reasons[name] = sk.get("message", "")
        else:
            cases["passed"].append(name)
    return {"tests": sum(len(v) for v in cases.values()),
            **{k: len(v) for k, v in cases.items()}, "names": cases, "skip_reasons": skip_reasons}


def bench_jobs(ctx: dict) -> list[dict]:
    quick, cpu = ctx["quick"], ctx["device"] == "cpu"
    pairs = QUICK_PAIRS if quick else BENCH_PAIRS
    common = ["--device", ctx["device"], "--json", "--classes", "10"]
    if quick:
        common += ["--batch-size", "32", "--steps", "2", "--repeats", "1", "--warmup", "1",
                   "--peak-size", "512" if cpu else "4096"]
    else:
        common += ["--batch-size", "128", "--steps", "20", "--repeats", "3", "--warmup", "3"]
    jobs = []
    for compiled in (False, True):
        for base, mp, budget in pairs:
            models = [base, f"{mp}:path_conv=grouped", f"{mp}:path_conv=loop"]
            extra = ["--budget", str(budget)] + (["--compile", "--warmup", "3"] if compiled else [])
            job = {"name": f"{base.split(':')[0]}-pair{'-compile' if compiled else ''}",
                   "compile": compiled, "budget": budget,
                   "argv": _python() + ["-m", "mpbench", "bench", *models, *common, *extra]}
            if compiled and quick and cpu:
                job["skip"] = ("--device cpu --quick leaves out --compile (inductor's C++ build "
                               "takes ~40 s on this CPU; tests/test_train.py covers compile)")
            jobs.append(job)
    return jobs


def stage_bench(ctx: dict, allowance: float) -> dict:
    clock = Clock(allowance)
    jobs, rows, failed = bench_jobs(ctx), [], []
    for job in jobs:
        rec = {"name": job["name"], "compile": job["compile"], "budget_gmacs": job["budget"],
               "command": shlex.join(job["argv"][1:])}
        job_rec = ctx.setdefault("bench_jobs", [])
        job_rec.append(rec)
        if "skip" in job:
            rec.update(status="skipped", reason=job["skip"])
            continue
        if clock.left() < 10:
            rec.update(status="skipped", reason=f"stage allowance ({allowance:.0f} s) used up")
            continue
        log = ctx["out"] / f"bench-{job['name']}.log"
        json_path = ctx["out"] / f"bench-{job['name']}.json"
        with open(json_path, "w") as f:  # stdout is the JSON, stderr goes to the log
            t0 = time.monotonic()
            with open(log, "w") as err:
                err.write("$ " + shlex.join(job["argv"]) + "\n")
                err.flush()
                proc = subprocess.Popen(job["argv"], cwd=REPO, stdout=f, stderr=err, text=True,
                                        env=_child_env(ctx["device"], 1 if ctx["device"] == "cpu" else None),
                                        start_new_session=True)
                try:
                    rc = proc.wait(timeout=max(clock.left(), 1))
                except subprocess.TimeoutExpired:
                    _kill(proc)
                    rc = None
        rec["wall_s"] = round(time.monotonic() - t0, 1)
        if rc is None:
            rec.update(status="timeout", reason="killed at the stage allowance")
            continue
        if rc != 0:
            rec.update(status="failed", reason=f"exit {rc}: {_tail(log, 3)}")
            failed.append(job["name"])
            continue
        data = json.loads(json_path.read_text())
        rec["status"] = "ok"
        for r in data["results"]:
            rows.append({"job": job["name"], "label": r["label"], "model": r["model"],
                         "path_conv": r["args"].get("path_conv"), "compiled": r["compiled"],
                         "gmacs": round(r["gmacs"], 4), "params": r["params"], "dtype": r["dtype"],
                         "channels_last": r["channels_last"],
                         "train_img_s": round(r["train_img_s"], 1), "e2e_img_s": round(r["e2e_img_s"], 1),
                         "infer_img_s": round(r["infer_img_s"], 1),
                         "train_mfu": round(r["train_mfu"], 4), "infer_mfu": round(r["infer_mfu"], 4),
                         "peak_gflops": round(r["peak_gflops"], 1),
                         "loader_share": round(r["loader_share"], 4)})
    ok = [r for r in ctx["bench_jobs"] if r["status"] == "ok"]
    figures = {"jobs": ctx["bench_jobs"], "results": rows,
               "path_conv": path_conv_recommendation(rows, ctx["device"])}
    ctx["bench_rows"] = rows
    if failed:
        return {"status": "failed", "reason": "bench failed: " + ", ".join(failed), "figures": figures}
    if not ok:
        return {"status": "timeout", "reason": "no bench job finished", "figures": figures}
    partial = [r["name"] for r in ctx["bench_jobs"] if r["status"] == "timeout"]
    out = {"status": "ok", "figures": figures}
    if partial:
        out.update(status="partial", reason="out of time before: " + ", ".join(partial))
    return out


def path_conv_recommendation(rows: list[dict], device: str) -> dict:
    """loop/grouped training img/s per mp model (eager and compiled); ``auto`` means grouped
    on CUDA, loop on CPU (mpbench.models.mp_resnet.resolve_path_conv)."""
    by_key = {}
    for r in rows:
        if r["path_conv"] in ("grouped", "loop"):
            by_key.setdefault((r["model"], r["gmacs"], r["compiled"]), {})[r["path_conv"]] = r["train_img_s"]
    ratios = [{"model": m, "gmacs": g, "compiled": c, "loop_over_grouped": round(v["loop"] / v["grouped"], 3)}
              for (m, g, c), v in by_key.items() if {"grouped", "loop"} <= v.keys()]
    if not ratios:
        return {"ratios": [], "recommendation": "no grouped/loop pair measured"}
    auto = "grouped" if device.startswith("cuda") else "loop"
    geo = math.exp(sum(math.log(r["loop_over_grouped"]) for r in ratios) / len(ratios))
    faster = "loop" if geo > 1 else "grouped"
    if faster == auto:
        text = (f"keep `path_conv: auto` ({auto} on {device}): {auto} trains "
                f"{max(geo, 1 / geo):.2f}x faster here (geometric mean over {len(ratios)} pairs)")
    else:
        text = (f"`path_conv: auto` picks {auto} on {device} but {faster} trained "
                f"{max(geo, 1 / geo):.2f}x faster here: pin `path_conv: {faster}` for this device "
                f"or revisit resolve_path_conv")
    return {"ratios": ratios, "loop_over_grouped_geomean": round(geo, 3), "auto_picks": auto,
            "faster": faster, "recommendation": text}


def _study_rate(ctx: dict) -> tuple[float | None, str]:
    """The slowest eager end-to-end training img/s of the bench (the mp models at the
    implementation ``auto`` picks, and the baselines), as the study's sizing rate."""
    rows = [r for r in ctx.get("bench_rows", []) if not r["compiled"]]
    auto = "grouped" if ctx["device"].startswith("cuda") else "loop"
    rows = [r for r in rows if r["path_conv"] in (None, auto)]
    if not ctx["quick"]:  # the ResNet-56-scale pair is what the study trains
        rows = [r for r in rows if abs(r["gmacs"] - STUDY_BUDGET) < 0.02] or rows
    if not rows:
        return None, "no bench figure: default sizing"
    slow = min(rows, key=lambda r: r["e2e_img_s"])
    return slow["e2e_img_s"], f"{slow['label']} at {slow['e2e_img_s']:.0f} img/s"


def resolve_data_root(text: str) -> Path | None:
    p = Path(text).expanduser()
    for cand in ([p] if p.is_absolute() else [Path.cwd() / p, REPO / p]):
        if cand.exists():
            return cand.resolve()
    return None


def stage_study(ctx: dict, allowance: float) -> dict:
    clock = Clock(allowance)
    quick, device = ctx["quick"], ctx["device"]
    root = resolve_data_root(ctx["data_root"])
    notes = []
    if root is None and not quick:
        return {"status": "skipped",
                "reason": f"--data-root {ctx['data_root']}: CIFAR-10 JPEG copy not found"}
    out = ctx["out"]
    env = _child_env(device)
    if root is not None and quick and device == "cpu":
        notes.append("--device cpu --quick: synthetic data (evaluating the JPEG copy's 10k test "
                     "images alone would take the stage's time on a CPU)")
        root = None
    elif root is None:
        notes.append("--quick without the JPEG copy: synthetic data")
    if root is not None:
        # decode once (or read the .npz cache) before the workers start, so they do not all decode
        r = run_cmd(_python() + ["-c", "import sys; from mpbench.data import load_dataset; "
                                 "d = load_dataset({'name': 'imagefolder'}, sys.argv[1]); "
                                 "print(len(d.train_y), len(d.test_y))", str(root)],
                    min(clock.left() / 2, 150), out / "study-data.log", env)
        if r["rc"] != 0:
            return {"status": "timeout" if r["timed_out"] else "failed",
                    "reason": f"loading {root}: {r['tail']}", "figures": {"data_load": r}}
        notes.append(f"data {root} loaded in {r['wall_s']} s")
    if quick and device == "cpu":
        workers, per_worker_threads = 2, 1
    else:
        gpus = max(ctx["env"].get("gpu_count", 1), 1)
        workers = 3 if gpus == 1 else gpus
        per_worker_threads = max(1, (os.cpu_count() or 4) // workers)
    models, budget = (QUICK_MODELS, QUICK_BUDGET) if quick else (STUDY_MODELS, STUDY_BUDGET)
    seeds = [0, 1]
    n_runs = len(models) * len(seeds)
    if root is not None:
        train_subset = 512 if quick else 10000
        dataset = {"name": "imagefolder", "root": str(root), "train_subset": train_subset}
        n_test = 10000
    else:
        train_subset = 256
        dataset = {"name": "synthetic", "num_classes": 10, "num_train": train_subset,
                   "num_test": 128, "image_size": 32}
        n_test = 128
    # sizing: time for training = what is left after planning, process start-up and the report
    rate, rate_note = _study_rate(ctx)
    overhead = 25 if quick else 60
    train_s = max(clock.left() - overhead, 5) * workers / n_runs
    if rate is None:
        epochs = 1 if quick else 2
    else:
        per_worker = rate / (workers if device.startswith("cuda") else 1)  # one GPU: shared
        eval_imgs = 2 * n_test  # two evaluations per run
        epochs = int((train_s * per_worker * 0.5 - eval_imgs / 3) // train_subset)  # 50 % margin
        epochs = max(1, min(epochs, 3 if quick else 30))
    eval_every = max(1, epochs // 2)
    batch = 64 if quick else 128
    suite = {"name": "gpu-check-study",
             "description": f"gpu_check.py's short study ({'quick' if quick else 'full'}, {device})",
             "dataset": dataset,
             "recipe": {"epochs": epochs, "eval_every": eval_every, "batch_size": batch,
                        "eval_batch_size": 1000, "lr": 0.1 if not quick else 0.05,
                        "schedule": "cosine", "weight_decay": 5.0e-4},
             "seeds": seeds, "budgets_gmacs": [budget], "tolerance": 0.04,
             "models": [{"name": n, **({"args": a} if a else {}), "label": l} for n, a, l in models]}
    import yaml
    suite_path = out / "study-suite.yaml"
    suite_path.write_text(f"# written by benchmarks/gpu_check.py: {n_runs} runs, {workers} workers, "
                          f"epochs sized from {rate_note}\n" + yaml.safe_dump(suite, sort_keys=False))
    runs_dir = out / "study"
    run_argv = _python() + ["-m", "mpbench", "run", str(suite_path), "--out", str(runs_dir),
                            "--device", device, "--no-progress"]
    if root is not None:
        run_argv += ["--data-root", str(root)]
    report_reserve = 20 if quick else 40
    t0 = time.monotonic()
    procs = []
    for w in range(workers):
        wenv = dict(env, OMP_NUM_THREADS=str(per_worker_threads))
        if device.startswith("cuda") and ctx["env"].get("gpu_count", 1) > 1:
            wenv["CUDA_VISIBLE_DEVICES"] = str(w % ctx["env"]["gpu_count"])
        log = open(out / f"study-worker{w}.log", "w")
        log.write("$ " + shlex.join(run_argv) + "\n")
        log.flush()
        procs.append((subprocess.Popen(run_argv, cwd=REPO, env=wenv, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True), log))
    timed_out = False
    for p, log in procs:
        try:
            p.wait(timeout=max(clock.left() - report_reserve, 1))
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill(p)
        log.close()
    run_wall = round(time.monotonic() - t0, 1)
    rcs = [p.returncode for p, _ in procs]
    results = _study_results(runs_dir)
    figures = {"suite": suite_path.name, "runs": n_runs, "workers": workers, "epochs": epochs,
               "train_subset": train_subset, "sized_from": rate_note, "worker_rcs": rcs,
               "run_wall_s": run_wall, "notes": notes, **results}
    report = {"status": "not run"}
    if results["done"] and clock.left() > 5:
        rargv = _python() + ["-m", "mpbench", "report", str(runs_dir), "--out", str(out / "report"),
                             "--device", device]
        if quick:
            rargv += ["--no-analysis"]
        r = run_cmd(rargv, max(clock.left(), 5), out / "study-report.log", env)
        report = {"status": "ok" if r["rc"] == 0 and (out / "report" / "report.md").exists()
                  else ("timeout" if r["timed_out"] else "failed"), "run": r}
    figures["report"] = report
    if timed_out:
        return {"status": "partial" if results["done"] else "timeout",
                "reason": f"workers killed at the allowance after {run_wall} s "
                          f"({results['done']}/{n_runs} runs done)", "figures": figures}
    if any(rc != 0 for rc in rcs) or results["done"] < n_runs:
        return {"status": "failed", "reason": f"worker exit codes {rcs}, {results['done']}/{n_runs} runs done",
                "figures": figures}
    if report["status"] != "ok":
        return {"status": "failed", "reason": f"mpbench report: {report['status']}", "figures": figures}
    return {"status": "ok", "figures": figures}


def _study_results(runs_dir: Path) -> dict:
    path = runs_dir / "results.csv"
    if not path.exists():
        return {"done": 0, "by_label": {}}
    with open(path) as f:
        rows = list(csv.DictReader(f))
    by_label: dict[str, dict] = {}
    for r in rows:
        d = by_label.setdefault(r.get("label") or r.get("model"), {"runs": 0, "top1": [], "status": []})
        d["runs"] += 1
        d["status"].append(r.get("status"))
        try:
            d["top1"].append(float(r.get("top1") or "nan"))
        except ValueError:
            pass
    for d in by_label.values():
        vals = [v for v in d["top1"] if math.isfinite(v)]
        d["top1_mean"] = round(sum(vals) / len(vals), 2) if vals else None
    return {"done": sum(r.get("status") == "done" for r in rows), "by_label": by_label}


# --------------------------------------------------------------------------- output

def write_outputs(ctx: dict, record: dict) -> None:
    out = ctx["out"]
    (out / "gpu_check.json").write_text(json.dumps(record, indent=2, default=str))
    env = record["stages"].get("environment", {}).get("figures", {})
    lines = [f"# GPU check: {env.get('device_name', ctx['device'])}", "",
             f"{record['date']} · torch {env.get('torch')} · CUDA {env.get('cuda_runtime')} · "
             f"device `{ctx['device']}`{' · --quick' if ctx['quick'] else ''} · "
             f"total {record.get('wall_s', '?')} s", "",
             f"`{record['command']}`", "",
             "| stage | status | wall s | allowance s | note |", "|---|---|---|---|---|"]
    for name in STAGES:
        st = record["stages"].get(name, {"status": "not reached"})
        note = st.get("reason", "")
        f = st.get("figures", {})
        if name == "cuda_tests" and f.get("tests") is not None:
            note = f"{f['passed']} passed, {f['failed']} failed, {f['errors']} errors, {f['skipped']} skipped" + (f"; {note}" if note else "")
        lines.append(f"| {name} | {st['status']} | {st.get('wall_s', '')} | {st.get('allowance_s', '')} | {note} |")
    rows = record["stages"].get("bench", {}).get("figures", {}).get("results", [])
    if rows:
        lines += ["", "| model | path_conv | compile | GMACs | dtype | train img/s | e2e img/s | infer img/s | train MFU | infer MFU |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['model']} | {r['path_conv'] or ''} | {'yes' if r['compiled'] else 'no'} | {r['gmacs']} | "
                         f"{r['dtype']} | {r['train_img_s']:.0f} | {r['e2e_img_s']:.0f} | {r['infer_img_s']:.0f} | "
                         f"{100 * r['train_mfu']:.1f} % | {100 * r['infer_mfu']:.1f} % |")
        lines += ["", f"MFU against the measured {rows[0]['dtype']} matmul peak "
                      f"({rows[0]['peak_gflops']:.0f} GFLOP/s)."]
    rec = record["stages"].get("bench", {}).get("figures", {}).get("path_conv", {})
    if rec:
        lines += ["", f"path_conv: {rec['recommendation']}"]
    study = record["stages"].get("study", {}).get("figures", {})
    if study.get("by_label"):
        lines += ["", f"Study: {study['done']}/{study['runs']} runs, {study['epochs']} epochs on "
                      f"{study['train_subset']} images, {study['workers']} workers, "
                      f"report: {study.get('report', {}).get('status')} (report/report.md)", "",
                  "| label | runs | mean test top-1 % |", "|---|---|---|"]
        for label, d in study["by_label"].items():
            lines.append(f"| {label} | {d['runs']} | {d['top1_mean']} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output folder (created)")
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--quick", action="store_true", help="tiny models, budgets and steps")
    ap.add_argument("--data-root", default="../shared/data/cifar10-jpg",
                    help="the CIFAR-10 JPEG copy (relative: to the working directory, else the repository)")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if (out / "study" / "results.csv").exists():
        print(f"{out}: holds an earlier check's study (study/): use a new --out", file=sys.stderr)
        return 2
    allowance = QUICK_ALLOWANCE if args.quick else ALLOWANCE
    clock = Clock(QUICK_DEADLINE_S if args.quick else DEADLINE_S)
    ctx = {"out": out, "device": args.device, "quick": args.quick, "data_root": args.data_root}
    record = {"command": shlex.join(["python", "benchmarks/gpu_check.py", *sys.argv[1:]])
              if argv is None else shlex.join(["gpu_check.py", *argv]),
              "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "quick": args.quick,
              "device": args.device, "deadline_s": clock.total, "stages": {}}
    for name in STAGES:
        t0 = time.monotonic()
        left = clock.left()
        allow = min(allowance.get(name, 60), left)
        entry: dict
        if name != "environment" and left < MIN_START[name]:
            entry = {"status": "skipped", "reason": f"{left:.0f} s left of the {clock.total} s deadline "
                                                    f"(needs {MIN_START[name]} s to start)"}
        else:
            print(f"[gpu_check] {name} (allowance {allow:.0f} s, {left:.0f} s left)", flush=True)
            try:
                if name == "environment":
                    entry = stage_environment(ctx)
                    ctx["env"] = entry["figures"]
                else:
                    entry = {"cuda_tests": stage_cuda_tests, "bench": stage_bench,
                             "study": stage_study}[name](ctx, allow)
            except Exception as exc:  # a stage's own error: recorded, the next stage still runs
                entry = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
                if name == "environment":
                    ctx["env"] = {}
            if name != "environment":
                entry["allowance_s"] = round(allow)
        entry["wall_s"] = round(time.monotonic() - t0, 1)
        record["stages"][name] = entry
        record["wall_s"] = round(clock.elapsed(), 1)
        if name == "bench" and entry.get("figures", {}).get("path_conv"):
            record["path_conv_recommendation"] = entry["figures"]["path_conv"]["recommendation"]
        write_outputs(ctx, record)
        print(f"[gpu_check] {name}: {entry['status']}" + (f" ({entry['reason']})" if entry.get("reason") else "")
              + f" in {entry['wall_s']} s", flush=True)
    if record.get("path_conv_recommendation"):
        print(f"[gpu_check] path_conv: {record['path_conv_recommendation']}")
    print(f"[gpu_check] {out / 'gpu_check.json'}, {out / 'summary.md'} ({record['wall_s']} s)")
    return 1 if any(s["status"] == "failed" for s in record["stages"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
