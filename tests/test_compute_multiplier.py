"""Compute-equivalent multipliers (issue 23) on synthetic results whose accuracy is exactly
linear in log2(MACs): top-1 = 10 + 5 * log2(GMACs) for the reference (1, 2, 4 GMACs -> 10, 15,
20). Every expected number is a hand computation: a row at c GMACs with mean top-1 y is worth
2 ** ((y - 10) / 5) / c times the reference's compute."""
from __future__ import annotations

import csv
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from mpbench.report import aggregate, build_report, load_results
from mpbench.report.comparisons import compare_labels, format_comparison
from mpbench.report.multiplier import multiplier
from mpbench.suite.runner import RESULT_COLUMNS

REF_COSTS = [1.0, 2.0, 4.0]
FLAT_REF = [[10.0] * 3, [15.0] * 3, [20.0] * 3]  # no spread between seeds


def worth(y: float, cost: float) -> float:
    return 2 ** ((y - 10.0) / 5.0) / cost


def test_zero_spread_gives_the_hand_value_and_a_collapsed_interval():
    m = multiplier(1.0, [17.5] * 3, REF_COSTS, FLAT_REF)
    assert m.value == pytest.approx(2 ** 1.5)  # log-linear: needs 2^1.5 GMACs
    assert (m.ci_low, m.ci_high) == (pytest.approx(2 ** 1.5), pytest.approx(2 ** 1.5))
    assert m.position == "inside" and not m.extrapolated and m.resamples == 10_000
    m = multiplier(2.0, [12.5, 12.5], REF_COSTS, FLAT_REF)  # on the first segment, costlier row
    assert m.value == pytest.approx(2 ** 0.5 / 2)


def test_row_spread_alone_interval_is_the_two_extreme_resample_means():
    """Reference without spread; row seeds {16, 18}: a resample's mean is 16, 17 or 18 with
    chances 1/4, 1/2, 1/4, so the 2.5% and 97.5% quantiles are the extremes."""
    m = multiplier(1.0, [16.0, 18.0], REF_COSTS, FLAT_REF, resamples=4000)
    assert m.value == pytest.approx(worth(17.0, 1.0))
    assert m.ci_low == pytest.approx(worth(16.0, 1.0))
    assert m.ci_high == pytest.approx(worth(18.0, 1.0))


def _exact_bootstrap_interval(cost, row, ref, level=0.95):
    """Every equally likely resample of the row's and each reference point's seeds
    enumerated; the curve joined in log2 cost with numpy's interp (the resampled means stay
    increasing, so no pooling is needed); the inverted-CDF quantiles."""
    def means(sample):
        return [float(np.mean(c)) for c in itertools.product(sample, repeat=len(sample))]
    vals = []
    for combo in itertools.product(means(row), *[means(s) for s in ref]):
        y, curve = combo[0], combo[1:]
        assert all(a < b for a, b in zip(curve, curve[1:])) and curve[0] <= y <= curve[-1]
        vals.append(2 ** np.interp(y, curve, np.log2(REF_COSTS)) / cost)
    vals = np.sort(vals)
    tail = (1 - level) / 2
    # inverted CDF: the smallest value whose cumulative share reaches q
    lo = vals[math.ceil(tail * len(vals)) - 1]
    hi = vals[math.ceil((1 - tail) * len(vals)) - 1]
    return float(lo), float(hi)


def test_interval_resamples_row_and_reference_against_an_exact_enumeration():
    row = [15.0, 18.0]
    ref = [[9.0, 11.0], [14.0, 16.0], [19.5, 20.5]]  # means 10, 15, 20: the same curve
    lo, hi = _exact_bootstrap_interval(1.0, row, ref)
    m = multiplier(1.0, row, REF_COSTS, ref, resamples=200_000, seed=3)
    assert m.value == pytest.approx(worth(16.5, 1.0))
    assert (m.ci_low, m.ci_high) == (pytest.approx(lo), pytest.approx(hi))
    # the reference's spread matters: the row's resampling alone gives a narrower interval
    assert lo < worth(15.0, 1.0) * 1.0001 and hi > worth(18.0, 1.0) * 0.9999
    narrow = multiplier(1.0, row, REF_COSTS, FLAT_REF, resamples=20_000)
    assert narrow.ci_high - narrow.ci_low < (hi - lo) * 0.9


