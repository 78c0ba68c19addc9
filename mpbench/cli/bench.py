"""``mpbench bench``: training and inference throughput, GFLOP/s, MFU and input-pipeline cost.

A thin layer over :func:`mpbench.bench.bench_models`; see that module for what is measured
and how (warm-up, medians, repeats interleaved across models and pipelines).
"""
from __future__ import annotations

import json


def add_parser(sub) -> None:
    p = sub.add_parser(
        "bench", help="training/inference throughput, GFLOP/s, MFU, input-pipeline overhead",
        description="Per model: model-only and end-to-end (BatchLoader + augmentation) training "
                    "img/s, inference img/s, achieved GFLOP/s (2 FLOPs per MAC, x3 for a "
                    "training step), the measured matmul peak and MFU. Medians over repeats, "
                    "repeats interleaved across models, all in one process.")
    p.add_argument("models", nargs="*", metavar="MODEL",
                   help="registered model, optionally NAME:key=value[:key=value] "
                        "(e.g. mp_resnet20_p4_fdcc:path_conv=loop); the key channels_last=on|off "
                        "is a benchmark option, not a model argument")
    p.add_argument("--batch-size", type=int, default=128, help="images per step (default 128)")
    p.add_argument("--budget", type=float, metavar="GMACS",
                   help="match every model to this many GMACs first (equal-compute comparison)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per repeat (default 10)")
    p.add_argument("--repeats", type=int, default=5, help="repeats; figures are medians (default 5)")
    p.add_argument("--warmup", type=int, default=2,
                   help="untimed steps before each timed block (default 2)")
    p.add_argument("--interleave", choices=("block", "step"), default="block",
                   help="block: per repeat, --steps timed steps per figure in turn; step: "
                        "single steps of every figure and model alternated (steadier ratios "
                        "on a loaded machine)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: auto)")
    p.add_argument("--classes", type=int, default=100, help="number of classes (default 100)")
    p.add_argument("--args", nargs="+", default=[], metavar="ARG",
                   help="arguments for every model: key=value pairs (YAML values) or one JSON object")
    p.add_argument("--amp", choices=("auto", "bf16", "off"), default="auto",
                   help="bf16 autocast (auto: on CUDA only, as the trainer)")
    p.add_argument("--channels-last", choices=("auto", "on", "off"), default="auto",
                   help="channels_last memory format (auto: on CUDA only, as the trainer)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the training forward, as recipe.compile (compilation "
                        "happens in the warm-up steps)")
    p.add_argument("--peak-size", type=int, default=None, metavar="N",
                   help="matrix size of the matmul-peak measurement (default 2048 CPU, 8192 CUDA)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads first")
    p.add_argument("--profile", action="store_true",
                   help="also print torch.profiler's top ops of --steps model-only training steps")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--loader", choices=("memory", "stream"), default="memory",
                   help="stream: measure the streaming pipeline (DataLoader workers, timm "
                        "transforms) on --data-root's training images, per --workers count, "
                        "next to the in-memory one (the first MODEL; see BENCHMARKS.md §6)")
    p.add_argument("--data-root", metavar="DIR",
                   help="--loader stream: an image folder (train/<class>/*, test/<class>/*)")
    p.add_argument("--workers", default="0,1,2", metavar="N,N,...",
                   help="--loader stream: DataLoader worker counts (default 0,1,2)")
    p.add_argument("--image-size", type=int, default=64, metavar="PX",
                   help="--loader stream: crop size (default 64)")
    p.add_argument("--decode", choices=("cpu", "device"), default="cpu",
                   help="--loader stream: decode JPEGs in the workers (cpu) or on --device "
                        "(dataset.decode: device)")
    p.add_argument("--no-memory", action="store_true",
                   help="skip the activations and peak training/inference memory (measured "
                        "after the timing, each model in a fresh child process on CPU; "
                        "docs/memory.md)")
    p.add_argument("--memory-only", action="store_true",
                   help="skip the timing: activations and peak memory of each MODEL alone "
                        "(--budget matches first; --batch-size, --amp, --channels-last apply)")
    p.add_argument("--memory-of", metavar="RUNS_DIR",
                   help="instead of benchmarking: add activations and peak memory, measured "
                        "here on --device, to the finished runs of RUNS_DIR that lack them "
                        "(result.json and results.csv; --data-root for image folders)")
    p.add_argument("--force", action="store_true",
                   help="--memory-of: measure runs that already have memory figures too")
    p.add_argument("--max-batch", action="store_true",
                   help="instead of benchmarking: the largest training batch of each MODEL "
                        "that fits --device (doubling, then bisection; CUDA out of memory "
                        "caught; on CPU against --mem-limit); --budget matches first")
    p.add_argument("--mem-limit", type=float, metavar="MB",
                   help="--max-batch: the most peak training memory (MiB) a batch may take "
                        "(required on CPU)")
    p.add_argument("--max-batch-cap", type=int, default=4096, metavar="N",
                   help="--max-batch: the largest batch tried (default 4096)")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    import torch

    from mpbench.bench import bench_models, machine_info, parse_model_spec
    from mpbench.cli.flops import parse_args_tokens
    from mpbench.errors import UserError

    if args.threads is not None:
        if args.threads < 1:
            raise UserError("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    if args.memory_of:
        return _run_memory_of(args)
    if not args.models:
        raise UserError("give one or more MODELs (or --memory-of RUNS_DIR)")
    if args.max_batch:
        return _run_max_batch(args)
    if args.memory_only:
        return _run_memory_only(args)
    if args.loader == "stream":
        return _run_stream(args)
    if args.decode != "cpu":
        raise UserError("--decode applies to --loader stream (the in-memory loader decodes "
                        "once, before training)")
    common = parse_args_tokens(args.args)
    specs = [parse_model_spec(m, common) for m in args.models]
    say = None if args.json else (lambda msg: print(f"  {msg}", file=sys.stderr, flush=True))
    results = bench_models(specs, batch_size=args.batch_size, budget=args.budget,
                           steps=args.steps, repeats=args.repeats, warmup=args.warmup,
                           device=args.device, num_classes=args.classes, amp=args.amp,
                           channels_last=args.channels_last, peak_n=args.peak_size,
                           interleave=args.interleave, compile=args.compile,
                           progress=say)
    machine = machine_info(results[0].device)
    memory = None
    if not args.no_memory:
        from mpbench.bench.memory import bench_memory
        memory = bench_memory(results, device=results[0].device, num_classes=args.classes,
                              progress=say)
    if args.json:
        print(json.dumps({"machine": machine, "results": [
            {**r.as_dict(), **(memory[i] if memory else {})} for i, r in enumerate(results)]},
            indent=2))
        return 0
    r0 = results[0]
    print(f"device {r0.device} ({machine.get('gpu') or machine['cpu']}, {r0.threads} threads), "
          f"torch {machine['torch']}, batch {r0.batch_size}, {r0.dtype}"
          f"{', channels_last' if r0.channels_last else ''}; "
          f"median of {r0.repeats} x {r0.steps} steps; load avg {machine.get('load_avg')}")
    print(f"matmul peak ({r0.dtype}): {r0.peak_gflops:.1f} GFLOP/s")
    name_w = max(len(r.label) for r in results)
    head = (f"{'model':<{name_w}}  {'GMACs':>7}  {'params':>7}  {'train':>8}  {'e2e':>8}  "
            f"{'infer':>8}  {'trainGF/s':>9}  {'MFU':>6}  {'inferGF/s':>9}  {'pipe':>6}  "
            f"{'loader':>9}  {'share':>6}")
    print(head)
    print("-" * len(head))
    for r in results:
        print(f"{r.label:<{name_w}}  {r.gmacs:7.4f}  {r.params / 1e6:6.3f}M  {r.train_img_s:8.1f}  "
              f"{r.e2e_img_s:8.1f}  {r.infer_img_s:8.1f}  {r.train_gflops:9.1f}  "
              f"{100 * r.train_mfu:5.1f}%  {r.infer_gflops:9.1f}  {100 * r.pipeline_overhead:5.1f}%  "
              f"{r.loader_ms:6.2f} ms  {100 * r.loader_share:5.2f}%")
    print("train/e2e/infer: img/s (model-only training on a fixed batch / training fed by "
          "BatchLoader / inference); pipe = 1 - e2e/train; loader = BatchLoader alone per batch, "
          "share = loader / (loader + model-only step)")
    if memory:
        _print_memory([r.label for r in results], r0.batch_size, memory, name_w)
    if args.profile:
        from mpbench.bench import profile_train_step

        for spec in specs:
            print(f"\nprofile: {spec.display}, {args.steps} model-only training steps")
            print(profile_train_step(spec, batch_size=args.batch_size, budget=args.budget,
                                     steps=args.steps, device=args.device,
                                     num_classes=args.classes, amp=args.amp,
                                     channels_last=args.channels_last))
    return 0


def _print_memory(labels: list[str], batch_size: int, memory: list[dict], name_w: int) -> None:
    from mpbench.bench.memory import format_mb

    method = next((m["mem_method"] for m in memory if m.get("mem_method")), "not measured")
    device = next((m["mem_device"] for m in memory if m.get("mem_device")), "")
    print(f"\nmemory at batch {batch_size} ({method}{' on ' + device if device else ''}; "
          f"peaks above the process before the model was built; activations: fvcore, batch 1)")
    print(f"{'model':<{name_w}}  {'acts (M)':>8}  {'train peak':>10}  {'infer peak':>10}")
    for label, m in zip(labels, memory):
        print(f"{label:<{name_w}}  {m['activations_m']:8.3f}  "
              f"{format_mb(m['train_peak_mem_mb']):>10}  {format_mb(m['infer_peak_mem_mb']):>10}"
              + (f"  ({m['mem_error']})" if m.get("mem_error") else ""))


def _memory_jobs(args, batch_size: int) -> list[tuple[str, object]]:
    """(label, MemoryJob) per MODEL: its arguments (matched to --budget first), the batch."""
    from mpbench.bench import parse_model_spec
    from mpbench.bench.memory import MemoryJob
    from mpbench.cli.flops import parse_args_tokens
    from mpbench.complexity.matching import match_budget

    common = parse_args_tokens(args.args)
    out = []
    for text in args.models:
        spec = parse_model_spec(text, common)
        model_args = {k: v for k, v in spec.args.items() if k != "channels_last"}
        if args.budget is not None:
            model_args = match_budget(spec.name, args.budget, model_args,
                                      num_classes=args.classes).args
        out.append((spec.display, MemoryJob(
            spec.name, {**model_args, "num_classes": args.classes}, batch_size, (3, 32, 32),
            args.classes, args.amp, str(spec.args.get("channels_last", args.channels_last)))))
    return out


def _run_memory_only(args) -> int:
    import sys

    from mpbench.bench.memory import memory_row
    from mpbench.errors import UserError
    from mpbench.training.device import resolve_device

    if args.budget is not None and not args.budget > 0:
        raise UserError(f"--budget must be a positive number of GMACs, got {args.budget}")
    device = resolve_device(str(args.device))
    jobs = _memory_jobs(args, args.batch_size)
    rows = []
    for label, job in jobs:
        if not args.json:
            print(f"  memory of {label} at batch {job.batch_size}", file=sys.stderr, flush=True)
        rows.append({"model": label, **memory_row(job, device)})
    if args.json:
        print(json.dumps({"device": str(device), "batch_size": args.batch_size,
                          "results": [{**r, "args": j.args} for r, (_, j) in zip(rows, jobs)]},
                         indent=2, default=str))
        return 0
    _print_memory([label for label, _ in jobs], args.batch_size, rows,
                  max(len(label) for label, _ in jobs))
    return 0


def _run_max_batch(args) -> int:
    import sys

    from mpbench.bench.max_batch import max_batch
    from mpbench.errors import UserError
    from mpbench.training.device import resolve_device

    device = resolve_device(str(args.device))
    if device.type != "cuda" and args.mem_limit is None:
        raise UserError(f"--max-batch on {device.type}: give --mem-limit MB (nothing runs out "
                        "of memory on a CPU before the machine does)")
    if args.mem_limit is not None and not args.mem_limit > 0:
        raise UserError(f"--mem-limit must be a positive number of MiB, got {args.mem_limit}")
    if args.max_batch_cap < 1:
        raise UserError(f"--max-batch-cap must be >= 1, got {args.max_batch_cap}")
    say = None if args.json else (lambda msg: print(f"  {msg}", file=sys.stderr, flush=True))
    rows = []
    for label, job in _memory_jobs(args, 1):
        res = max_batch(job, device, mem_limit_mb=args.mem_limit, cap=args.max_batch_cap,
                        progress=say)
        rows.append({"model": label, **res})
    if args.json:
        print(json.dumps({"device": str(device), "results": rows}, indent=2))
        return 0
    limit = f"{args.mem_limit:g} MiB" if args.mem_limit else "the device's memory"
    print(f"largest training batch on {device} within {limit} "
          f"(doubling, then bisection; cap {args.max_batch_cap})")
    for r in rows:
        best = "none fits" if r["max_batch"] is None else str(r["max_batch"])
        at = f"  ({r['peak_at_max_mb']:.0f} MiB, {r['mem_method']})" if r["peak_at_max_mb"] else ""
        print(f"{r['model']:<32}  {best:>9}{at}")
    return 0


def _run_memory_of(args) -> int:
    from mpbench.errors import UserError
    from mpbench.suite.backfill import fill_memory

    if args.models:
        raise UserError("--memory-of RUNS_DIR takes no MODEL (it measures the runs' models)")
    counts = fill_memory(args.memory_of, device=args.device, data_root=args.data_root,
                         force=args.force, echo=print)
    print(json.dumps(counts) if args.json else
          f"{counts['filled']} run(s) filled, {counts['skipped']} already had memory, "
          f"{counts['busy']} busy, {counts['failed']} failed")
    return 1 if counts["failed"] else 0


def _run_stream(args) -> int:
    from mpbench.bench.streaming import bench_stream, format_stream
    from mpbench.errors import UserError

    if not args.data_root:
        raise UserError("--loader stream needs --data-root DIR (an image folder)")
    try:
        workers = [int(w) for w in args.workers.split(",")]
    except ValueError:
        raise UserError(f"--workers: {args.workers!r} is not a list of counts like 0,1,2") from None
    device = "cuda" if args.device == "auto" and __import__("torch").cuda.is_available() else \
        ("cpu" if args.device == "auto" else args.device)
    res = bench_stream(args.models[0], args.data_root, workers=workers,
                       batch_size=args.batch_size, size=args.image_size, batches=args.steps,
                       repeats=args.repeats, device=device, decode=args.decode)
    print(json.dumps(res, indent=2) if args.json else format_stream(res))
    return 0
