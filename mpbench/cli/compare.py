"""``mpbench compare RUNS_DIR LABEL_A LABEL_B``: is A really better than B?

Prints the report's comparison of two result labels in each budget where both have results
(only ``--budget``'s when given): both means over seeds, the difference in top-1 with its
confidence interval (a paired t test over the seeds both finished, Welch's t test otherwise),
the p-value and the probability that A beats B. Reads the results; writes nothing.
"""
from __future__ import annotations

import json


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="the report's statistics for any two result labels",
                       description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("runs_dir", metavar="RUNS_DIR",
                   help="an `mpbench run` output directory, or a report's results/ folder")
    p.add_argument("label_a", metavar="LABEL_A")
    p.add_argument("label_b", metavar="LABEL_B")
    p.add_argument("--budget", type=float, metavar="G", help="only this budget (GMACs)")
    p.add_argument("--level", type=float,
                   help="significance level (default: the suite's significance_level, 0.05)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args) -> int:
    from mpbench.report.comparisons import compare_labels, format_comparison

    recs = compare_labels(args.runs_dir, args.label_a, args.label_b, budget=args.budget,
                          level=args.level)
    if args.json:
        print(json.dumps(recs, indent=2, sort_keys=True))
    else:
        print("\n\n".join(format_comparison(r) for r in recs))
    return 0
