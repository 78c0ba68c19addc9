"""The report's calibration and robustness section (#24): reliability bins by hand, pooling
over seeds, the table with old and new results mixed ("not measured", never 0), its
significance marks and comparisons, the reliability and corruption figures."""
from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from scipy import stats

from mpbench.report import aggregate, build_report, load_results
from mpbench.report.calibration_figures import pool_reliability
from mpbench.report.calibration_section import NOT_MEASURED
from mpbench.report.summary import label_order, suite_comparison_options
from mpbench.suite.runner import RESULT_COLUMNS
from mpbench.training.metrics import EvalScores

REPO = Path(__file__).resolve().parents[1]


def test_reliability_bins_against_hand_computation():
    # six images, two classes: confidences 0.95 (bin 14), 1.0 (bin 14: the top bin holds it),
    # 0.55, 0.58 (both bin 8: [8/15, 9/15) = [0.533, 0.6)), 0.62 (bin 9), 0.5 (bin 7)
    p = torch.tensor([[0.95, 0.05], [1.0, 0.0], [0.45, 0.55], [0.58, 0.42], [0.38, 0.62],
                      [0.5, 0.5]], dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 0, 1, 1])  # right, right, wrong, right, right, wrong (tie -> 0)
    s = EvalScores(torch.device("cpu"))
    s.update(p.clamp_min(1e-12).log().float(), y)
    rel = s.result("test")["test_reliability"]
    assert rel["count"] == [0] * 7 + [1, 2, 1, 0, 0, 0, 0, 2]
    want_conf = {7: 0.5, 8: (0.55 + 0.58) / 2, 9: 0.62, 14: (0.95 + 1.0) / 2}
    want_acc = {7: 0.0, 8: 0.5, 9: 1.0, 14: 1.0}
    for b in range(15):
        if b in want_conf:
            assert rel["conf"][b] == pytest.approx(want_conf[b], rel=1e-5)
            assert rel["acc"][b] == pytest.approx(want_acc[b])
        else:
            assert rel["conf"][b] is None and rel["acc"][b] is None


def test_pooling_over_seeds_weights_by_count():
    # seed 0: bin 0 holds 1 image (conf .1, acc 0), bin 1 holds 3 (conf .2, acc 1/3);
    # seed 1: bin 1 holds 1 (conf .4, acc 1); bin 2 empty in both
    a = {"count": [1, 3, 0], "conf": [0.1, 0.2, None], "acc": [0.0, 1 / 3, None]}
    b = {"count": [0, 1, 0], "conf": [None, 0.4, None], "acc": [None, 1.0, None]}
    pooled = pool_reliability([a, b])
    assert pooled["count"] == [1, 4, 0]
    assert pooled["conf"][0] == pytest.approx(0.1)
    assert pooled["conf"][1] == pytest.approx((3 * 0.2 + 0.4) / 4)   # not (0.2 + 0.4) / 2
    assert pooled["acc"][1] == pytest.approx((1 + 1) / 4)            # 2 of 4 images right
    assert pooled["conf"][2] is None and pooled["acc"][2] is None
    assert pool_reliability([]) is None


SUITE = {"name": "calfake", "seeds": [0, 1, 2], "budgets_gmacs": [0.01, 0.04],
         "dataset": {"name": "imagefolder"}, "reference": "resnet",
         "recipe": {"epochs": 3, "batch_size": 128, "lr": 0.1, "momentum": 0.9, "nesterov": True,
                    "weight_decay": 5e-4, "schedule": "cosine"},
         "models": [{"name": "cifar_resnet20", "label": "resnet"},
                    {"name": "mp_resnet20_p4_fdcc", "label": "mp"},
                    {"name": "cifar_wrn16_4", "label": "old"}]}
# budget 0.01: resnet and mp measured (3 seeds), "old" made before the scores existed;
# budget 0.04: only old results
ECE = {"resnet": [0.020, 0.021, 0.022], "mp": [0.100, 0.120, 0.110]}
NLL = {"resnet": [0.90, 0.95, 1.00], "mp": [0.91, 0.93, 1.02]}


def _bins(seed: int) -> dict:
    conf = [None] * 15
    acc = [None] * 15
    count = [0] * 15
    conf[10], acc[10], count[10] = 0.7, 0.6 + 0.01 * seed, 100
    conf[13], acc[13], count[13] = 0.9, 0.85, 50 + seed
    return {"conf": conf, "acc": acc, "count": count}