def test_outside_the_curve_is_a_note_and_extrapolation_stops_after_one_step():
    below = multiplier(1.0, [9.0] * 3, REF_COSTS, FLAT_REF)  # no extrapolation by default
    assert (below.value, below.position, below.bound) == (None, "below", 1.0)
    assert (below.ci_low, below.ci_high) == (None, None)
    above = multiplier(1.0, [21.0] * 3, REF_COSTS, FLAT_REF)
    assert (above.value, above.position, above.bound) == (None, "above", 4.0)
    # one step = the end segment's own length (1 -> 0.5 GMACs, 4 -> 8 GMACs)
    m = multiplier(1.0, [7.5] * 3, REF_COSTS, FLAT_REF, extrapolate=True)
    assert m.value == pytest.approx(2 ** -0.5) and m.extrapolated and m.position == "below"
    m = multiplier(1.0, [24.0] * 3, REF_COSTS, FLAT_REF, extrapolate=True)
    assert m.value == pytest.approx(2 ** 2.8) and m.extrapolated and m.position == "above"
    for y in (4.9, 25.1):  # beyond 0.5 / 8 GMACs: no number
        m = multiplier(1.0, [y] * 3, REF_COSTS, FLAT_REF, extrapolate=True)
        assert m.value is None and not m.extrapolated and m.ci_low is None


def test_a_non_monotone_reference_is_pooled_and_the_smallest_cost_is_read():
    # means 10, 16, 14: isotonic pools the last two (15, 15); 12.5 sits on the first segment
    m = multiplier(1.0, [12.5] * 2, REF_COSTS, [[10.0] * 2, [16.0] * 2, [14.0] * 2])
    assert m.curve.top1 == (10.0, 15.0, 15.0)
    assert m.value == pytest.approx(2 ** 0.5)
    assert multiplier(1.0, [15.5] * 2, REF_COSTS, [[10.0] * 2, [16.0] * 2, [14.0] * 2]
                      ).position == "above"


# --- the report: summary.csv, the section, the figure, mpbench compare -----------------------

def _rows(ref_budgets=REF_COSTS, mp=((1.0, 17.5), (2.0, 22.5), (4.0, 31.0)), speed=True):
    """(label, family, knob, budget, seed, top1, train img/s): the reference resnet exactly on
    the curve; its training speed 1000 / GMACs img/s (time per image proportional to MACs),
    the mp row half as fast at the same MACs (its wall-clock worth: half its MACs worth)."""
    out = []
    for g in ref_budgets:
        for s in range(3):
            out.append(("resnet-depth", "resnet", "depth", g, s, 10 + 5 * math.log2(g),
                        1000.0 / g if speed else None))
    for g, y in mp:  # y: one top-1 for every seed, or one per seed
        for s, ys in enumerate(y if isinstance(y, tuple) else (y,) * 3):
            out.append(("mp", "mp_resnet", "width", g, s, ys, 500.0 / g if speed else None))
    return out


def write_results(root: Path, runs, reference: str | None = "resnet-depth") -> Path:
    root.mkdir(parents=True)
    suite = {"name": "lin", "seeds": [0, 1, 2], "budgets_gmacs": sorted({r[3] for r in runs}),
             "dataset": {"name": "synthetic"},
             "models": [{"name": "cifar_resnet20", "label": "resnet-depth"},
                        {"name": "mp_resnet20_p4_fdcc", "label": "mp"}]}
    if reference:
        suite["reference"] = reference
    (root / "suite.json").write_text(json.dumps(suite))
    with open(root / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=RESULT_COLUMNS)
        w.writeheader()
        for label, family, knob, g, seed, top1, speed in runs:
            w.writerow({k: "" for k in RESULT_COLUMNS} | {
                "suite": "lin", "run_id": f"{label}-b{g:g}g-s{seed}", "model": label,
                "label": label, "family": family, "budget_gmacs": g, "gmacs": g, "knob": knob,
                "seed": seed, "epochs": 1, "top1": top1, "status": "done",
                "dataset": "synthetic", "speed_train_img_s": "" if speed is None else speed})
    return root


def _by(summary, label, budget):
    return next(a for a in summary if a["label"] == label and a["budget_gmacs"] == budget)


@pytest.mark.parametrize("reference", ["resnet-depth", None])  # None: the resnet family
def test_summary_fields_on_a_log_linear_curve(tmp_path, reference):
    rs = load_results(write_results(tmp_path / "r", _rows(), reference))
    summary = aggregate(rs.rows, ["resnet-depth", "mp"], reference=reference)
    a = _by(summary, "mp", 1.0)
    assert a["compute_multiplier_ref"] == "resnet-depth"
    assert a["compute_multiplier"] == pytest.approx(2 ** 1.5)
    assert a["compute_multiplier_ci_low"] == pytest.approx(2 ** 1.5)
    assert a["compute_multiplier_ci_high"] == pytest.approx(2 ** 1.5)
    assert a["compute_multiplier_note"] == ""
    assert a["wallclock_multiplier"] == pytest.approx(2 ** 1.5 / 2)
    b = _by(summary, "mp", 2.0)  # 22.5 -> 2^2.5 GMACs: beyond 4, within one step (8)
    assert b["compute_multiplier"] == pytest.approx(2 ** 2.5 / 2)
    assert b["compute_multiplier_note"].startswith("extrapolated above")
    c = _by(summary, "mp", 4.0)  # 31 > 25 (the curve at 8 GMACs): no number
    assert c["compute_multiplier"] is None and c["compute_multiplier_ci_low"] is None
    assert c["compute_multiplier_note"] == "above the reference's range"
    assert _by(summary, "resnet-depth", 2.0)["compute_multiplier_note"] == "the reference"


