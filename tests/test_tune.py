"""Suites with ``tune:``: the schema, seeded samplers, the tuned final runs, no test set in trials."""
import json
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from mpbench.config import SuiteError, parse_suite
from mpbench.suite.plan import plan_suite
from mpbench.suite.runner import run_suite
from mpbench.suite.tune import trial_recipe
from mpbench.suite.tuned import tune_status, tune_suite

BASE = {"name": "t",
        "dataset": {"name": "synthetic", "num_classes": 4, "num_train": 96, "num_test": 32,
                    "image_size": 16, "val_split": 32},
        "recipe": {"epochs": 1, "batch_size": 16, "eval_batch_size": 32, "lr": 0.05,
                   "schedule": "constant", "deterministic": True},
        "models": [{"name": "cifar_resnet_tiny", "args": {"width": 4}}]}


def suite_with(tune: dict, **top):
    return parse_suite({**BASE, **top, "tune": tune}, "s.yaml")


def quiet(*_):
    pass


@pytest.mark.parametrize("tune, message", [
    ({"space": {"lrr": {"low": 0.01, "high": 1}}}, "s.yaml: tune.space.lrr: not a recipe field (did you mean lr?)"),
    ({"space": {"lr": {"low": 1, "high": 0.1}}}, "s.yaml: tune.space.lr: low (1) must be below high (0.1)"),
    ({"space": {"lr": {"low": 0, "high": 0.1, "log": True}}}, "s.yaml: tune.space.lr: log: true needs low > 0"),
    ({"space": {"lr": {"low": 0.1, "high": 1, "step": 2}}}, "s.yaml: tune.space.lr.step: unknown key"),
    ({"space": {"momentum": {"low": 0.5, "high": 1.0}}}, "s.yaml: tune.space.momentum: 1.0: Input should be less than 1"),
    ({"space": {"label_smoothing": [0.0, 1.5]}}, "s.yaml: tune.space.label_smoothing: 1.5:"),
    ({"space": {"warmup_epochs": [0.0, 1.0]}}, "s.yaml: tune.space.warmup_epochs: 1.0: warmup_epochs must be shorter"),
    ({"space": {"batch_size": {"low": 8.5, "high": 64}}}, "s.yaml: tune.space.batch_size: an integer field"),
    ({"space": {"epochs": [1, 2]}}, "s.yaml: tune.space.epochs: cannot be tuned"),
    ({"space": {"lr": 0.1}}, "s.yaml: tune.space.lr: give a range"),
    ({"space": {}}, "s.yaml: tune.space: give at least one"),
    ({"space": {"lr": [0.1]}, "trial": 3}, "s.yaml: tune.trial: unknown key"),
    ({"space": {"lr": [0.1]}, "sampler": "bayes"}, "s.yaml: tune.sampler:"),
    ({"space": {"lr": [0.1]}, "trials": 0}, "s.yaml: tune.trials:"),
    ({"space": {"lr": [0.1, 0.2]}, "sampler": "grid", "trials": 3}, "s.yaml: tune.trials: 3 is more than the grid's 2 points"),
    ({"space": {"lr": {"low": 0.1, "high": 1}}, "sampler": "grid", "trials": 1}, "s.yaml: tune.space: sampler: grid needs lists"),
])
def test_bad_tune_sections_are_one_line_errors_naming_the_field(tune, message):
    with pytest.raises(SuiteError) as exc:
        suite_with({"trials": 2, **tune})
    assert str(exc.value).startswith(message), str(exc.value)
    assert "\n" not in str(exc.value)


def test_tune_needs_a_validation_split():
    with pytest.raises(SuiteError, match=r"^s.yaml: tune: needs dataset.val_split"):
        parse_suite({**BASE, "dataset": {**BASE["dataset"], "val_split": None},
                     "tune": {"space": {"lr": [0.1]}}}, "s.yaml")


