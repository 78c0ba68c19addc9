"""Significance in reports and `mpbench compare`: expected numbers computed by hand.

Budget 0.01 ("clear"): A = 80, 81, 82 and B = 70, 71.5, 72 on seeds 0, 1, 2.
  paired d = A - B = 10, 9.5, 10: mean 9.8333, deviations 1/6, -1/3, 1/6, SS = 1/6,
  var = 1/12, sd = 0.288675, se = sd/sqrt(3) = 0.166667, t = 59.0, df = 2;
  t_{0.975,2} = 4.302653 -> CI 9.8333 -/+ 0.717109 = [9.1162, 10.5504]; p << 0.05.
Budget 0.04 ("close"): A = 80, 82, 84 and B = 79, 83, 81.
  d = 1, -1, 3: mean 1, deviations 0, -2, 2, var 4, sd 2, se 1.154701, t = 0.866025,
  CI 1 -/+ 4.302653 * 1.154701 = [-3.9684, 5.9684]; two-sided p = 0.4778 (t table, df 2);
  A ahead on 2 of 3 seeds -> P(A beats B) = 0.667. C has one seed: no test possible.
"""
from __future__ import annotations

import csv
import json

import pytest

from mpbench.cli import main
from mpbench.report import aggregate, build_report, load_results
from mpbench.report.comparisons import compare_labels
from tests.test_report import SUITE, write_fake_results

RUNS = [
    ("A", "mp_resnet", 0.01, 0, "done", 80.0), ("A", "mp_resnet", 0.01, 1, "done", 81.0),
    ("A", "mp_resnet", 0.01, 2, "done", 82.0),
    ("B", "resnet", 0.01, 0, "done", 70.0), ("B", "resnet", 0.01, 1, "done", 71.5),
    ("B", "resnet", 0.01, 2, "done", 72.0),
    ("A", "mp_resnet", 0.04, 0, "done", 80.0), ("A", "mp_resnet", 0.04, 1, "done", 82.0),
    ("A", "mp_resnet", 0.04, 2, "done", 84.0),
    ("B", "resnet", 0.04, 0, "done", 79.0), ("B", "resnet", 0.04, 1, "done", 83.0),
    ("B", "resnet", 0.04, 2, "done", 81.0),
    ("C", "wrn", 0.04, 0, "done", 60.0),
]


