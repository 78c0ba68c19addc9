"""Path-specialisation analysis: the maths on synthetic allocations, then end to end on a
tiny model and the synthetic data set, then the CLI's error path."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
import torch.nn as nn
from torch.testing import assert_close

from mpbench.report.analyze import (analyze_model, mutual_information, path_usage, shuffled_specialisation,
                             specialisation, usage_by_label)
from mpbench.data import synthetic
from mpbench.errors import UserError
from mpbench.models.mp_resnet import mp_resnet_by_depth

G = torch.Generator().manual_seed(0)


def labels(n=800, k=8):
    return torch.arange(n) % k


def onehot(idx, p):
    return torch.nn.functional.one_hot(idx, p).double()


def test_perfectly_class_specialised_allocation_scores_one():
    y = labels(k=8)
    assert specialisation(onehot(y % 4, 4), y) == pytest.approx(1.0)  # 2 classes per path
    y4 = labels(k=4)
    assert specialisation(onehot((y4 + 1) % 4, 4), y4) == pytest.approx(1.0)  # a permutation


def test_uniform_or_label_blind_allocation_scores_zero():
    y = labels(k=8)
    assert specialisation(torch.full((len(y), 4), 0.25, dtype=torch.float64), y) == 0.0
    same = torch.tensor([0.7, 0.1, 0.1, 0.1]).expand(len(y), 4)  # skewed, but for everyone
    assert specialisation(same, y) == pytest.approx(0.0, abs=1e-6)
    y_big = labels(n=20000, k=8)
    blind = onehot(torch.randint(0, 4, (20000,), generator=G), 4)  # random, label-independent
    assert specialisation(blind, y_big) < 0.01


def test_partial_specialisation_is_in_between_and_above_chance():
    y = labels(k=8)
    soft = 0.4 * onehot(y % 4, 4) + 0.6 / 4  # class-specific but soft
    score = specialisation(soft, y)
    assert 0.05 < score < 0.9
    assert shuffled_specialisation(soft, y) < 0.05 < score


def test_mutual_information_bounds_and_units():
    y = labels(k=8)
    mi, hy, hz = mutual_information(onehot(y % 4, 4), y)
    assert hy == pytest.approx(math.log(8)) and hz == pytest.approx(math.log(4))
    assert mi == pytest.approx(math.log(4))
    u = torch.rand(len(y), 4, generator=G).double()
    mi, hy, hz = mutual_information(u / u.sum(1, keepdim=True), y)
    assert 0 <= mi <= min(hy, hz)


def test_path_usage_axes_and_channel_averaging():
    # softmax_dest-style α: source i sends everything to destination 2 -> usage one-hot on 2
    a = torch.zeros(3, 4, 4)
    a[:, :, 2] = 1
    assert_close(path_usage(a), onehot(torch.full((3,), 2), 4))
    # softmax_src-style α: destinations read only source 1 -> source usage one-hot on 1
    b = torch.zeros(3, 4, 4)
    b[:, 1, :] = 1
    assert_close(path_usage(b, "src"), onehot(torch.full((3,), 1), 4))
    assert_close(path_usage(b, "dest"), torch.full((3, 4), 0.25, dtype=torch.float64))
    # per-channel gates are averaged over channels first
    c = torch.stack([a, torch.ones(3, 4, 4) / 4], -1)  # B x P x P x 2
    assert_close(path_usage(c), 0.5 * onehot(torch.full((3,), 2), 4) + 0.5 * 0.25)
    rows = path_usage(torch.rand(5, 4, 4, generator=G))
    assert_close(rows.sum(1), torch.ones(5, dtype=torch.float64))


def test_usage_by_label():
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    means, counts = usage_by_label(u, torch.tensor([0, 0, 2]), 3)
    assert counts.tolist() == [2, 0, 1]
    assert_close(means[0], torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert torch.isnan(means[1]).all()


def tiny_pair(num_classes=4):
    torch.manual_seed(0)
    untrained = mp_resnet_by_depth(8, width=4, paths=2, route="fdcc", num_classes=num_classes).eval()
    trained = mp_resnet_by_depth(8, width=4, paths=2, route="fdcc", num_classes=num_classes)
    trained.load_state_dict(untrained.state_dict())
    for g in trained.gates().values():  # stand-in for training: gates that depend on input
        nn.init.normal_(g.fc2.weight, std=3.0)
    return trained.eval(), untrained


def test_analyze_model_end_to_end(tmp_path):
    data = synthetic(num_classes=4, num_train=8, num_test=48, image_size=16)
    trained, untrained = tiny_pair()
    res = analyze_model(trained, untrained, data, tmp_path / "out", device="cpu", batch_size=20)
    assert res["layers"] == ["stages.1.route0", "stages.2.route0"] and res["paths"] == 2
    assert set(res["specialisation"]) == {"class", "superclass"}
    cls = res["specialisation"]["class"]
    assert cls["untrained"] == pytest.approx(0.0, abs=1e-9)  # W2 = 0: α ignores the input
    assert cls["trained"] > 0
    assert set(cls["per_layer"]) == set(res["layers"])
    out = tmp_path / "out"
    for name in ("path_usage_class.csv", "path_usage_class.png", "path_usage_superclass.csv",
                 "path_usage_superclass.png", "specialisation.csv", "analysis.json"):
        assert (out / name).stat().st_size > 0, name
    usage = pd.read_csv(out / "path_usage_class.csv")
    assert len(usage) == 4 * 2 * 2  # classes x layers x paths
    per_label = usage.groupby(["label", "layer"]).usage.sum()
    assert ((per_label - 1).abs() < 1e-9).all()
    assert json.loads((out / "analysis.json").read_text())["specialisation"]["class"]["trained"] == \
        pytest.approx(cls["trained"])


def test_analyze_model_without_coarse_labels_and_without_gates(tmp_path):
    data = synthetic(num_classes=4, num_train=8, num_test=16, image_size=16)
    data.test_coarse, data.coarse_classes = None, None
    trained, untrained = tiny_pair()
    res = analyze_model(trained, untrained, data, None, device="cpu")
    assert set(res["specialisation"]) == {"class"} and res["files"] == []
    none = mp_resnet_by_depth(8, width=4, paths=2, route="none", num_classes=4)
    with pytest.raises(UserError, match="no cross-connections"):
        analyze_model(none, none, data, tmp_path, device="cpu")


def test_cli_reports_a_missing_run_dir_as_a_user_error(tmp_path, capsys):
    from mpbench.cli import main
    assert main(["analyze", str(tmp_path / "nope")]) == 2
    assert "not a run directory" in capsys.readouterr().err


def make_run_dir(tmp_path):
    """A finished run as ``mpbench.suite.runner`` lays it out: config.json + checkpoint.pt."""
    from mpbench.registry import get_entry
    from mpbench.training.trainer import seed_everything

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    args = get_entry("mp_resnet_tiny").args(num_classes=4)
    config = {"model": "mp_resnet_tiny", "args": args, "seed": 3,
              "dataset": {"name": "synthetic", "num_classes": 4, "num_train": 8, "num_test": 24,
                          "image_size": 16}}
    (run_dir / "config.json").write_text(json.dumps(config))
    seed_everything(3)
    from mpbench.registry import create_model
    model = create_model("mp_resnet_tiny", **args)
    for g in model.gates().values():
        nn.init.normal_(g.fc2.weight, std=3.0)
    torch.save({"model": model.state_dict(), "optimizer": {}, "epoch": 1, "rng": {}, "history": []},
               run_dir / "checkpoint.pt")
    return run_dir


def test_analyze_run_and_cli_on_a_run_directory(tmp_path, capsys):
    from mpbench.report.analyze import analyze_run
    from mpbench.cli import main

    run_dir = make_run_dir(tmp_path)
    res = analyze_run(run_dir, device="cpu")
    assert res["model"] == "mp_resnet_tiny" and (run_dir / "analysis" / "analysis.json").exists()
    s = res["specialisation"]["class"]
    assert s["untrained"] == pytest.approx(0.0, abs=1e-9) and s["trained"] > 0
    assert main(["analyze", str(run_dir), "--out", str(tmp_path / "a"), "--json",
                 "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["specialisation"]["class"]["trained"] == pytest.approx(s["trained"])
    assert main(["analyze", str(run_dir), "--out", str(tmp_path / "b"), "--device", "cpu"]) == 0
    assert "superclass" in capsys.readouterr().out
