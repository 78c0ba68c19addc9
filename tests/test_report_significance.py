"""The report's comparisons: the best mark at the suite's level, Holm over each budget's
comparisons, runs without a top-1 counted as such, the header's input size. Pinned to scipy
and hand computations, not to the report's own output."""
from __future__ import annotations

import pytest
from scipy import stats

from mpbench.report.comparisons import comparison_table, format_comparison
from mpbench.report.document import ReportContext, legend_section
from mpbench.report.header import header_lines
from mpbench.report.results import ResultSet
from mpbench.report.summary import aggregate, suite_comparison_options


def run(label, seed, top1, status="done", budget=0.1):
    """One normalised result row (as load_results gives it)."""
    return {"run_id": f"{label}-s{seed}", "suite": "s", "label": label, "model": label,
            "family": "f", "dataset": "d", "budget_gmacs": budget, "gmacs": budget,
            "params": 1e6, "deviation": 0.0, "knob": "", "knob_value": "", "seed": seed,
            "epochs": 1, "top1": top1, "top5": None, "train_time_s": 1.0, "img_per_s": 1.0,
            "status": status, "device": "cpu", "finished_at": "", "error": "", "init": "",
            "init_mode": "", "split": "", "val_top1": None, "val_top5": None,
            "speed_train_img_s": None, "speed_infer_img_s": None, "speed_device": ""}


def rows(groups, paired=True):
    """Seeds 0.. for every row (paired), or distinct seeds per row (Welch)."""
    return [run(label, i + (0 if paired else 10 * n), v)
            for n, (label, vals) in enumerate(groups.items()) for i, v in enumerate(vals)]


def by_label(summary):
    return {a["label"]: a for a in summary}


# paired over seeds 0-2, differences 2.0, 2.2, 2.1: paired t p = 0.00076
PAIR = {"A": [80.0, 82.0, 84.0], "B": [78.0, 79.8, 81.9]}


def test_best_mark_follows_the_suites_significance_level():
    d = [a - b for a, b in zip(PAIR["A"], PAIR["B"])]
    p = stats.ttest_1samp(d, 0.0).pvalue  # the paired t test, independently
    assert 0.0005 < p < 0.001
    for level, starred in ((0.001, True), (0.0005, False)):
        opts = suite_comparison_options({"significance_level": level})
        s = by_label(aggregate(rows(PAIR), **opts))
        assert s["A"]["best"] is starred and s["A"]["tied_best"] is not starred, level
        assert s["B"]["vs_best"].significant is starred


def test_each_budget_is_holm_corrected_and_the_verdicts_use_it():
    groups = {"A": [0.80, 0.82, 0.84], "B": [0.748, 0.768, 0.788], "C": [0.752, 0.772, 0.792]}
    s = by_label(aggregate(rows(groups, paired=False)))
    raw = {k: stats.ttest_ind(groups[k], groups["A"], equal_var=False).pvalue for k in "BC"}
    lo, hi = sorted(raw, key=raw.get)
    holm = {lo: min(1, 2 * raw[lo]), hi: max(min(1, 2 * raw[lo]), raw[hi])}
    for k in "BC":
        c = s[k]["vs_best"]
        assert c.p_value == pytest.approx(raw[k]) and c.p_adjusted == pytest.approx(holm[k])
        assert c.significant == (holm[k] < 0.05) and c.correction == "holm"
    # both raw p < 0.05 but not after Holm: no star, all three tied; uncorrected: a star
    assert not s["A"]["best"] and all(s[k]["tied_best"] for k in "ABC")
    table = comparison_table([s[k] for k in "ABC"], "vs_best")
    assert "| p | p (Holm) |" in table
    assert f"| {raw['B']:.3f} | {holm['B']:.3f} |" in table
    off = by_label(aggregate(rows(groups, paired=False), correction="none"))
    assert all(off[k]["vs_best"].p_adjusted == pytest.approx(raw[k]) for k in "BC")
    assert off["A"]["best"] and not any(off[k]["tied_best"] for k in "ABC")
    assert "p (Holm)" not in comparison_table([off[k] for k in "ABC"], "vs_best")


def test_legend_says_which_correction():
    summary = aggregate(rows(PAIR))
    rs = ResultSet(root=None, suite={}, rows=rows(PAIR))
    text = " ".join(legend_section(ReportContext(rs, summary)))
    assert "Holm" in text and "every other row" in text and "p = 0" not in text
    text = " ".join(legend_section(ReportContext(rs, aggregate(rows(PAIR), correction="none"))))
    assert "no multiple-test correction" in text


def test_suite_without_a_correction_field_gets_holm():
    assert suite_comparison_options({})["correction"] == "holm"
    assert suite_comparison_options({"significance_correction": "none"})["correction"] == "none"


def test_a_run_without_top1_is_counted_as_such():
    data = [run("A", 0, 80.0), run("A", 1, 82.0), run("A", 2, None)]  # NaN loads as None
    a = aggregate(data)[0]
    assert a["status"] == "2 done, 1 no top-1" and a["n_done"] == 2 and a["n_no_top1"] == 1
    assert a["top1_mean"] == pytest.approx(81.0)
    assert aggregate(data[:2])[0]["status"] == "2"


def test_header_names_the_recipes_input_size():
    rs = ResultSet(root=None, suite={"name": "s", "dataset": {"name": "cifar10"},
                                     "recipe": {"input_size": 224, "epochs": 1, "lr": 0.1,
                                                "batch_size": 8, "weight_decay": 0.0,
                                                "momentum": 0.9, "schedule": "cosine"}},
                   rows=[run("A", 0, 80.0)])
    line = next(x for x in header_lines(rs, "t", "") if x.startswith("- **Complexity:**"))
    assert "224x224" in line and "data set's image size" not in line
    rs.suite["recipe"].pop("input_size")
    line = next(x for x in header_lines(rs, "t", "") if x.startswith("- **Complexity:**"))
    assert "data set's image size" in line


def test_compare_says_a_single_pair_is_uncorrected():
    rec = {"dataset": "d", "budget_gmacs": 0.1, "a": "A", "b": "B", "split": "test",
           "level": 0.05, "report_correction": "holm", "mean_a": 82.0, "std_a": 2.0,
           "seeds_a": [0, 1, 2], "mean_b": 79.9, "std_b": 2.0, "seeds_b": [0, 1, 2],
           "test": "paired", "n_a": 3, "n_b": 3, "n_pairs": 3, "diff": 2.1, "ci_low": 1.85,
           "ci_high": 2.35, "p_value": 0.0017, "p_a_beats_b": 1.0, "significant": True,
           "reason": None, "exact": None, "correction": "none"}
    text = format_comparison(rec)
    assert "p uncorrected" in text and "Holm" in text
    text = format_comparison({**rec, "exact": "sign", "ci_low": None, "ci_high": None})
    assert "exact sign test" in text and "no t interval" in text