def test_cli_refuses_a_bad_tune_section_with_exit_2_and_writes_nothing(tmp_path):
    path, out = tmp_path / "s.yaml", tmp_path / "o"
    path.write_text(yaml.safe_dump({**BASE, "tune": {"space": {"lr": {"low": 1, "high": 0.1}}}}))
    proc = subprocess.run([sys.executable, "-m", "mpbench", "run", path, "--out", out],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("tune.space.lr: low (1) must be below high (0.1)")
    assert not out.exists()


def test_a_suite_without_tune_serialises_as_before():
    plain = parse_suite(BASE, "s.yaml").model_dump(mode="json")
    assert "tune" not in plain
    tuned = suite_with({"space": {"lr": {"low": 0.01, "high": 1, "log": True}}})
    assert tuned.model_dump(mode="json")["tune"]["space"] == {
        "lr": {"low": 0.01, "high": 1.0, "log": True}}


def test_trial_recipe_scales_the_schedule_to_the_tuning_epochs():
    suite = suite_with({"epochs": 10, "space": {"lr": [0.1, 0.2]}},
                       recipe={"epochs": 200, "schedule": "step", "warmup_epochs": 5,
                               "milestones": [60, 120, 160], "test_every": 50, "eval_every": 5})
    r = trial_recipe(suite, {"lr": 0.2})
    # by hand: 60, 120, 160 of 200 epochs -> 3, 6, 8 of 10; a 5-epoch warm-up -> 0.25
    assert (r.epochs, r.milestones, r.warmup_epochs, r.lr) == (10, (3, 6, 8), 0.25, 0.2)
    assert (r.eval_every, r.test_every) == (1, None)  # a validation curve, no test curve


def _trial_params(out, study="cifar_resnet_tiny"):
    data = json.loads((out / "tune" / study / "study.json").read_text())
    return [t["params"] for t in data["trials"]]


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_a_seeded_sampler_gives_the_same_trials_twice(tmp_path, sampler):
    suite = suite_with({"trials": 4, "sampler": sampler, "seed": 3,
                        "space": {"lr": {"low": 0.001, "high": 0.3, "log": True},
                                  "label_smoothing": [0.0, 0.1],
                                  "batch_size": {"low": 8, "high": 32}}})
    plans = plan_suite(suite)
    for out in (tmp_path / "a", tmp_path / "b"):
        tune_suite(suite, plans, out, echo=quiet, progress=False)
    first, second = _trial_params(tmp_path / "a"), _trial_params(tmp_path / "b")
    assert first == second and len(first) == 4
    assert len({json.dumps(p, sort_keys=True) for p in first}) == 4  # four different trials
    assert all(isinstance(p["batch_size"], int) and 8 <= p["batch_size"] <= 32 for p in first)
    other = suite_with({**suite.tune.model_dump(), "seed": 4})
    tune_suite(other, plans, tmp_path / "c", echo=quiet, progress=False)
    assert _trial_params(tmp_path / "c") != first  # the seed decides


LR_TASK = {**BASE, "dataset": {**BASE["dataset"], "num_train": 288, "num_test": 128,
                               "val_split": 64},
           "recipe": {**BASE["recipe"], "epochs": 2, "batch_size": 32, "eval_batch_size": 128,
                      "lr": 0.0001},  # deliberately bad: nothing is learnt in two epochs
           "models": [{"name": "cifar_resnet_tiny", "args": {"width": 8}}]}


def test_the_tuned_run_beats_a_bad_default_lr(tmp_path):
    untuned = parse_suite(LR_TASK, "u.yaml")
    run_suite(untuned, plan_suite(untuned), tmp_path / "u", echo=quiet, progress=False)
    tuned = parse_suite({**LR_TASK, "tune": {"trials": 3, "sampler": "grid",
                                            "space": {"lr": [0.0001, 0.003, 0.1]}}}, "t.yaml")
    counts = tune_suite(tuned, plan_suite(tuned), tmp_path / "t", echo=quiet, progress=False)
    assert counts["trials"] == 3 and counts["done"] == 1 and counts["failed"] == 0
    before = pd.read_csv(tmp_path / "u" / "results.csv").iloc[0]
    after = pd.read_csv(tmp_path / "t" / "results.csv").iloc[0]
    # 4 balanced classes: a net that learnt nothing is at chance, 25 %
    assert before.top1 <= 30 and after.top1 >= 50, (before.top1, after.top1)
    assert json.loads(after.tuned) == {"lr": 0.1}  # the grid's best lr, from the study
    study = json.loads((tmp_path / "t" / "tune" / "cifar_resnet_tiny" / "study.json").read_text())
    assert after.tune_trials == 3
    assert after.tune_best_val_top1 == max(t["value"] for t in study["trials"])
    assert after.tune_cost_s == pytest.approx(sum(t["train_time_s"] for t in study["trials"]))
    assert pd.isna(before.get("tuned"))  # untuned rows: not measured, never zero
    config = json.loads((tmp_path / "t" / "runs" / "cifar_resnet_tiny-s0" / "config.json").read_text())
    assert config["recipe"]["lr"] == 0.1 and config["recipe"]["epochs"] == 2  # the full recipe
    assert tune_status(tmp_path / "t")[0] | {"best_val_top1": None} == {
        "study": "cifar_resnet_tiny", "label": "cifar_resnet_tiny", "budget_gmacs": None,
        "trials": 3, "done": 3, "running": 0, "pending": 0, "pruned": 0, "best_val_top1": None}


def test_trials_never_evaluate_the_test_set(tmp_path, monkeypatch):
    """Record every evaluation with the phase it happened in: trials see the validation
    split only; each final run sees the test set once, after its last epoch."""
    import mpbench.suite.tuned as tuned_mod
    import mpbench.training.trainer as trainer

    phase, seen = ["final"], []
    real_evaluate, real_trial = trainer.evaluate, tuned_mod.run_trial

    def recording_evaluate(model, loader, autocast, split="test", *rest, **kw):
        seen.append((phase[0], split))
        return real_evaluate(model, loader, autocast, split, *rest, **kw)

    def trial_phase(*args, **kw):
        phase[0] = "trial"
        try:
            return real_trial(*args, **kw)
        finally:
            phase[0] = "final"

    monkeypatch.setattr(trainer, "evaluate", recording_evaluate)
    monkeypatch.setattr(tuned_mod, "run_trial", trial_phase)
    suite = suite_with({"trials": 2, "epochs": 2, "sampler": "random",
                        "space": {"lr": {"low": 0.01, "high": 0.1}}},
                       recipe={**BASE["recipe"], "epochs": 3}, seeds=[0, 1])
    tune_suite(suite, plan_suite(suite), tmp_path / "o", echo=quiet, progress=False)
    trials = [s for p, s in seen if p == "trial"]
    finals = [s for p, s in seen if p == "final"]
    assert trials == ["val"] * 4  # 2 trials x 2 epochs, validation only
    # each final run: the clean test set once after its last epoch, then the built-in
    # corruption set's 5 corruptions x 3 severities (docs/evaluation.md); none in the trials
    assert finals.count("test") == 2 * (1 + 5 * 3) and finals.count("val") == 6  # 2 seeds x 3 epochs
    results = pd.read_csv(tmp_path / "o" / "results.csv")
    assert list(results.test_evals) == [1, 1] and results.top1.notna().all()
