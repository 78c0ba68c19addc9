"""``mpbench list``: registered models with their family and complexity knob."""
from __future__ import annotations

import json


def add_parser(sub) -> None:
    p = sub.add_parser("list", help="registered models, families and knobs")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--family", help="only this family")
    p.set_defaults(func=run)


def run(args) -> int:
    from mpbench.registry import list_models

    entries = list_models(args.family)
    rows = [{"name": e.name, "family": e.family, "knob": e.knob.describe() if e.knob else None,
             "defaults": e.defaults, "doc": e.doc} for e in entries]
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    width = max((len(r["name"]) for r in rows), default=4)
    fam = max((len(r["family"]) for r in rows), default=6)
    print(f"{'model':<{width}}  {'family':<{fam}}  knob")
    for r in rows:
        print(f"{r['name']:<{width}}  {r['family']:<{fam}}  {r['knob'] or '-'}")
    return 0
