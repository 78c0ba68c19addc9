"""``benchmarks/gpu_check.py --device cpu --quick`` end to end: every stage recorded.

On this CPU the CUDA tests all skip (with their reason), the bench measures the tiny pair with
both ``path_conv`` implementations (``--compile`` is left out in CPU quick mode, recorded), and
the study trains on synthetic data with two ``mpbench run`` workers and writes a report.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO, python_process

STAGES = ("environment", "cuda_tests", "bench", "study")


def test_gpu_check_cpu_quick_writes_every_stage(tmp_path):
    out = tmp_path / "gpu-check"
    # a data root that does not exist: the quick study must fall back to synthetic data
    proc = python_process(REPO / "benchmarks" / "gpu_check.py", "--device", "cpu", "--quick",
                          "--out", out, "--data-root", tmp_path / "no-such-data", cwd=REPO)
    try:
        log, _ = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("gpu_check.py --device cpu --quick ran over 300 s")
    assert proc.returncode == 0, log
    rec = json.loads((out / "gpu_check.json").read_text())
    summary = (out / "summary.md").read_text()
    assert set(rec["stages"]) == set(STAGES), rec["stages"].keys()
    for name in STAGES:
        st = rec["stages"][name]
        assert st["status"] in ("ok", "partial", "skipped"), (name, st)
        assert st["wall_s"] >= 0 and f"| {name} | {st['status']} |" in summary
    assert rec["stages"]["environment"]["figures"]["torch"] and rec["date"] and rec["device"] == "cpu"

    tests = rec["stages"]["cuda_tests"]["figures"]
    if not __import__("torch").cuda.is_available():
        assert tests["tests"] >= 7 and tests["skipped"] == tests["tests"], tests
        assert all("CUDA" in r or "GPU" in r for r in tests["skip_reasons"].values()), tests

    bench = rec["stages"]["bench"]
    assert bench["status"] == "ok", bench
    rows = bench["figures"]["results"]
    assert {r["path_conv"] for r in rows} == {None, "grouped", "loop"}
    assert all(r["train_img_s"] > 0 and 0 < r["train_mfu"] < 1 for r in rows), rows
    skipped = [j for j in bench["figures"]["jobs"] if j["status"] == "skipped"]
    assert skipped and all(j["compile"] and "--compile" in j["reason"] for j in skipped)
    assert "path_conv" in rec["path_conv_recommendation"]

    study = rec["stages"]["study"]
    assert study["status"] == "ok", study
    f = study["figures"]
    assert f["done"] == f["runs"] == 8 and f["workers"] == 2 and f["epochs"] >= 1
    assert any("synthetic" in n for n in f["notes"])
    assert (out / "study-suite.yaml").exists() and (out / "report" / "report.md").exists()
    assert set(f["by_label"]) == {"resnet-tiny", "mp-tiny-p2-none", "mp-tiny-p2-static",
                                  "mp-tiny-p2-fdcc"}
    assert "resnet-tiny" in summary and "path_conv:" in summary


def test_gpu_check_refuses_an_earlier_checks_folder(tmp_path):
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "results.csv").write_text("suite\n")
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--out",
                        str(tmp_path), "--device", "cpu", "--quick"], capture_output=True, text=True)
    assert r.returncode == 2 and "earlier check" in r.stderr
