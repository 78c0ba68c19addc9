"""The report of a tuned suite: the Tuning section, its sensitivity figures, and untuned vs
tuned rankings side by side (``mpbench report TUNED --untuned UNTUNED``)."""
import csv
import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from mpbench.config import parse_suite
from mpbench.report import build_report
from mpbench.suite.plan import plan_suite
from mpbench.suite.tuned import tune_suite
from test_tune import BASE, quiet

LOG_LR = {"low": 0.01, "high": 0.3, "log": True}
SMOOTHING = [0.0, 0.1]
MODELS = ["cifar_resnet_tiny", "mp_resnet_tiny"]  # two families: resnet, mp_resnet


@pytest.fixture(scope="module")
def tuned_out(tmp_path_factory):
    """Two models x 3 random trials of 1 epoch, then 2 seeds each (a few seconds on one core)."""
    out = tmp_path_factory.mktemp("tuned") / "o"
    suite = parse_suite({**BASE, "seeds": [0, 1],
                         "models": [{"name": m, "args": {"width": 4}} for m in MODELS],
                         "tune": {"trials": 3, "sampler": "random",
                                  "space": {"lr": LOG_LR, "label_smoothing": SMOOTHING}}},
                        "s.yaml")
    counts = tune_suite(suite, plan_suite(suite), out, echo=quiet, progress=False)
    assert counts["trials"] == 6 and counts["done"] == 4 and counts["failed"] == 0
    return out


def section(md: str, heading: str) -> str:
    """The text of ``## heading`` up to the next ``## `` heading."""
    start = md.index(f"## {heading}\n")
    end = md.find("\n## ", start + 3)
    return md[start:] if end < 0 else md[start:end]


def tables(text: str) -> list[list[dict]]:
    """Every markdown table of ``text`` as a list of {header: cell} rows."""
    out, block = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif block:
            head, _, *rows = block
            out.append([dict(zip(head, r)) for r in rows])
            block = []
    return out


def trial_records(out: Path) -> list[dict]:
    """Every trial's own trial.json (written by the trial, not the study export)."""
    recs = []
    for path in sorted((out / "tune").glob("*/trial-*/trial.json")):
        rec = json.loads(path.read_text())
        recs.append({**rec, "label": path.parent.parent.name})
    return recs


def test_the_tuning_section_lists_the_budget_and_what_results_csv_holds(tuned_out, tmp_path):
    res = build_report(tuned_out, tmp_path / "rep", figures=False)
    md = (tmp_path / "rep" / "report.md").read_text()
    text = section(md, "Tuning")
    assert "**3 trials x 1 epochs** (equal for every row" in text
    assert "UNEQUAL" not in text
    assert "- `lr`: 0.01 … 0.3, log scale" in text and "- `label_smoothing`: one of 0, 0.1" in text
    (table,) = tables(text)
    results = pd.read_csv(tuned_out / "results.csv")
    assert sorted(r["model"] for r in table) == MODELS
    for row in table:
        mine = results[results.label == row["model"]]
        chosen = {json.dumps(json.loads(v), sort_keys=True) for v in mine.tuned}
        assert len(chosen) == 1  # both seeds carry the same values
        values = json.loads(chosen.pop())
        assert set(values) == {"lr", "label_smoothing"}
        assert float(row["`lr`"]) == pytest.approx(values["lr"], rel=5e-4)
        assert float(row["`label_smoothing`"]) == values["label_smoothing"]
        assert row["trials"] == "3" == str(int(mine.tune_trials.iloc[0]))
        assert float(row["best val top-1 (%)"]) == pytest.approx(mine.tune_best_val_top1.iloc[0],
                                                                 abs=0.005)
        assert row["final runs' cost"].endswith("(2 runs)")
        # the chosen values are the best trial's (its own trial.json), the earliest on a tie
        trials = [t for t in trial_records(tuned_out) if t["label"] == row["model"]]
        best = max(trials, key=lambda t: (t["value"], -t["number"]))
        assert row["best trial"] == str(best["number"]) and best["params"] == values
    assert "### Sensitivity" not in md and "## Tuning" in md
    assert res["out"] == tmp_path / "rep"


