"""Expand a suite into runs with stable ids, matched budgets and recorded complexity.

Planning happens entirely before training: every model name, argument set and budget is
checked here, so a typo or an unreachable budget stops the suite with one line and nothing
written, instead of failing on day three.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from mpbench.config import Recipe, Suite, SuiteError
from mpbench.errors import UserError


@dataclass(frozen=True)
class RunPlan:
    suite: str
    run_id: str
    model: str          # registry name
    label: str          # how results name it
    family: str
    args: dict          # full builder arguments, knob and num_classes included
    seed: int
    budget_gmacs: float | None
    gmacs: float
    params: int
    knob: str | None
    knob_value: Any
    deviation: float | None  # (gmacs - budget) / budget
    # a tuned suite's final run (mpbench.suite.tune): {"values": the best trial's recipe
    # values, "trials", "best_val_top1", "cost_s"}; None for every other run
    tune: dict | None = None

    def as_dict(self) -> dict:
        out = asdict(self)
        if out["tune"] is None:  # plan.json of untuned suites stays as it was
            del out["tune"]
        return out


def suite_for(suite: Suite, plan: RunPlan) -> Suite:
    """The suite a plan trains with: a tuned final run's recipe carries its chosen values."""
    if not plan.tune:
        return suite
    recipe = Recipe.model_validate({**suite.recipe.model_dump(), **plan.tune["values"]})
    return suite.model_copy(update={"recipe": recipe})


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "-", text).strip("-")


def run_id(label: str, budget: float | None, seed: int) -> str:
    """Stable, readable id: ``<label>[-b<budget>g]-s<seed>``."""
    budget_part = f"-b{budget:g}g" if budget is not None else ""
    return f"{slug(label)}{budget_part}-s{seed}"


def plan_suite(suite: Suite, source: str = "<suite>", data_root=None) -> list[RunPlan]:
    """Every (model, budget, seed) of the suite, matched and counted; raises on any problem."""
    from mpbench.complexity import count_model
    from mpbench.complexity.matching import BudgetError, match_budget, suite_geometry
    from mpbench.plugins import load_plugins
    from mpbench.registry import get_entry

    load_plugins(suite.plugins, source)
    check_val_split(suite, source, data_root)
    input_size, num_classes = suite_geometry(suite, data_root, source=source)
    if suite.recipe.input_size:  # batches are resized on the device: count at that size
        input_size = (input_size[0], suite.recipe.input_size, suite.recipe.input_size)
    plans: list[RunPlan] = []
    for i, spec in enumerate(suite.models):
        field = f"{source}: models[{i}]"
        try:
            entry = get_entry(spec.name)
        except UserError as exc:
            raise SuiteError(f"{field}.name: {exc}") from None
        args = {**spec.args, "num_classes": num_classes, "in_chans": input_size[0]}
        budgets = suite.budgets_gmacs if (suite.budgets_gmacs and spec.match) else (None,)
        for budget in budgets:
            try:
                if budget is None:
                    c = count_model(spec.name, args, input_size=input_size, num_classes=num_classes)
                    full_args, knob, value, gmacs, params, dev = (
                        entry.args(**args), entry.knob.name if entry.knob else None,
                        entry.args(**args).get(entry.knob.name) if entry.knob else None,
                        c.gmacs, c.params, None)
                else:
                    m = match_budget(spec.name, budget, args, input_size=input_size,
                                     num_classes=num_classes, tolerance=suite.tolerance)
                    # a depth adjusted in width reads "56 (width 16.7)"; args carry both
                    full_args, knob, value, gmacs, params, dev = (
                        m.args, m.knob, m.knob_text if m.adjust else m.knob_value, m.gmacs,
                        m.params, m.deviation)
            except BudgetError as exc:
                raise SuiteError(f"{source}: budgets_gmacs: {exc}") from None
            except UserError as exc:
                raise SuiteError(f"{field}: {exc}") from None
            except (TypeError, ValueError, AssertionError) as exc:
                raise SuiteError(f"{field}.args: {spec.name} cannot be built with "
                                 f"{spec.args}: {exc}") from None
            if spec.init is not None:  # a missing/unusable init stops the suite here
                from mpbench.suite.starts import check_init
                check_init(spec, full_args, f"{field}.init")
            for seed in suite.seeds:
                plans.append(RunPlan(
                    suite.name, run_id(spec.display, budget, seed), spec.name, spec.display,
                    entry.family, _plain(full_args), seed, budget, gmacs, params, knob, value, dev))
    return plans


def check_val_split(suite: Suite, source: str = "<suite>", data_root=None) -> None:
    """An image folder's ``dataset.val_split`` against its class folders, before anything is
    written (the suite schema checks CIFAR and synthetic sets, whose sizes it knows). A folder
    that cannot be read here is left to planning, which says why (or plans from the suite's
    ``num_classes`` alone)."""
    ds = suite.dataset
    if ds.name != "imagefolder" or not ds.val_split:
        return
    from mpbench.data import DataError, load_dataset

    try:
        load_dataset(ds, data_root)  # subset and split exactly as training will
    except DataError as exc:
        if str(exc).startswith("dataset.val_split:"):
            raise SuiteError(f"{source}: {exc}") from None


def _plain(args: dict) -> dict:
    """JSON-friendly arguments (tuples become lists) so configs compare after a round trip."""
    def conv(v):
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v
    return {k: conv(v) for k, v in sorted(args.items())}
