"""``mpbench status OUT``: pending / running / done / failed runs, from the output dir alone."""
from __future__ import annotations

import json
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("status", help="state of every run of a suite's output directory")
    p.add_argument("target", help="output directory of `mpbench run`, or the suite YAML "
                                  "(then runs/<suite name>)")
    p.add_argument("--out", help="output directory when TARGET is a suite file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from collections import Counter

    from mpbench.suite.runner import suite_status

    target = Path(args.target)
    if target.is_file():
        from mpbench.config import load_suite
        target = Path(args.out or Path("runs") / load_suite(target).name)
    rows = suite_status(target)
    from mpbench.suite.tuned import tune_status
    studies = tune_status(target)  # a suite with tune: trials per model x budget
    if args.json:
        print(json.dumps({"runs": rows, "tuning": studies} if studies else rows, indent=2))
        return 0
    for s in studies:
        best = f"{s['best_val_top1']:.2f}" if s["best_val_top1"] is not None else "-"
        print(f"tune {s['study']:<35} trials done {s['done']:>3}/{s['trials']} (pruned "
              f"{s['pruned']}), running {s['running']}, pending {s['pending']}  best val top1 {best}")
    for r in rows:
        top1 = f"{r['top1']:.2f}" if r["top1"] is not None else "-"
        print(f"{r['run_id']:<40} {r['state']:<9} epoch {r['epoch'] or 0:>4}  top1 {top1}")
    print(", ".join(f"{k} {v}" for k, v in sorted(Counter(r["state"] for r in rows).items())))
    return 0
