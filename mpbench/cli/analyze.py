"""``mpbench analyze RUN_DIR``: do the paths of a trained multi-path model specialise?"""
from __future__ import annotations

import json


def add_parser(sub) -> None:
    p = sub.add_parser("analyze", help="path usage per class/superclass and a specialisation "
                                       "score of a trained multi-path run")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished run's directory")
    p.add_argument("--out", help="output folder (default: RUN_DIR/analysis)")
    p.add_argument("--data-root", help="where the data sets are (as for `mpbench run`)")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from mpbench.report.analyze import analyze_run

    result = analyze_run(args.run_dir, args.out, args.data_root, device=args.device)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return 0
    print(f"{args.run_dir}: {result['paths']} paths, {len(result['layers'])} cross-connections, "
          f"{result['num_samples']} test images, usage along the {result['axis']} axis")
    print("specialisation = NMI(label; path usage): 0 = usage ignores the label, "
          "1 = label determines the path")
    print(f"{'level':<11} {'trained':>8} {'untrained':>10} {'shuffled labels':>16}")
    for level, s in result["specialisation"].items():
        print(f"{level:<11} {s['trained']:>8.4f} {s['untrained']:>10.4f} {s['shuffled']:>16.4f}")
    for path in result["files"]:
        print(f"wrote {path}")
    return 0
