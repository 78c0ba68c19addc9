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
    p.set_defaults(func=run)


def run(args) -> int:
    from mpbench.config import load_suite
    from mpbench.plan import plan_suite
    from mpbench.runs import check_existing, run_suite
    from mpbench.train import resolve_device

    suite = load_suite(args.suite)
    if args.data_root and not Path(args.data_root).exists():
        from mpbench.config import SuiteError
        raise SuiteError(f"--data-root: {args.data_root} does not exist")
    resolve_device(args.device)  # fail on a bad --device before planning
    plans = plan_suite(suite, args.suite, args.data_root)
    out = Path(args.out or Path("runs") / suite.name)
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
        return 0
    counts = run_suite(suite, plans, out, data_root=args.data_root, device=args.device,
                       progress=False if args.no_progress else None, source=args.suite)
    print(f"suite {suite.name}: " + ", ".join(f"{k} {v}" for k, v in counts.items() if k != "wall_s")
          + f" in {counts['wall_s']:.0f}s; results in {out / 'results.csv'}")
    return 1 if counts["failed"] else 0
