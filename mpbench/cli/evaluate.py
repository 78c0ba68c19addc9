"""``mpbench evaluate RUNS_DIR``: NLL, ECE, Brier, superclass and corruption top-1 for
finished runs made before these scores existed, from their checkpoints."""
from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="add calibration and corruption scores to finished runs "
                                        "from their checkpoints (resumable)")
    p.add_argument("runs_dir", help="output directory of `mpbench run`")
    p.add_argument("--data-root", help="where the data set is (as for `mpbench run`)")
    p.add_argument("--device", default="auto")
    p.add_argument("--force", action="store_true", help="evaluate runs that have the scores too")
    p.set_defaults(func=run)


def run(args) -> int:
    from mpbench.suite.evaluate import evaluate_runs

    counts = evaluate_runs(args.runs_dir, data_root=args.data_root, device=args.device,
                           force=args.force)
    print(", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0
