"""How long budget matching takes, per model family and budget (issue: at most 2 s a match).

    python benchmarks/match_speed.py                    # one model per family + deep ones
    python benchmarks/match_speed.py --models cifar_wrn28_10 --budgets 0.13 0.56

Every match starts cold (count caches cleared). Reported per match: wall time, process CPU
time (what the match itself used: on a shared machine wall time also includes waiting for
the cores), how many fast estimates and fvcore counts the search made, and the answer.
Imports and the first trace (about 3 s, once per process) are reported separately.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

DEFAULT_MODELS = (
    # one per family (shallow variants) ...
    "cifar_resnet56", "cifar_resnet18", "cifar_wrn16_4", "cifar_wrn28_10",
    "cifar_resnext29_8x8d_w16", "cifar_se_resnet20", "cifar_skresnet20",
    "cifar_resnest29_2s1x24d_w16", "cifar_res2net29_16wx4s_w16", "ensemble_resnet20_x3",
    "mp_resnet20_p4_fdcc",
    # ... and the deepest / most-module ones, where one fvcore trace dominates
    "cifar_se_resnet110", "mp_resnet56_p4_fdcc", "ensemble_resnet56_x4",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=None)
    parser.add_argument("--budgets", nargs="+", type=float, default=[0.04, 0.13, 0.56])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    t0, c0 = time.perf_counter(), time.process_time()
    from mpbench import complexity
    from mpbench.complexity.matching import BudgetError, match_budget
    from mpbench.registry import list_models

    complexity.count_model("cifar_resnet20")  # imports, first trace, oneDNN warm-up
    warmup = (time.perf_counter() - t0, time.process_time() - c0)

    known = {e.name for e in list_models()}
    models = [m for m in (args.models or DEFAULT_MODELS) if m in known]
    rows = []
    for name in models:
        for budget in args.budgets:
            complexity.clear_cache()
            t, c = time.perf_counter(), time.process_time()
            try:
                m = match_budget(name, budget)
                status, result = "OK", m
            except BudgetError as err:
                status, result = "REFUSED", err.closest
            wall, cpu = time.perf_counter() - t, time.process_time() - c
            t = time.perf_counter()
            match_budget(name, budget) if status == "OK" else None
            warm = time.perf_counter() - t
            rows.append(dict(model=name, budget=budget, wall_s=round(wall, 2),
                             cpu_s=round(cpu, 2), warm_ms=round(warm * 1e3, 3),
                             estimates=len(complexity.counting._ESTIMATE_CACHE),
                             fvcore_counts=len(complexity.counting._COUNT_CACHE),
                             knob=f"{result.knob}={result.knob_value}",
                             gmacs=round(result.gmacs, 4),
                             deviation=round(result.deviation, 4), status=status))
            if not args.json:
                r = rows[-1]
                print(f"{name:30s} {budget:5g}  wall {wall:5.2f}s  cpu {cpu:5.2f}s  "
                      f"est {r['estimates']}  fvcore {r['fvcore_counts']}  "
                      f"{r['knob']:22s} {r['deviation']:+.2%}  {status}", flush=True)

    cpu = [r["cpu_s"] for r in rows]
    summary = dict(warmup_wall_s=round(warmup[0], 2), warmup_cpu_s=round(warmup[1], 2),
                   matches=len(rows), median_cpu_s=statistics.median(cpu) if cpu else None,
                   max_cpu_s=max(cpu, default=None),
                   within_2s_cpu=sum(c <= 2 for c in cpu),
                   within_2s_wall=sum(r["wall_s"] <= 2 for r in rows))
    if args.json:
        print(json.dumps({"summary": summary, "rows": rows}, indent=2))
    else:
        print(f"\nwarm-up (imports + first trace, once per process): {warmup[0]:.2f}s wall, "
              f"{warmup[1]:.2f}s cpu")
        print(f"{summary['matches']} matches: median cpu {summary['median_cpu_s']}s, max "
              f"{summary['max_cpu_s']}s; within 2 s: {summary['within_2s_cpu']} by cpu time, "
              f"{summary['within_2s_wall']} by wall time; cached repeat: < 1 ms")


if __name__ == "__main__":
    main()