def write_results(root: Path) -> Path:
    rows = []
    for budget in (0.01, 0.04):
        for label, family in (("resnet", "resnet"), ("mp", "mp_resnet"), ("old", "wrn")):
            for seed in (0, 1, 2):
                run_id = f"{label}-b{budget:g}-s{seed}"
                row = {"suite": "calfake", "run_id": run_id, "model": f"m_{family}",
                       "label": label, "family": family, "budget_gmacs": budget,
                       "gmacs": budget, "params": 1e5, "deviation": 0.0, "knob": "width",
                       "knob_value": 16, "seed": seed, "epochs": 3,
                       "top1": 70.0 + seed + (2 if label == "mp" else 0), "top5": 90.0,
                       "status": "done", "dataset": "imagefolder", "device": "cpu"}
                new = budget == 0.01 and label != "old"
                if new:
                    row.update(nll=NLL[label][seed], ece=ECE[label][seed], brier=0.4 + seed / 100 + (0.05 if label == "mp" else 0),
                               corrupt_top1=(55.0 + 1.5 * seed) if label == "mp" else 50.0 + seed,
                               corrupt_set="mpbench-c", reliability=_bins(seed))
                run_dir = root / "runs" / run_id
                run_dir.mkdir(parents=True)
                (run_dir / "config.json").write_text(json.dumps({"model": row["model"],
                                                                 "args": {}, "seed": seed}))
                (run_dir / "result.json").write_text(json.dumps(row))
                rows.append(row)
    with open(root / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in RESULT_COLUMNS})
    (root / "suite.json").write_text(json.dumps(SUITE))
    (root / "plan.json").write_text(json.dumps([{"run_id": r["run_id"]} for r in rows]))
    return root


@pytest.fixture
def results(tmp_path) -> Path:
    return write_results(tmp_path / "runs" / "calfake")


def _summary(root: Path) -> list[dict]:
    rs = load_results(root)
    return aggregate(rs.rows, label_order(rs), **suite_comparison_options(rs.suite))


def _row(summary, label, budget):
    return next(a for a in summary if a["label"] == label and a["budget_gmacs"] == budget)


def test_summary_scores_significance_and_not_measured(results):
    summary = _summary(results)
    r, mp, old = (_row(summary, lab, 0.01) for lab in ("resnet", "mp", "old"))
    assert r["ece_mean"] == pytest.approx(0.021) and r["ece_std"] == pytest.approx(0.001)
    assert old["ece_mean"] is None and old["corrupt_top1_mean"] is None and old["ece_n"] == 0
    # ECE: resnet lower on every seed; the paired t test over 3 seeds (scipy's ttest_rel)
    p = stats.ttest_rel(ECE["mp"], ECE["resnet"]).pvalue
    assert mp["ece_vs_label"] == "resnet" and mp["ece_vs_p"] == pytest.approx(p)
    assert mp["ece_vs_diff"] == pytest.approx(0.089) and mp["ece_vs_test"] == "paired"
    assert mp["ece_vs_significant"] is True and p < 0.05
    assert r["ece_best"] and not mp["ece_best"]  # lower is better for ECE
    # corruption top-1: mp 5, 5.5, 6 points higher (higher is better)
    assert mp["corrupt_top1_best"] and mp["corrupt_top1_vs_diff"] == pytest.approx(5.5)
    # NLL: no clear winner -> both tied, the difference not significant
    assert r["nll_tied_best"] and mp["nll_tied_best"] and mp["nll_vs_significant"] is False
    # the 0.04 budget has no scores at all: nothing marked, nothing compared
    for lab in ("resnet", "mp", "old"):
        a = _row(summary, lab, 0.04)
        assert a["ece_mean"] is None and not a["ece_best"] and a["ece_vs_label"] is None