def make(tmp_path, reference=None, published=None, speeds=None):
    root = write_fake_results(tmp_path / "runs", RUNS, analysis=False)
    suite = {**SUITE, "models": [{"name": "m_a", "label": "A"}, {"name": "m_b", "label": "B"},
                                 {"name": "m_c", "label": "C"}]}
    if reference:
        suite["reference"] = reference
    if published:
        for m in suite["models"]:
            if m["label"] in published:
                m["reference"] = published[m["label"]]
    (root / "suite.json").write_text(json.dumps(suite))
    if speeds:  # label -> (train img/s, infer img/s): the columns `mpbench bench` adds
        rows = list(csv.DictReader(open(root / "results.csv")))
        cols = list(rows[0]) + ["speed_train_img_s", "speed_infer_img_s", "speed_device"]
        with open(root / "results.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            for r in rows:
                tr, inf = speeds[r["label"]]
                w.writerow({**r, "speed_train_img_s": tr, "speed_infer_img_s": inf,
                            "speed_device": "cuda:0 (H200)"})
        for mpath in root.glob("runs/*/metrics.json"):  # per-epoch training wall-clock
            m = json.loads(mpath.read_text())
            mpath.write_text(json.dumps([{**e, "epoch_time_s": 10.0 * e["epoch"]} for e in m]))
    return root


def _row(summary, label, budget):
    return next(a for a in summary if a["label"] == label and a["budget_gmacs"] == budget)


def test_clear_winner_marked_close_rows_tied(tmp_path):
    rs = load_results(make(tmp_path))
    s = aggregate(rs.rows, ["A", "B", "C"])
    a, b = _row(s, "A", 0.01), _row(s, "B", 0.01)
    assert a["best"] and not a["tied_best"] and not b["best"] and not b["tied_best"]
    c = b["vs_best"]  # B - A
    assert c.test == "paired" and c.n_pairs == 3
    assert c.diff == pytest.approx(-9.8333, abs=1e-4)
    assert (c.ci_low, c.ci_high) == pytest.approx((-10.5504, -9.1162), abs=1e-4)
    assert c.t == pytest.approx(-59.0, abs=1e-6) and c.p_value < 0.001
    # close: nobody is best; A, B tied; C (one seed) cannot be shown worse: tied too
    a4, b4, c4 = (_row(s, lab, 0.04) for lab in "ABC")
    assert not any(x["best"] for x in (a4, b4, c4))
    assert all(x["tied_best"] for x in (a4, b4, c4))
    assert b4["vs_best"].p_value == pytest.approx(0.4778, abs=1e-3)
    assert c4["vs_best"].test == "none"


def test_report_markdown_shows_marks_and_comparisons(tmp_path):
    build_report(make(tmp_path), tmp_path / "rep", figures=False)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| **A** ★ |" in md and "| A (tied best) |" in md and "| B (tied best) |" in md
    assert "test top-1 (%)" in md
    assert "### Budget 0.01 GMACs: each row against the best mean (A)" in md
    # B vs A at 0.01, hand-computed above
    assert "| B | A | -9.83 | [-10.55, -9.12] |" in md and "| 3 paired | paired t | worse |" in md
    # p, then p (Holm): C has no test, so B's is a family of one, unchanged
    assert "| B | A | -1.00 | [-5.97, +3.97] | 0.478 | 0.478 | 0.33 | 3 paired | paired t | tied best |" in md
    assert "| C | A | -22.00 | — | — | — | 0.00 | 1 vs 3 | none | no test possible (fewer than 2 seeds) |" in md
    assert "against the reference" not in md and "published" not in md
    rows = {(r["budget_gmacs"], r["label"]): r for r in csv.DictReader(open(tmp_path / "rep" / "summary.csv"))}
    assert rows[("0.01", "A")]["best"] == "1" and rows[("0.04", "A")]["tied_best"] == "1"
    assert float(rows[("0.01", "B")]["vs_best_ci_low"]) == pytest.approx(-10.5504, abs=1e-4)
    assert rows[("0.04", "C")]["vs_best_test"] == "none" and rows[("0.04", "C")]["vs_best_p"] == ""
    tex = (tmp_path / "rep" / "table.tex").read_text()
    assert "\\textbf{A}$^\\star$" in tex and "B$^\\approx$" in tex
    assert "$-9.83$ [$-10.55$, $-9.12$]" in tex


def test_reference_row_and_published_number(tmp_path):
    pub = {"B": {"top1": 70.0, "source": "Hand et al. 2020, Table 1"}}
    build_report(make(tmp_path, reference="B", published=pub), tmp_path / "rep", figures=False)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "### Budget 0.01 GMACs: each row against the reference (B)" in md
    assert "| A | B | +9.83 | [+9.12, +10.55] |" in md and "| better |" in md
    # B at 0.01: mean (70 + 71.5 + 72) / 3 = 71.1667 -> +1.17 over 70; at 0.04: 81 -> +11.00
    assert "published top-1 (Δ)" in md and "| 70.00 (+1.17) |" in md and "| 70.00 (+11.00) |" in md
    assert "- B: 70.00% — Hand et al. 2020, Table 1" in md
    rows = list(csv.DictReader(open(tmp_path / "rep" / "summary.csv")))
    b = next(r for r in rows if r["label"] == "B" and r["budget_gmacs"] == "0.01")
    assert float(b["published_diff"]) == pytest.approx(1.1667, abs=1e-4)
    assert b["published_source"] == "Hand et al. 2020, Table 1"


def test_speed_columns_relative_to_reference_and_figures(tmp_path):
    root = make(tmp_path, reference="B", speeds={"A": (600.0, 2000.0), "B": (1000.0, 3000.0),
                                                  "C": (250.0, 900.0)})
    res = build_report(root, tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "train img/s (bench)" in md and "| 600 | 2,000 | 0.60× B |" in md
    assert "| 250 | 900 | 0.25× B |" in md and "cuda:0 (H200)" in md
    figs = tmp_path / "rep" / "figures"
    for stem in ("top1_vs_train_speed", "top1_vs_infer_speed", "time_to_accuracy"):
        assert (figs / f"{stem}.png").stat().st_size > 1000, stem
    assert "figures/time_to_accuracy.png" in md
    assert "on the **test set**" in md  # the curves come from the test set: flagged
    assert res["summary"]


def test_old_results_have_no_speed_columns(tmp_path):
    build_report(make(tmp_path), tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "bench)" not in md and "time_to_accuracy" not in md
    assert not (tmp_path / "rep" / "figures" / "top1_vs_train_speed.png").exists()


def test_compare_labels_and_cli(tmp_path, capsys):
    root = make(tmp_path)
    recs = compare_labels(root, "A", "B")
    assert [r["budget_gmacs"] for r in recs] == [0.01, 0.04]
    assert recs[0]["diff"] == pytest.approx(9.8333, abs=1e-4) and recs[0]["significant"]
    assert recs[1]["p_a_beats_b"] == pytest.approx(2 / 3) and not recs[1]["significant"]
    before = sorted(p for p in tmp_path.rglob("*"))
    assert main(["compare", str(root), "A", "B", "--budget", "0.04"]) == 0
    out = capsys.readouterr().out
    assert "budget 0.04 GMACs: A vs B (test top-1)" in out
    assert "+1.00 pp, 95% CI [-3.97, +5.97]" in out and "p = 0.478" in out
    assert "P(A beats B) = 0.67" in out and "not significant" in out
    assert main(["compare", str(root), "C", "A", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data) == 1 and data[0]["test"] == "none" and data[0]["p_value"] is None
    assert data[0]["diff"] == pytest.approx(-22.0)
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing written


@pytest.mark.parametrize("argv,fragments", [
    (["A", "Bx"], ["'Bx'", "did you mean 'B'"]),
    (["zzz", "A"], ["'zzz'", "labels: A, B, C"]),
    (["A", "B", "--budget", "0.5"], ["--budget", "0.5", "budgets: 0.01, 0.04"]),
])
def test_compare_errors_exit_2_one_line(tmp_path, capsys, argv, fragments):
    root = make(tmp_path)
    before = sorted(p for p in tmp_path.rglob("*"))
    assert main(["compare", str(root), *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    for f in fragments:
        assert f in captured.err, (f, captured.err)
    assert sorted(p for p in tmp_path.rglob("*")) == before