def test_tuning_costs_are_the_trials_and_the_final_runs_summed_train_time(tuned_out):
    from mpbench.report.results import load_results
    from mpbench.report.summary import aggregate, label_order
    from mpbench.report.tuning import load_studies, tuning_rows

    rs = load_results(tuned_out)
    rows = tuning_rows(rs, aggregate(rs.rows, label_order(rs)), load_studies(rs))
    results = pd.read_csv(tuned_out / "results.csv")
    for t in rows:
        mine = results[results.label == t["label"]]
        trials = [r for r in trial_records(tuned_out) if r["label"] == t["label"]]
        assert t["tune_cost_s"] == pytest.approx(sum(r["train_time_s"] for r in trials))
        assert t["final_cost_s"] == pytest.approx(mine.train_time_s.sum())
        assert (t["finished"], t["complete"], t["pruned"]) == (3, 3, 0)


def test_sensitivity_figures_have_one_point_per_trial_at_its_value(tuned_out, tmp_path,
                                                                    monkeypatch):
    """The figure's data, read off the drawn axes: every trial's value and validation top-1."""
    import mpbench.report.tuning as tuning

    drawn, real_save = {}, tuning.save_figure

    def recording_save(fig, fig_dir, stem):
        ax = fig.axes[0]
        pts = [(float(x), float(y), c.get_gid()) for c in ax.collections
               if (c.get_gid() or "").startswith("trials:") for x, y in c.get_offsets()]
        drawn[stem] = {"points": pts, "xscale": ax.get_xscale(),
                       "ticks": [t.get_text() for t in ax.get_xticklabels()]}
        return real_save(fig, fig_dir, stem)

    monkeypatch.setattr(tuning, "save_figure", recording_save)
    build_report(tuned_out, tmp_path / "rep", analyze=False)
    fig_dir = tmp_path / "rep" / "figures"
    for stem in ("sensitivity_lr", "sensitivity_label_smoothing"):
        assert (fig_dir / f"{stem}.png").stat().st_size > 0 and (fig_dir / f"{stem}.svg").exists()
    md = (tmp_path / "rep" / "report.md").read_text()
    tune_text, fig_text = section(md, "Tuning"), section(md, "Figures")
    assert "![Sensitivity to lr](figures/sensitivity_lr.png)" in tune_text
    assert "sensitivity_" not in fig_text  # shown in the Tuning section only

    trials = trial_records(tuned_out)
    assert len(trials) == 6
    lr = drawn["sensitivity_lr"]
    assert lr["xscale"] == "log"  # the space is log
    assert sorted((round(x, 12), y) for x, y, _ in lr["points"]) == sorted(
        (round(t["params"]["lr"], 12), t["value"]) for t in trials)
    # one colour per family: the points of a model are drawn in its own collection
    assert {gid for *_, gid in lr["points"]} == {f"trials:{m}:complete" for m in MODELS}
    ls = drawn["sensitivity_label_smoothing"]
    assert ls["xscale"] == "linear" and ls["ticks"] == ["0", "0.1"]  # categories
    assert sorted((SMOOTHING[round(x)], y) for x, y, _ in ls["points"]) == sorted(
        (t["params"]["label_smoothing"], t["value"]) for t in trials)


def test_a_report_folder_keeps_the_trial_records_and_regenerates_the_section(tuned_out,
                                                                               tmp_path):
    from mpbench.report import regenerate_all

    reports = tmp_path / "reports"
    build_report(tuned_out, reports / "t", figures=False)
    first = (reports / "t" / "report.md").read_text()
    assert sorted(p.parent.name for p in (reports / "t" / "results" / "tune").glob("*/study.json")) \
        == MODELS
    assert not list((reports / "t" / "results").rglob("checkpoint.pt"))
    regenerate_all(reports, figures=False, echo=quiet)
    assert (reports / "t" / "report.md").read_text() == first
    assert "**3 trials x 1 epochs**" in first


