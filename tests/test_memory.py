"""The memory axis (#27): activations against hand counts, measured peaks that behave as memory
must (grow with the batch, larger for more activations at equal MACs), runs recording them with
their method, the backfill of older runs, and reports of results made before memory existed
("not measured", never 0)."""
from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch.nn as nn

from conftest import TINY_SUITE
from mpbench.bench.memory import MemoryJob, measure_memory
from mpbench.complexity.activations import activations_model, count_activations

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- activations

def test_activations_of_a_small_network_match_a_hand_count():
    """Output elements of convolutions and linear layers only (fvcore's convention), batch 1."""
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),            # 4 x 16 x 16 = 1024
        nn.BatchNorm2d(4), nn.ReLU(),             # not counted
        nn.Conv2d(4, 8, 3, stride=2, padding=1),  # 8 x 8 x 8 = 512
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),    # not counted
        nn.Linear(8, 10),                         # 10
    )
    net.train()
    assert count_activations(net, (3, 16, 16)) == 1024 + 512 + 10
    assert net.training and net[1].training  # modes restored


def test_activations_of_resnet20_match_a_hand_count():
    """ResNet-20 (100 classes, 32x32): 19 3x3 convs (16x32x32 x7, 32x16x16 x6, 64x8x8 x6),
    2 downsampling 1x1 convs (32x16x16, 64x8x8), fc 100: 200,804."""
    hand = 7 * 16 * 32 * 32 + 6 * 32 * 16 * 16 + 6 * 64 * 8 * 8 + 32 * 16 * 16 + 64 * 8 * 8 + 100
    assert activations_model("cifar_resnet20", {}, input_size=(3, 32, 32),
                             num_classes=100) == hand == 200_804


