"""Reports: aggregation over seeds, failed runs kept, deterministic regeneration, figures, CLI."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from mpbench.cli import main
from mpbench.errors import UserError
from mpbench.report import aggregate, build_report, load_results, regenerate_all
from mpbench.report.latex import latex_escape
from mpbench.suite.runner import RESULT_COLUMNS

SUITE = {
    "name": "fake", "description": "hand-written results", "seeds": [0, 1, 2],
    "budgets_gmacs": [0.01, 0.04], "tolerance": 0.02,
    "dataset": {"name": "imagefolder", "root": "../shared/data/cifar10-jpg", "train_subset": 5000},
    "recipe": {"epochs": 3, "batch_size": 128, "lr": 0.1, "momentum": 0.9, "nesterov": True,
               "weight_decay": 5e-4, "schedule": "cosine", "milestones": [60, 120, 160],
               "gamma": 0.2, "crop_padding": 4, "flip": True, "amp": "auto"},
    "models": [{"name": "cifar_resnet20", "label": "resnet"},
               {"name": "mp_resnet20_p4_fdcc", "label": "mp_fdcc"},
               {"name": "cifar_wrn16_4", "label": "wrn_100%"}],
}
# (label, family, budget, seed, status, top1)
RUNS = [
    ("resnet", "resnet", 0.01, 0, "done", 70.0),
    ("resnet", "resnet", 0.01, 1, "done", 72.0),
    ("resnet", "resnet", 0.01, 2, "done", 74.0),
    ("mp_fdcc", "mp_resnet", 0.01, 0, "done", 75.0),
    ("mp_fdcc", "mp_resnet", 0.01, 1, "done", 77.0),
    ("mp_fdcc", "mp_resnet", 0.01, 2, "diverged", 10.0),
    ("wrn_100%", "wrn", 0.01, 0, "failed", None),
    ("wrn_100%", "wrn", 0.01, 1, "oom", None),
    ("resnet", "resnet", 0.04, 0, "done", 80.0),
    ("mp_fdcc", "mp_resnet", 0.04, 0, "done", 79.5),
    ("wrn_100%", "wrn", 0.04, 0, "done", 81.25),
]


def write_fake_results(root: Path, runs=RUNS, analysis: bool = True) -> Path:
    """A results dir as `mpbench run` leaves it (no checkpoints), plus one stored analysis."""
    rows = []
    for label, family, budget, seed, status, top1 in runs:
        run_id = f"{label.replace('%', '')}-b{budget:g}g-s{seed}"
        gmacs = budget * (1.01 if family == "mp_resnet" else 0.99)
        row = {"suite": "fake", "run_id": run_id, "model": f"model_{family}", "label": label,
               "family": family, "budget_gmacs": budget, "gmacs": gmacs,
               "params": int(gmacs * 1e8), "deviation": gmacs / budget - 1, "knob": "width",
               "knob_value": 16.5, "seed": seed, "epochs": 3 if status == "done" else 1,
               "top1": top1, "top5": None if top1 is None else min(100.0, top1 + 20),
               "train_time_s": 100.0 + seed if status == "done" else 0.0,
               "img_per_s": 500.0 + seed, "status": status, "dataset": "imagefolder",
               "device": "cpu", "finished_at": f"2026-11-30T1{seed}:00:00+00:00"}
        if status != "done":
            row["error"] = f"{status}: something | broke"
        run_dir = root / "runs" / run_id
        run_dir.mkdir(parents=True)
        args = {"paths": 4, "route": "fdcc"} if family == "mp_resnet" else {}
        (run_dir / "config.json").write_text(json.dumps(
            {"model": row["model"], "args": args, "seed": seed, "mpbench_version": "0.1.0"}))
        (run_dir / "result.json" if status != "failed" else run_dir / "failure.json").write_text(
            json.dumps(row))
        n_epochs = row["epochs"]
        (run_dir / "metrics.json").write_text(json.dumps([
            {"epoch": e, "test_top1": (top1 or 10.0) * e / n_epochs, "test_top5": 50.0,
             "train_loss": 1.0, "img_per_s": 500.0} for e in range(1, n_epochs + 1)]))
        rows.append(row)
    cols = RESULT_COLUMNS + ["error"]
    with open(root / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    (root / "suite.json").write_text(json.dumps(SUITE))
    (root / "plan.json").write_text(json.dumps([{"run_id": r["run_id"]} for r in rows]))
    if analysis:  # the stored path usage of the first finished mp run at 0.01
        adir = root / "runs" / "mp_fdcc-b0.01g-s0" / "analysis"
        adir.mkdir()
        lines = ["level,label_index,label,n,layer,path,usage"]
        for k in range(3):
            for layer in ("stages.1.route0", "stages.2.route0"):
                for p in range(4):
                    lines.append(f"class,{k},c{k},10,{layer},{p},{0.25 + 0.05 * ((k + p) % 2) - 0.025}")
        (adir / "path_usage_class.csv").write_text("\n".join(lines) + "\n")
        (adir / "specialisation.csv").write_text(
            "level,layer,trained,untrained,shuffled\nclass,mean,0.2,0.0,0.01\n")
    return root


@pytest.fixture
def fake(tmp_path) -> Path:
    return write_fake_results(tmp_path / "runs" / "fake")


def _by(summary, label, budget):
    return next(a for a in summary if a["label"] == label and a["budget_gmacs"] == budget)


def test_aggregate_mean_std_n_best_and_failed_runs_kept(fake):
    rs = load_results(fake)
    summary = aggregate(rs.rows, ["resnet", "mp_fdcc", "wrn_100%"])
    assert [(a["budget_gmacs"], a["label"]) for a in summary] == [
        (0.01, "resnet"), (0.01, "mp_fdcc"), (0.01, "wrn_100%"),
        (0.04, "resnet"), (0.04, "mp_fdcc"), (0.04, "wrn_100%")]
    r = _by(summary, "resnet", 0.01)
    assert (r["top1_mean"], r["top1_std"], r["n_done"], r["status"]) == (72.0, 2.0, 3, "3")
    m = _by(summary, "mp_fdcc", 0.01)  # the diverged seed is counted, not averaged
    assert m["top1_mean"] == 76.0 and m["n_done"] == 2 and m["n_diverged"] == 1
    # mp_fdcc and resnet share seeds 0, 1 with differences 5, 5: no spread, so the exact sign
    # test (p = 2 / 2^2 = 0.5), not a star (p = 0 gave one)
    assert m["status"] == "2 done, 1 diverged" and not m["best"] and not r["best"]
    assert m["tied_best"] and r["tied_best"] and r["vs_best"].p_value == pytest.approx(0.5)
    w = _by(summary, "wrn_100%", 0.01)  # nothing finished: kept, no accuracy, not best
    assert w["top1_mean"] is None and w["status"] == "1 oom, 1 failed" and not w["best"]
    assert _by(summary, "resnet", 0.04)["top1_std"] is None
    # one seed per row at 0.04: no test is possible, so nothing is best and all three are tied
    assert not any(_by(summary, lab, 0.04)["best"] for lab in ("resnet", "mp_fdcc", "wrn_100%"))
    assert all(_by(summary, lab, 0.04)["tied_best"] for lab in ("resnet", "mp_fdcc", "wrn_100%"))
    assert _by(summary, "resnet", 0.04)["vs_best"].test == "none"


def test_markdown_csv_latex_rows_and_marks(fake, tmp_path):
    res = build_report(fake, tmp_path / "rep", figures=False)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "JPEG copy of CIFAR-10" in md and "subset of 5,000" in md
    assert "fvcore MACs, batch 1, eval mode; 1 MAC = one multiply-add" in md
    assert "3 epochs" in md and "batch 128" in md and "lr 0.1" in md and "0, 1, 2" in md
    assert "2026-11-30T10:00:00+00:00 … 2026-11-30T12:00:00+00:00" in md
    assert "| mp_fdcc (tied best) |" in md and "| 76.00 ± 1.41 |" in md
    assert "| 72.00 ± 2.00 |" in md and "2 done, 1 diverged" in md and "1 oom, 1 failed" in md
    assert "## Runs that did not finish" in md and "something \\| broke" in md
    rows = list(csv.DictReader(open(tmp_path / "rep" / "summary.csv")))
    assert len(rows) == len(res["summary"]) == 6
    assert rows[2]["label"] == "wrn_100%" and rows[2]["top1_mean"] == "" and rows[2]["best"] == "0"
    tex = (tmp_path / "rep" / "table.tex").read_text()
    assert "\\toprule" in tex and "\\bottomrule" in tex and tex.count("\\midrule") == 2
    assert "wrn\\_100\\%" in tex and "mp\\_fdcc$^\\approx$" in tex
    assert latex_escape("a_b&c%d$e#f{g}~^\\") == (
        "a\\_b\\&c\\%d\\$e\\#f\\{g\\}\\textasciitilde{}\\textasciicircum{}\\textbackslash{}")


def test_report_is_deterministic_and_copies_results(fake, tmp_path):
    out = tmp_path / "reports" / "fake"
    build_report(fake, out, title="Fake report", note="Not real numbers.")
    first = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert not any(p.name.startswith("checkpoint") for p in (out / "results").rglob("*"))
    assert (out / "results" / "runs" / "mp_fdcc-b0.01g-s0" / "analysis" /
            "path_usage_class.csv").exists()
    build_report(fake, out)  # title/note remembered in report.json
    second = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert first.keys() == second.keys()
    for name in ("report.md", "summary.csv", "table.tex"):
        assert first[Path(name)] == second[Path(name)], name
    svgs = [k for k in first if k.suffix in (".svg", ".png")]
    assert svgs and all(first[k] == second[k] for k in svgs)
    assert first[Path("report.md")].decode().startswith("# Fake report\n\nNot real numbers.")


def test_figures_created_and_missing_analysis_noted(tmp_path):
    runs = write_fake_results(tmp_path / "src", analysis=False)
    res = build_report(runs, tmp_path / "rep")
    figs = tmp_path / "rep" / "figures"
    for stem in ("top1_vs_gmacs", "top1_vs_params", "curves"):
        for ext in ("png", "svg"):
            assert (figs / f"{stem}.{ext}").stat().st_size > 1000
    assert not list(figs.glob("path_usage_*"))
    assert any("mp_fdcc at 0.01 GMACs: path-usage heatmap skipped" in n for n in res["notes"])
    assert "## Notes" in (tmp_path / "rep" / "report.md").read_text()


def test_stored_analysis_gives_heatmap(fake, tmp_path):
    build_report(fake, tmp_path / "rep")
    figs = tmp_path / "rep" / "figures"
    assert (figs / "path_usage_mp_fdcc_b0.01.png").stat().st_size > 1000
    assert (figs / "path_usage_mp_fdcc_b0.01.svg").stat().st_size > 1000
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "figures/path_usage_mp_fdcc_b0.01.png" in md and "0.2 trained" in md


def test_report_without_arguments_regenerates_every_report(fake, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(fake), "--out", "reports/fake", "--no-figures"]) == 0
    write_fake_results(tmp_path / "other", RUNS[:3], analysis=False)
    assert main(["report", "other", "--out", "reports/other", "--no-figures"]) == 0
    before = {p: p.read_bytes() for p in Path("reports").rglob("*") if p.is_file()}
    (Path("reports") / "fake" / "summary.csv").unlink()
    capsys.readouterr()
    assert main(["report", "--no-figures"]) == 0
    out = capsys.readouterr().out
    assert "reports/fake" in out and "reports/other" in out
    after = {p: p.read_bytes() for p in Path("reports").rglob("*") if p.is_file()}
    assert before == after


def test_bad_runs_dir_is_one_line_user_error(tmp_path, monkeypatch, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope" in err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no results.csv" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="no reports to regenerate"):
        regenerate_all("reports")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A real (tiny) suite run: a single-path and a 2-path fdcc network, two seeds."""
    from mpbench.config import parse_suite
    from mpbench.suite.plan import plan_suite
    from mpbench.suite.runner import run_suite

    suite = parse_suite({
        "name": "tinyrep",
        "dataset": {"name": "synthetic", "num_classes": 4, "num_train": 64, "num_test": 32,
                    "image_size": 16},
        "recipe": {"epochs": 2, "batch_size": 16, "eval_batch_size": 32, "lr": 0.05,
                   "schedule": "cosine"},
        "seeds": [0, 1],
        "models": [{"name": "cifar_resnet_tiny", "args": {"width": 4}},
                   {"name": "mp_resnet_tiny", "args": {"paths": 2, "route": "fdcc", "width": 4},
                    "label": "mp_p2_fdcc"}]})
    out = tmp_path_factory.mktemp("tinyrep") / "out"
    run_suite(suite, plan_suite(suite), out, device="cpu", progress=False, echo=lambda m: None)
    return out


def test_real_run_report_with_path_usage(tiny_run, tmp_path):
    res = build_report(tiny_run, tmp_path / "reports" / "tiny", device="cpu")
    assert [a["label"] for a in res["summary"]] == ["cifar_resnet_tiny", "mp_p2_fdcc"]
    assert all(a["n_done"] == 2 and a["top1_std"] is not None for a in res["summary"])
    figs = tmp_path / "reports" / "tiny" / "figures"
    assert (figs / "path_usage_mp_p2_fdcc_bas-given.png").stat().st_size > 1000
    results = tmp_path / "reports" / "tiny" / "results"
    assert (results / "runs" / "mp_p2_fdcc-s0" / "analysis" / "path_usage_superclass.csv").exists()
    assert not list(results.rglob("checkpoint.pt*"))
    md = (tmp_path / "reports" / "tiny" / "report.md").read_text()
    regenerate_all(tmp_path / "reports", echo=lambda m: None)  # from the copy alone
    assert (tmp_path / "reports" / "tiny" / "report.md").read_text() == md
