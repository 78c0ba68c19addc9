"""Every shipped suite plans as ``mpbench flops --suite`` shows it: every (model, budget)
matched within the suite's tolerance (the published configurations a suite trains as given,
``match: false``, excepted), nothing refused (a knob at an end of its range, a
degenerate structure) and nothing failing to build mid-search. ``slow``: the paper-protocol
and ImageNet suites match dozens of models (minutes). Image-folder suites that need their data
(the CIFAR-10 JPEG copy) skip, saying so, where ``../shared/data/cifar10-jpg`` is absent; the
ImageNet suites are planned from the suite alone (their data never is here)."""
from __future__ import annotations

from pathlib import Path

import pytest

from mpbench.complexity.matching import BudgetError, Match, match_suite
from mpbench.config import load_suite
from mpbench.plugins import load_plugins

REPO = Path(__file__).resolve().parents[1]
SUITES = sorted((REPO / "suites").glob("*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("path", SUITES, ids=[p.stem for p in SUITES])
def test_shipped_suite_matches_within_tolerance(path):
    suite = load_suite(path)
    load_plugins(suite.plugins, str(path))
    data_root = None
    ds = suite.dataset
    if ds.name == "imagefolder" and ds.root and not Path(ds.root).is_absolute():
        data_root = REPO / ds.root  # suites give roots relative to the repository
        if not data_root.exists() and not ds.num_classes:
            pytest.skip(f"{path.name} needs its data: {data_root} is absent")
    rows = match_suite(suite, data_root=data_root)
    refused = [str(r) for r in rows if isinstance(r, BudgetError)]
    assert not refused, refused
    as_given = {m.label or m.name for m in suite.models if not m.match}  # published configs
    matched = [r for r in rows if isinstance(r, Match) and r.display not in as_given]
    assert matched or not suite.budgets_gmacs
    off = [(r.display, r.budget_gmacs, r.deviation) for r in matched
           if abs(r.deviation) > suite.tolerance]
    assert not off, off