def test_flops_prints_and_returns_the_activations(capsys):
    from mpbench.cli import main

    assert main(["flops", "cifar_resnet20", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["activations"] == 200_804 and out["activations_m"] == pytest.approx(0.200804)
    assert main(["flops", "cifar_resnet20"]) == 0
    assert "activations 0.201M" in capsys.readouterr().out


# --------------------------------------------------------------------------- measured peaks

def _peak(model, args, batch, classes=100):
    return measure_memory(MemoryJob(model, dict(args), batch, (3, 32, 32), classes, "off", "off"),
                          "cpu", timeout_s=240)


def test_cpu_peak_grows_with_the_batch_by_at_least_the_kept_activations():
    """Training keeps at least every convolution's output for the backward pass (batch norm
    needs its input), so 56 more images cost at least 56 x 200,804 floats (~43 MiB) more."""
    small, large = _peak("cifar_resnet20", {}, 8), _peak("cifar_resnet20", {}, 64)
    for m in (small, large):
        assert m["mem_method"] in ("cpu-rss-hwm", "cpu-ru-maxrss")
        assert m["mem_device"].startswith("cpu") and m["mem_batch_size"] in (8, 64)
    kept = 56 * 200_804 * 4 / 2 ** 20
    assert large["train_peak_mem_mb"] - small["train_peak_mem_mb"] >= kept, (small, large)
    assert large["infer_peak_mem_mb"] > small["infer_peak_mem_mb"], (small, large)
    # inference keeps nothing for a backward pass
    assert large["infer_peak_mem_mb"] < large["train_peak_mem_mb"], large


def test_more_activations_at_equal_macs_need_more_training_memory():
    """ResNet-18 (width 30.77) and ResNeSt-29 2s1x (base width 6.48) at the same ~0.13 GMACs
    (suites/cifar100.yaml): ResNeSt keeps ~7x the activations and needs more memory to train,
    although ResNet-18 has 2.5x its parameters (weights, gradients and momentum)."""
    from mpbench.complexity import count_model

    plain = ("cifar_resnet18", {"width": 30.7701})
    split = ("cifar_resnest29_2s1x64d", {"base_width": 6.4784})
    g = [count_model(m, a, input_size=(3, 32, 32), num_classes=100).gmacs for m, a in (plain, split)]
    assert g[1] == pytest.approx(g[0], rel=0.03), g  # equal MACs
    acts = [activations_model(m, a, input_size=(3, 32, 32), num_classes=100) for m, a in (plain, split)]
    assert acts[1] > 5 * acts[0], acts
    peaks = [_peak(m, a, 32)["train_peak_mem_mb"] for m, a in (plain, split)]
    assert peaks[1] > peaks[0], peaks


# --------------------------------------------------------------------------- runs and reports

def _run_tiny(tmp_path, monkeypatch, memory: str) -> Path:
    from mpbench.cli import main

    monkeypatch.setenv("MPBENCH_MEMORY", memory)
    path = tmp_path / "s.yaml"
    path.write_text(TINY_SUITE)
    out = tmp_path / "o"
    assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 0
    return out


def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_new_run_records_its_memory_with_the_method_and_the_report_shows_it(tmp_path,
                                                                              monkeypatch):
    from mpbench.report.build import build_report

    out = _run_tiny(tmp_path, monkeypatch, "on")
    (run_dir,) = [p for p in (out / "runs").iterdir() if p.is_dir()]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["activations_m"] > 0
    assert result["train_peak_mem_mb"] > result["infer_peak_mem_mb"] > 0
    assert result["mem_method"] in ("cpu-rss-hwm", "cpu-ru-maxrss")
    assert result["mem_batch_size"] == 16
    (row,) = _csv_rows(out / "results.csv")
    assert float(row["train_peak_mem_mb"]) == pytest.approx(result["train_peak_mem_mb"])
    assert row["mem_method"] == result["mem_method"]

    res = build_report(out, tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Memory" in md and result["mem_method"] in md
    line = next(x for x in md.splitlines() if x.startswith("| ") and "cifar_resnet_tiny" in x
                and "MiB" in x)
    assert f"{result['activations_m']:.3f}" in line and "not measured" not in line
    (srow,) = _csv_rows(tmp_path / "rep" / "summary.csv")
    assert float(srow["train_peak_mem_mb"]) == pytest.approx(result["train_peak_mem_mb"], rel=1e-5)
    assert srow["mem_method"] == result["mem_method"]
    assert (tmp_path / "rep" / "figures" / "top1_vs_train_memory.png").exists()
    assert "### Top-1 vs peak training memory" in md and "figures/top1_vs_train_memory.png" in md
    assert res["summary"][0]["train_peak_mem_mb"] == pytest.approx(result["train_peak_mem_mb"])
    first = {f: (tmp_path / "rep" / "figures" / f).read_bytes()
             for f in ("top1_vs_train_memory.png", "top1_vs_train_memory.svg")}
    build_report(out, tmp_path / "rep")  # reproducible, as the other figures
    assert all((tmp_path / "rep" / "figures" / f).read_bytes() == b for f, b in first.items())


def test_memory_off_counts_activations_and_backfill_fills_the_peaks(tmp_path, monkeypatch):
    from mpbench.cli import main
    from mpbench.suite.backfill import fill_memory

    out = _run_tiny(tmp_path, monkeypatch, "off")
    (row,) = _csv_rows(out / "results.csv")
    assert float(row["activations_m"]) > 0 and row["train_peak_mem_mb"] == ""
    counts = fill_memory(out, device="cpu", echo=lambda m: None)
    assert counts == {"filled": 1, "skipped": 0, "busy": 0, "failed": 0}
    (row,) = _csv_rows(out / "results.csv")
    assert float(row["train_peak_mem_mb"]) > 0 and row["mem_method"].startswith("cpu-")
    assert fill_memory(out, device="cpu", echo=lambda m: None)["skipped"] == 1
    # not a results directory: one line, exit 2
    assert main(["bench", "--memory-of", str(tmp_path / "nowhere")]) == 2


def test_results_made_before_memory_existed_still_report_not_measured(tmp_path):
    """The committed CPU report's results predate the memory columns: the report builds, the
    memory cells say "not measured" (never 0), summary.csv leaves them empty, no figure."""
    from mpbench.report.build import build_report

    src = tmp_path / "old"
    shutil.copytree(REPO / "reports" / "cifar10-jpg-cpu" / "results", src)
    header = _csv_rows(src / "results.csv")[0]
    assert "train_peak_mem_mb" not in header and "activations_m" not in header
    build_report(src, tmp_path / "rep", analyze=False)
    md = (tmp_path / "rep" / "report.md").read_text()
    section = md.split("## Memory", 1)[1].split("\n## ", 1)[0]
    (line,) = [x for x in section.splitlines() if "cifar_resnet20" in x]
    assert line.count("not measured") == 3 and " 0 MiB" not in line
    (srow,) = _csv_rows(tmp_path / "rep" / "summary.csv")
    assert all(srow[k] == "" for k in ("activations_m", "train_peak_mem_mb",
                                       "infer_peak_mem_mb", "mem_method"))
    assert not (tmp_path / "rep" / "figures" / "top1_vs_train_memory.png").exists()


def test_bench_prints_the_memory_table_with_its_method(capsys):
    from mpbench.cli import main

    rc = main(["bench", "cifar_resnet_tiny", "--batch-size", "4", "--steps", "1", "--repeats",
               "1", "--warmup", "0", "--peak-size", "64", "--device", "cpu", "--json"])
    assert rc == 0
    (row,) = json.loads(capsys.readouterr().out)["results"]
    assert row["activations_m"] > 0 and row["train_peak_mem_mb"] > 0
    assert row["mem_method"].startswith("cpu-") and row["mem_batch_size"] == 4


def test_bench_memory_only_skips_the_timing(capsys):
    from mpbench.cli import main

    rc = main(["bench", "--memory-only", "cifar_resnet_tiny", "--batch-size", "4", "--device",
               "cpu", "--classes", "10", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    (row,) = out["results"]
    assert "train_img_s" not in row and row["train_peak_mem_mb"] > row["infer_peak_mem_mb"] > 0
    assert row["mem_batch_size"] == 4 and row["args"]["num_classes"] == 10
    assert main(["bench", "--memory-only", "cifar_resnet_tiny", "--budget", "-1"]) == 2


# --------------------------------------------------------------------------- the shipped suite

@pytest.mark.slow
def test_flops_suite_cifar100_shows_activations_for_every_row(capsys):
    """``mpbench flops --suite suites/cifar100.yaml`` (#27's done-when): every row, matched or
    trained as given, has its activations (minutes: it matches 17 models to 2 budgets)."""
    from mpbench.cli import main

    main(["flops", "--suite", str(REPO / "suites" / "cifar100.yaml"), "--json"])
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert len(rows) == 34 and all(r["activations_m"] and r["activations_m"] > 0 for r in rows)
    # ResNet-18 trained as given (CIFAR stem, 100 classes): 614,500 by hand
    r18 = next(r for r in rows if r["label"] == "resnet18")
    assert r18["activations_m"] == pytest.approx(_resnet18_hand() / 1e6)


def _resnet18_hand() -> int:
    """CIFAR ResNet-18: stem conv 64x32x32; stage 1: 4 convs 64x32x32; stages 2-4: 4 convs
    each plus a 1x1 downsampling conv, at 128x16x16, 256x8x8, 512x4x4; fc 100."""
    return (64 * 32 * 32 * 5 + 128 * 16 * 16 * 5 + 256 * 8 * 8 * 5 + 512 * 4 * 4 * 5 + 100)


# --------------------------------------------------------------------------- --max-batch

@pytest.mark.parametrize("limit,start,cap", [(37, 1, 4096), (1, 1, 64), (64, 1, 64),
                                              (100, 1, 64), (1000, 3, 4096), (4, 8, 64)])
def test_largest_fitting_finds_the_threshold_by_doubling_then_bisection(limit, start, cap):
    from mpbench.bench.max_batch import largest_fitting

    calls = []

    def fits(b):
        calls.append(b)
        return b <= limit

    best = largest_fitting(fits, start, cap)
    expect = None if limit < start else min(limit, cap)
    assert best == expect, calls
    assert len(calls) == len(set(calls))  # never the same batch twice
    assert len(calls) <= 2 * max(1, (cap // start).bit_length()) + 1, calls


def test_max_batch_on_cpu_stays_under_the_limit_and_the_next_batch_does_not(capsys):
    """A limit between the measured peaks of batches 16 and 32 of the tiny net: the answer
    lies in [16, 32), its peak within the limit, and a batch one above it measured over."""
    from mpbench.bench.max_batch import max_batch
    from mpbench.cli import main

    job = MemoryJob("cifar_resnet_tiny", {"num_classes": 10}, 1, (3, 32, 32), 10, "off", "off")
    p16 = measure_memory(replace(job, batch_size=16), "cpu")["train_peak_mem_mb"]
    p32 = measure_memory(replace(job, batch_size=32), "cpu")["train_peak_mem_mb"]
    assert p32 > p16
    limit = (p16 + p32) / 2
    res = max_batch(job, "cpu", mem_limit_mb=limit, cap=256)
    assert 16 <= res["max_batch"] < 32, res
    assert res["peak_at_max_mb"] <= limit
    over = [p for p in res["probes"] if p["batch_size"] == res["max_batch"] + 1]
    assert over and over[0]["train_peak_mem_mb"] > limit, res["probes"]
    # the command: CPU without a limit is one line, exit 2
    assert main(["bench", "cifar_resnet_tiny", "--max-batch", "--device", "cpu"]) == 2
    assert "--mem-limit" in capsys.readouterr().err