def test_report_section_csv_figure_and_compare(tmp_path):
    root = write_results(tmp_path / "r", _rows())
    res = build_report(root, tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    section = md.split("## Compute-equivalent", 1)[1].split("\n## ", 1)[0]
    assert "**2.83×** [2.83×, 2.83×]" in section
    assert "above the reference's range (> 1×)" in section
    assert "10,000 resamples" in section and "(extrapolated)" in section
    assert "**1.41×** [1.41×, 1.41×]" in section  # wall-clock: half as fast
    assert "![Compute-equivalent](figures/compute_equivalent.png)" in section
    assert "### Compute-equivalent" not in md  # shown in its section, not again in Figures
    assert (tmp_path / "rep" / "figures" / "compute_equivalent.png").stat().st_size > 1000
    with open(tmp_path / "rep" / "summary.csv", newline="") as f:
        rows = {(r["label"], r["budget_gmacs"]): r for r in csv.DictReader(f)}
    assert float(rows[("mp", "1")]["compute_multiplier"]) == pytest.approx(2 ** 1.5, rel=1e-6)
    assert rows[("mp", "4")]["compute_multiplier"] == ""
    assert rows[("mp", "4")]["compute_multiplier_note"] == "above the reference's range"
    assert rows[("mp", "4")]["compute_multiplier_ci_low"] == ""
    assert res["summary"]

    recs = compare_labels(root, "mp", "resnet-depth", budget=1.0)
    assert recs[0]["multiplier"]["compute_multiplier"]["value"] == pytest.approx(2 ** 1.5)
    assert "mp worth 2.83× resnet-depth's compute [2.83×, 2.83×]" in format_comparison(recs[0])
    # against a curve of one budget: no multiplier
    one = write_results(tmp_path / "one", _rows(ref_budgets=[1.0], mp=((1.0, 12.0),)))
    assert compare_labels(one, "mp", "resnet-depth")[0]["multiplier"] is None


def test_one_budget_gives_no_section_and_says_why(tmp_path):
    root = write_results(tmp_path / "r", _rows(ref_budgets=[1.0], mp=((1.0, 12.0),)))
    build_report(root, tmp_path / "rep", figures=False)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Compute-equivalent" not in md
    assert ("Compute-equivalent multipliers: not given, the reference (resnet-depth) has "
            "results at 1 budget only") in md
    with open(tmp_path / "rep" / "summary.csv", newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["label"] == "mp")
    assert row["compute_multiplier"] == ""
    assert row["compute_multiplier_note"] == "the reference (resnet-depth) has results at one " \
                                             "budget only"


def test_old_results_without_speed_report_wallclock_not_measured(tmp_path):
    rs = load_results(write_results(tmp_path / "r", _rows(speed=False)))
    a = _by(aggregate(rs.rows, reference="resnet-depth"), "mp", 1.0)
    assert a["compute_multiplier"] == pytest.approx(2 ** 1.5)
    assert a["wallclock_multiplier"] is None
    assert a["wallclock_multiplier_note"] == "training speed not measured"


def test_a_mean_beyond_the_curve_gets_no_interval_either(tmp_path):
    """Seeds 20, 20, 53 at 4 GMACs: the mean, 31, is beyond the curve's one-step extension
    (25 at 8 GMACs) though some resamples (20, 20, 20) are inside: a note, no lone interval."""
    rs = load_results(write_results(tmp_path / "r", _rows(mp=((4.0, (20.0, 20.0, 53.0)),))))
    a = _by(aggregate(rs.rows, reference="resnet-depth"), "mp", 4.0)
    m = a["compute_equivalent"]["compute_multiplier"]
    assert m.value is None and m.share_above < 1.0  # resamples inside exist
    assert (a["compute_multiplier"], a["compute_multiplier_ci_low"],
            a["compute_multiplier_ci_high"]) == (None, None, None)
    assert a["compute_multiplier_note"] == "above the reference's range"
