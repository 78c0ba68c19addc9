"""``mpbench sync-tracking RUNS_DIR``: log stored runs into TensorBoard / MLflow afterwards."""
from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("sync-tracking", help="replay stored metrics.json files into the trackers "
                                             "(runs trained while a tracker was down, or before "
                                             "tracking was on); safe to repeat")
    p.add_argument("out", metavar="RUNS_DIR", help="an `mpbench run` output directory")
    p.add_argument("--tensorboard", action="store_true", default=None,
                   help="write TensorBoard event files (default: the suite's tracking:)")
    p.add_argument("--mlflow", metavar="URI", help="MLflow tracking URI (default: the suite's)")
    p.add_argument("--mlflow-experiment", help="MLflow experiment (default: the suite's, else "
                                               "its name)")
    p.set_defaults(func=run)


def run(args) -> int:
    from mpbench.suite.sync_tracking import sync_tracking, tracking_of
    from mpbench.training.tracking import check_tracking

    out = Path(args.out)
    tracking, suite_name = tracking_of(out, args.tensorboard, args.mlflow, args.mlflow_experiment)
    check_tracking(tracking, str(out / "suite.json"))  # a tracker package missing: exit 2
    counts = sync_tracking(out, tracking, suite_name)
    print(f"sync-tracking {out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 1 if counts["failed"] else 0
