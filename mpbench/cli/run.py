"""``mpbench run SUITE``: train every model x budget x seed of a suite, resumably."""
from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="train (or resume) every run of a suite")
    p.add_argument("suite", help="suite YAML file")
    p.add_argument("--out", help="output directory (default: runs/<suite name>)")
    p.add_argument("--data-root", help="where data sets live (default: ~/.cache/mpbench/data)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    p.add_argument("--dry-run", action="store_true", help="print the expanded runs, train nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--launcher", choices=("local", "slurm"), default="local",
                   help="local: train here (also under torchrun); slurm: submit one job per "
                        "pending run through submitit (default: local)")
    s = p.add_argument_group("SLURM (with --launcher slurm)")
    s.add_argument("--partition", help="SLURM partition")
    s.add_argument("--gpus-per-run", type=int, default=1,
                   help="GPUs per run; > 1 trains the run with DDP, one task per GPU (default: 1)")
    s.add_argument("--cpus-per-run", type=int, help="CPU cores per run")
    s.add_argument("--time", help="time limit per job: minutes or [D-]HH:MM:SS (default: 24h); "
                                  "a run that needs longer is requeued and resumes")
    s.add_argument("--mem", help="memory per job, e.g. 32G")
    s.add_argument("--array-parallelism", type=int, default=64,
                   help="at most this many jobs of the array at once (default: 64)")
    s.add_argument("--slurm-dir", help="submitit logs and job files (default: OUT/slurm)")
    s.add_argument("--tune-workers", type=int, metavar="N",
                   help="a suite with tune: N worker jobs sharing the trials, then the final "
                        "runs (default: one per model x budget)")
    s.add_argument("--wait", action="store_true", help="block until every submitted job ends")
    p.set_defaults(func=run)


def run(args) -> int:
    from mpbench.config import load_suite
    from mpbench.suite.plan import plan_suite
    from mpbench.suite.runner import check_existing, run_suite
    from mpbench.training.device import resolve_device

    suite = load_suite(args.suite)
    from mpbench.training.tracking import check_tracking
    check_tracking(suite.tracking, args.suite)  # a tracker package missing: exit 2 now
    if args.data_root and not Path(args.data_root).exists():
        from mpbench.config import SuiteError
        raise SuiteError(f"--data-root: {args.data_root} does not exist")
    resolve_device(args.device)  # fail on a bad --device before planning
    plans = plan_suite(suite, args.suite, args.data_root)
    out = Path(args.out or Path("runs") / suite.name)
    if suite.tune is None:  # a tuned suite's final runs are checked with their tuned values
        check_existing(plans, suite, out, args.suite)
    if args.dry_run:
        print(f"{len(plans)} runs for suite {suite.name} -> {out}")
        print(f"{'run_id':<40} {'model':<28} {'budget':>7} {'GMACs':>8} {'dev':>7} {'params':>9}  knob")
        for p in plans:
            budget = f"{p.budget_gmacs:g}" if p.budget_gmacs is not None else "-"
            dev = f"{100 * p.deviation:+.1f}%" if p.deviation is not None else "-"
            knob = f"{p.knob}={p.knob_value}" if p.knob else "-"
            print(f"{p.run_id:<40} {p.model:<28} {budget:>7} {p.gmacs:>8.4f} {dev:>7} "
                  f"{p.params / 1e6:>8.3f}M  {knob}")
        if suite.tune is not None:
            from mpbench.suite.tuned import train_image_count, trial_plan_text
            print(trial_plan_text(suite, plans, out, train_image_count(suite)))
        return 0
    if args.launcher == "slurm":
        return _submit(args, suite, plans, out)
    if suite.tune is not None:  # trials first, then each finished study's final runs
        from mpbench.suite.tuned import tune_suite
        counts = tune_suite(suite, plans, out, data_root=args.data_root, device=args.device,
                            progress=False if args.no_progress else None, source=args.suite)
    else:
        counts = run_suite(suite, plans, out, data_root=args.data_root, device=args.device,
                           progress=False if args.no_progress else None, source=args.suite)
    from mpbench.training.distributed import is_main, teardown
    main_rank = is_main()
    teardown()  # under torchrun: leave the process group cleanly
    if not main_rank:  # rank 0 reports
        return 1 if counts["failed"] else 0
    print(f"suite {suite.name}: " + ", ".join(f"{k} {v}" for k, v in counts.items() if k != "wall_s")
          + f" in {counts['wall_s']:.0f}s; results in {out / 'results.csv'}")
    return 1 if counts["failed"] else 0


def _submit(args, suite, plans, out: Path) -> int:
    """``--launcher slurm``: one submitit job per pending run (see mpbench.suite.launch)."""
    from mpbench.suite.launch import SlurmOptions, submit_suite, wait

    options = SlurmOptions(partition=args.partition, gpus_per_run=args.gpus_per_run,
                           cpus_per_run=args.cpus_per_run, time=args.time, mem=args.mem,
                           array_parallelism=args.array_parallelism, slurm_dir=args.slurm_dir)
    if suite.tune is not None:
        from mpbench.suite.launch import submit_tune_workers
        from mpbench.suite.tuned import study_groups
        workers = args.tune_workers or len(study_groups(plans))
        jobs = submit_tune_workers(suite, plans, out, options, workers, source=args.suite,
                                   data_root=args.data_root, device=args.device)
    else:
        jobs = submit_suite(suite, plans, out, options, source=args.suite,
                            data_root=args.data_root, device=args.device)
    if not args.wait or not jobs:
        return 0
    counts = wait(jobs)
    print(f"suite {suite.name}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
          + f"; results in {out / 'results.csv'}")
    return 1 if counts.get("failed") else 0