def test_section_renders_old_and_new_results_mixed(results, tmp_path):
    res = build_report(results, tmp_path / "rep", figures=False)
    md = (tmp_path / "rep" / "report.md").read_text()
    part = md[md.index("## Calibration and robustness"):]
    table = part.split("\n\n")[1].splitlines()
    assert table[0].startswith("| budget (GMACs) | model | family | NLL | ECE (%) | Brier |")
    assert "superclass" not in table[0]  # no row has superclass top-1 (not CIFAR-100)
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in table[2:]]
    assert [c[1] for c in cells] == ["resnet", "mp", "old"] * 2
    resnet_01, old_01, old_04 = cells[0], cells[2], cells[5]
    assert resnet_01[4] == "**2.10 ± 0.10** ★"        # ECE in percent, best and significant
    assert old_01[3:7] == [NOT_MEASURED] * 4 and old_04[3:7] == [NOT_MEASURED] * 4
    old_cmp = next(l for l in part.splitlines() if l.startswith("| old | resnet |"))
    assert old_cmp.count(NOT_MEASURED) == 4  # compared with nothing, and not as if 0
    assert "#### Budget 0.01 GMACs: scores against resnet" in part
    assert "#### Budget 0.04" not in part  # nothing measured there: nothing to compare
    mp_line = next(l for l in part.splitlines() if l.startswith("| mp | resnet |"))
    assert "+8.90" in mp_line and "worse" in mp_line  # ECE up: worse
    assert "15 equal-width confidence bins" in part and "top-label" in part
    assert "`mpbench-c`: mpbench's own built-in set, not CIFAR-10-C" in part
    assert "mpbench evaluate RUNS_DIR" in part
    # summary.csv: the scores' columns, empty (not 0) where not measured
    with open(tmp_path / "rep" / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    old = next(r for r in rows if r["label"] == "old" and r["budget_gmacs"] == "0.01")
    new = next(r for r in rows if r["label"] == "resnet" and r["budget_gmacs"] == "0.01")
    assert old["ece_mean"] == "" and old["corrupt_top1_mean"] == "" and old["ece_best"] == "0"
    assert float(new["ece_mean"]) == pytest.approx(0.021) and new["corrupt_set"] == "mpbench-c"
    assert res["summary"]


def test_reliability_and_corruption_figures_written(results, tmp_path):
    build_report(results, tmp_path / "rep")
    figs = tmp_path / "rep" / "figures"
    for stem in ("reliability_b0.01", "corrupt_vs_clean"):
        assert (figs / f"{stem}.png").stat().st_size > 1000
        assert (figs / f"{stem}.svg").exists()
    assert not (figs / "reliability_b0.04.png").exists()  # no run there stored bins
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "![Corruption top-1 vs clean top-1](figures/corrupt_vs_clean.png)" in md
    assert "(figures/reliability_b0.01.png)" in md


def test_committed_reports_regenerate_with_the_scores_not_measured(tmp_path):
    from mpbench.report import regenerate_all

    shutil.copytree(REPO / "reports", tmp_path / "reports")
    done = regenerate_all(tmp_path / "reports", echo=lambda m: None)
    assert done
    for res in done:
        out = Path(res["out"])
        md = (out / "report.md").read_text()
        assert "## Calibration and robustness" in md and NOT_MEASURED in md
        committed = REPO / "reports" / out.name
        for name in ("report.md", "summary.csv", "table.tex"):
            assert (out / name).read_text() == (committed / name).read_text(), name


def test_comparisons_are_holm_corrected_over_the_budget():
    from mpbench.report.calibration import score_fields, score_significance

    vals = {"ref": [0.10, 0.11, 0.13], "a": [0.20, 0.22, 0.21], "b": [0.12, 0.14, 0.13]}
    summary = []
    for lab, xs in vals.items():
        done = [{"seed": s, "ece": x, "run_id": f"{lab}{s}"} for s, x in enumerate(xs)]
        summary.append({"dataset": "d", "budget_gmacs": 1.0, "label": lab, "ref_label": "ref",
                        "best_label": "ref", "significance_level": 0.05,
                        "significance_correction": "holm", "n_done": 3,
                        **score_fields(done, done)})
    score_significance(summary)
    pa = stats.ttest_rel(vals["a"], vals["ref"]).pvalue
    pb = stats.ttest_rel(vals["b"], vals["ref"]).pvalue
    # Holm over two: the smaller p times 2, the larger times 1, kept monotone
    lo, hi = sorted([pa, pb])
    adj = {lo: min(1.0, 2 * lo), hi: max(min(1.0, 2 * lo), hi)}
    want = {pa: adj[pa], pb: adj[pb]}
    a, b = summary[1], summary[2]
    assert a["ece_vs_p"] == pytest.approx(pa) and b["ece_vs_p"] == pytest.approx(pb)
    assert a["ece_vs_p_adj"] == pytest.approx(want[pa])
    assert b["ece_vs_p_adj"] == pytest.approx(want[pb])
    assert summary[0]["ece_vs_label"] is None  # the reference row itself