def test_an_unequal_tuning_budget_is_flagged_loudly(tuned_out, tmp_path):
    import shutil

    out = tmp_path / "o"
    shutil.copytree(tuned_out, out, ignore=shutil.ignore_patterns("*.pt"))
    path = out / "tune" / "mp_resnet_tiny" / "study.json"
    study = json.loads(path.read_text())
    study["trials"] = study["trials"][:2]  # as if one of its trials had never run
    path.write_text(json.dumps(study))
    build_report(out, tmp_path / "rep", figures=False)
    text = section((tmp_path / "rep" / "report.md").read_text(), "Tuning")
    assert "**⚠ UNEQUAL TUNING BUDGET" in text
    assert "- **mp_resnet_tiny at as given GMACs: 2 of 3 trials finished**" in text
    assert "cifar_resnet_tiny at" not in text.split("| model |")[0]  # only the unequal row
    assert "(equal for every row" not in text


# --- untuned vs tuned, on hand-made results with known means -----------------------------

FIELDS = ["suite", "run_id", "model", "label", "family", "budget_gmacs", "seed", "epochs",
          "top1", "status", "dataset", "train_time_s", "tuned"]


def write_results(root: Path, name: str, means: dict, tuned: bool) -> Path:
    """``means``: {budget: {label: mean}}; two seeds per row at mean ± 1."""
    root.mkdir(parents=True)
    rows = []
    for budget, per_label in means.items():
        for label, mean in per_label.items():
            for seed, top1 in ((0, mean - 1.0), (1, mean + 1.0)):
                rows.append({"suite": name, "run_id": f"{label}-b{budget:g}g-s{seed}",
                             "model": label, "label": label, "family": label.split("_")[0],
                             "budget_gmacs": budget, "seed": seed, "epochs": 2, "top1": top1,
                             "status": "done", "dataset": "synthetic", "train_time_s": 10.0,
                             "tuned": json.dumps({"lr": 0.1}) if tuned else ""})
    with open(root / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        w.writerows(rows)
    suite = {"name": name, "seeds": [0, 1], "budgets_gmacs": sorted(means),
             "dataset": {"name": "synthetic", "val_split": 32}}
    if tuned:
        suite["tune"] = {"trials": 4, "epochs": 1, "space": {"lr": LOG_LR}}
    (root / "suite.json").write_text(json.dumps(suite))
    return root


# budget 1: A > B > C untuned; B > A > C tuned. By hand: of the three pairs, (A, B) swaps
# and (A, C), (B, C) keep their order: tau = (2 concordant - 1 discordant) / 3 = 1/3.
# budget 2: A > B on both sides: tau = 1. resnet_d: tuned only, at budget 1.
UNTUNED = {1.0: {"resnet_a": 70.0, "resnext_b": 60.0, "se_c": 50.0}, 2.0: {"resnet_a": 80.0,
                                                                         "resnext_b": 70.0}}
TUNED = {1.0: {"resnet_a": 55.0, "resnext_b": 65.0, "se_c": 45.0, "resnet_d": 40.0},
         2.0: {"resnet_a": 81.0, "resnext_b": 72.0}}


@pytest.fixture
def pair(tmp_path):
    return (write_results(tmp_path / "tuned", "t", TUNED, True),
            write_results(tmp_path / "untuned", "u", UNTUNED, False))


def test_untuned_and_tuned_rankings_side_by_side_with_kendall_tau(pair, tmp_path):
    tuned, untuned = pair
    build_report(tuned, tmp_path / "rep", figures=False, untuned=untuned)
    text = section((tmp_path / "rep" / "report.md").read_text(), "Untuned vs tuned")
    one, two = text.split("### Budget 1 GMACs")[1].split("### Budget 2 GMACs")
    (t1,) = tables(one)
    got = {r["model"]: (r["untuned rank"], r["tuned rank"], r["Δ (pp)"]) for r in t1}
    assert got == {"resnet_a": ("1", "2", "-15.00"), "resnext_b": ("2", "1", "+5.00"),
                   "se_c": ("3", "3", "-5.00"), "resnet_d": ("—", "—", "—")}
    assert [r["model"] for r in t1] == ["resnet_a", "resnext_b", "se_c", "resnet_d"]
    assert t1[0]["untuned top-1 (%)"] == "70.00 ± 1.41"  # mean ± sample std of 69, 71
    assert "Kendall's tau = 0.333 (p = 1, 3 models): **the ranking changed**; best untuned: " \
           "resnet_a, best tuned: resnext_b." in one
    assert "Kendall's tau = 1.000" in two and "the ranking is unchanged." in two


def test_ranking_tables_by_hand():
    from mpbench.report.side_by_side import ranking_tables

    def summary(means):
        return [{"dataset": "d", "budget_gmacs": 1.0, "label": k, "family": "f",
                 "top1_mean": v, "top1_std": None} for k, v in means.items()]
    (t,) = ranking_tables(summary({"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}),
                          summary({"a": 4.0, "b": 3.0, "c": 2.0, "d": 1.0}))
    assert t["tau"] == pytest.approx(-1.0) and t["changed"] and t["n"] == 4  # reversed
    (t,) = ranking_tables(summary({"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}),
                          summary({"a": 1.0, "b": 3.0, "c": 2.0, "d": 4.0}))
    # one adjacent swap of four: 5 concordant, 1 discordant pair: tau = 4 / 6
    assert t["tau"] == pytest.approx(2 / 3) and t["best_tuned"] == t["best_untuned"] == ["d"]


def mpbench(capsys, *argv):
    """The command line, in this process (``python -m mpbench`` calls the same ``main``)."""
    from mpbench.cli import main

    capsys.readouterr()
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    return subprocess.CompletedProcess(argv, rc, "", err)


def test_cli_untuned_option_is_kept_for_regeneration(pair, tmp_path, capsys):
    tuned, untuned = pair
    reports = tmp_path / "reports"
    proc = mpbench(capsys, "report", tuned, "--untuned", untuned, "--out", reports / "cmp",
                   "--no-figures")
    assert proc.returncode == 0, proc.stderr
    first = (reports / "cmp" / "report.md").read_text()
    assert "## Untuned vs tuned" in first
    assert json.loads((reports / "cmp" / "report.json").read_text())["untuned"] == "untuned-results"
    import shutil
    shutil.rmtree(untuned)  # regeneration reads the copy beside the report
    proc = mpbench(capsys, "report", "--reports", reports, "--no-figures")
    assert proc.returncode == 0, proc.stderr
    assert (reports / "cmp" / "report.md").read_text() == first


@pytest.mark.parametrize("which, message", [
    ("missing", "no such directory"),
    ("tuned", "these are a tuned suite's results"),
    ("swapped", "not a tuned suite's results"),
    ("disjoint", "no model of"),
])
def test_cli_refuses_a_bad_untuned_pair_in_one_line_and_writes_nothing(pair, tmp_path, which,
                                                                        message, capsys):
    tuned, untuned = pair
    runs, other = {"missing": (tuned, tmp_path / "nope"), "tuned": (tuned, tuned),
                   "swapped": (untuned, tuned),
                   "disjoint": (tuned, write_results(tmp_path / "x", "x", {3.0: {"z": 1.0}},
                                                     False))}[which]
    out = tmp_path / "rep"
    proc = mpbench(capsys, "report", runs, "--untuned", other, "--out", out, "--no-figures")
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not out.exists()


def test_an_untuned_suite_has_no_tuning_section(pair, tmp_path):
    _, untuned = pair
    build_report(untuned, tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Tuning" not in md and "## Untuned vs tuned" not in md
    assert not list((tmp_path / "rep" / "figures").glob("sensitivity_*"))


def test_sensitivity_points_of_pruned_and_diverged_trials():
    """A pruned trial is drawn at its last validation top-1; a trial without one is not."""
    from mpbench.report.tuning import sensitivity_points

    study = {"dir": "a", "label": "a", "family": "resnet", "budget_gmacs": None, "trials": [
        {"number": 0, "state": "complete", "params": {"lr": 0.1}, "value": 50.0,
         "val_curve": [40.0, 50.0]},
        {"number": 1, "state": "pruned", "params": {"lr": 0.01}, "value": None,
         "val_curve": [20.0, 30.0]},
        {"number": 2, "state": "fail", "params": {"lr": 1.0}, "value": None, "val_curve": []},
        {"number": 3, "state": "complete", "params": {"lr": 0.2}, "value": 60.0,
         "val_curve": [55.0, 60.0]}]}
    pts = sensitivity_points([study], "lr")
    assert [(p["trial"], p["x"], p["val_top1"], p["best"]) for p in pts] == [
        (0, 0.1, 50.0, False), (1, 0.01, 30.0, False), (3, 0.2, 60.0, True)]
