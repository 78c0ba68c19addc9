"""``mpbench bench`` and :mod:`mpbench.bench`: fields, budget matching, JSON, errors.

Tiny models and one timed step: these check what is reported, never how fast anything is.
"""
from __future__ import annotations

import json
import math

import pytest

from mpbench.bench.throughput import BenchResult, ModelSpec, bench_model, bench_models, matmul_peak, parse_model_spec
from mpbench.cli import main

FAST = dict(batch_size=4, steps=1, repeats=1, warmup=0, peak_n=64, device="cpu")


def _check_result(r: BenchResult) -> None:
    for key in ("train_img_s", "e2e_img_s", "infer_img_s", "train_gflops", "e2e_gflops",
                "infer_gflops", "peak_gflops", "train_mfu", "infer_mfu", "gmacs"):
        value = getattr(r, key)
        assert isinstance(value, float) and math.isfinite(value) and value > 0, key
    assert isinstance(r.params, int) and r.params > 0
    assert isinstance(r.pipeline_overhead, float) and r.pipeline_overhead < 1
    assert r.loader_ms > 0 and 0 < r.loader_share < 1
    # the derived figures follow from the measured ones
    assert r.train_gflops == pytest.approx(r.train_img_s * r.gmacs * 6)
    assert r.infer_gflops == pytest.approx(r.infer_img_s * r.gmacs * 2)
    assert r.train_mfu == pytest.approx(r.train_gflops / r.peak_gflops)
    assert r.pipeline_overhead == pytest.approx(1 - r.e2e_img_s / r.train_img_s)
    assert len(r.train_img_s_all) == len(r.e2e_img_s_all) == len(r.infer_img_s_all) == r.repeats
    assert r.device == "cpu" and r.dtype == "float32" and r.threads >= 1


def test_bench_model_reports_every_field():
    r = bench_model("cifar_resnet_tiny", **FAST)
    _check_result(r)
    assert r.model == r.label == "cifar_resnet_tiny"
    assert r.budget_gmacs is None
    assert r.args["width"] == 8 and r.args["num_classes"] == 100
    json.dumps(r.as_dict())  # JSON-safe


def test_bench_interleaves_several_models_and_variants():
    specs = [parse_model_spec("mp_resnet_tiny:path_conv=grouped"),
             parse_model_spec("mp_resnet_tiny:path_conv=loop")]
    results = bench_models(specs, repeats=2, **{k: v for k, v in FAST.items() if k != "repeats"})
    assert [r.label for r in results] == ["mp_resnet_tiny:path_conv=grouped",
                                          "mp_resnet_tiny:path_conv=loop"]
    assert [r.args["path_conv"] for r in results] == ["grouped", "loop"]
    assert results[0].gmacs == results[1].gmacs  # same model, same MACs
    assert results[0].peak_gflops == results[1].peak_gflops  # one peak per run
    for r in results:
        _check_result(r)
        assert r.repeats == 2


def test_budget_matches_the_model_first():
    from mpbench.complexity.matching import match_budget

    budget = 0.0072  # about twice cifar_resnet_tiny's default (width 8: 0.00334 GMACs)
    r = bench_model("cifar_resnet_tiny", budget=budget, **FAST)
    m = match_budget("cifar_resnet_tiny", budget)
    assert r.budget_gmacs == budget
    assert r.args[m.knob] == m.knob_value != 8
    assert r.gmacs == pytest.approx(m.gmacs) == pytest.approx(budget, rel=0.02)
    assert r.params == m.params


def test_parse_model_spec():
    s = parse_model_spec("mp_resnet20_p4_fdcc:path_conv=loop:width=9", {"drop_rate": 0.1})
    assert s == ModelSpec("mp_resnet20_p4_fdcc", {"drop_rate": 0.1, "path_conv": "loop", "width": 9},
                          "mp_resnet20_p4_fdcc:path_conv=loop:width=9")
    assert parse_model_spec("cifar_resnet20").display == "cifar_resnet20"


def test_matmul_peak_positive():
    assert matmul_peak("cpu", n=64, repeats=2, inner=1) > 0
    r = bench_model("cifar_resnet_tiny", **{**FAST, "repeats": 2})
    assert len(r.peak_gflops_all) == 3 and r.peak_gflops == sorted(r.peak_gflops_all)[1]


def test_cli_json_parses(capsys):
    rc = main(["bench", "cifar_resnet_tiny", "--batch-size", "4", "--steps", "1", "--repeats", "1",
               "--warmup", "0", "--peak-size", "64", "--device", "cpu", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["machine"]["cores"] >= 1 and out["machine"]["torch"]
    (row,) = out["results"]
    assert row["model"] == "cifar_resnet_tiny" and row["train_img_s"] > 0
    assert 0 < row["train_mfu"] and row["peak_gflops"] > 0


def test_cli_table(capsys):
    rc = main(["bench", "cifar_resnet_tiny", "--batch-size", "4", "--steps", "1", "--repeats", "1",
               "--warmup", "0", "--peak-size", "64", "--device", "cpu"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "matmul peak" in out and "cifar_resnet_tiny" in out


@pytest.mark.parametrize("decode", ["cpu", "device"])
def test_cli_stream_bench_json(tmp_path, capsys, decode):
    """``--loader stream``: the in-memory row and one row per worker count, each pipeline
    having read real batches of the folder (``--decode device``: decoded in-process)."""
    from test_streaming import write_folder

    root = write_folder(tmp_path / "imgs", n_train=8)
    rc = main(["bench", "cifar_resnet_tiny", "--loader", "stream", "--data-root", str(root),
               "--workers", "0,1", "--batch-size", "4", "--image-size", "16", "--steps", "1",
               "--repeats", "1", "--device", "cpu", "--decode", decode, "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["decode"] == decode and out["size"] == 16 and out["batch_size"] == 4
    assert [r["workers"] for r in out["stream"]] == [0, 1]
    for r in out["stream"] + [out["memory"]]:
        assert r["loader_img_s"] > 0 and r["e2e_img_s"] > 0 and 0 <= r["data_wait_share"] <= 1


@pytest.mark.parametrize("argv, needle", [
    (["bench", "no_such_model", "--device", "cpu"], "unknown model 'no_such_model'"),
    (["bench", "cifar_resnet_tiny", "--loader", "stream", "--device", "cpu"], "--data-root"),
    (["bench", "cifar_resnet_tiny", "--decode", "device", "--device", "cpu"], "--loader stream"),
    (["bench", "cifar_resnet_tiny", "--steps", "0", "--device", "cpu"], "--steps"),
    (["bench", "cifar_resnet_tiny:width", "--device", "cpu"], "expected NAME:key=value"),
])
def test_cli_user_errors_are_one_line(capsys, argv, needle):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mpbench bench: error:") and needle in lines[0]


def test_channels_last_is_a_bench_option_per_model():
    specs = [parse_model_spec("cifar_resnet_tiny"), parse_model_spec("cifar_resnet_tiny:channels_last=on")]
    plain, cl = bench_models(specs, **FAST)
    assert (plain.channels_last, cl.channels_last) == (False, True)
    assert "channels_last" not in cl.args and cl.label == "cifar_resnet_tiny:channels_last=on"
    _check_result(cl)


def test_step_interleaving_reports_the_same_fields():
    results = bench_models(["cifar_resnet_tiny", "mp_resnet_tiny"], interleave="step",
                           **{**FAST, "steps": 2})
    for r in results:
        _check_result(r)
        assert r.interleave == "step"
