"""Corrupted test sets (built-in mpbench-c, CIFAR-10-C-format .npy), the corruption fields of a
run, `mpbench evaluate` on a finished run, and reports of results made before these fields."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from mpbench.cli import main
from mpbench.data import synthetic
from mpbench.data.corruptions import (BUILTIN_SEVERITIES, builtin_corruption, npy_corruptions)
from mpbench.data.datasets import DataError

from conftest import TINY_SUITE

NEW_FIELDS = ("nll", "ece", "brier", "superclass_top1", "corrupt_top1", "corrupt_set",
              "corruptions", "reliability")


def test_builtin_corruptions_are_deterministic_and_change_the_images():
    images = synthetic(num_classes=4, num_train=8, num_test=40, image_size=16).test_x
    for name in BUILTIN_SEVERITIES:
        torch.manual_seed(1)  # the global RNG must not matter
        first = [builtin_corruption(images, name, s) for s in (1, 2, 3)]
        torch.manual_seed(2)
        again = [builtin_corruption(images, name, s) for s in (1, 2, 3)]
        change = []
        for a, b in zip(first, again):
            assert a.dtype == torch.uint8 and a.shape == images.shape
            assert torch.equal(a, b), name
            change.append((a.float() - images.float()).abs().mean().item())
        assert 0 < change[0] < change[1] < change[2], (name, change)  # severities grow


def _write_npy_set(root, labels, names=("fog", "snow"), size=8):
    """CIFAR-10-C's format: <corruption>.npy (5 * N, H, W, 3) uint8 and labels.npy (5 * N)."""
    root.mkdir()
    n = len(labels)
    for k, name in enumerate(names):
        arr = np.zeros((5 * n, size, size, 3), dtype=np.uint8)
        for s in range(5):
            arr[s * n:(s + 1) * n] = 10 * k + s  # every pixel says (corruption, severity)
        arr[0, 1, 2] = (7, 8, 9)  # one pixel of image 0 at severity 1: channel order
        np.save(root / f"{name}.npy", arr)
    np.save(root / "labels.npy", np.tile(labels.numpy(), 5))


def test_npy_loader_reads_the_cifar_c_format(tmp_path):
    labels = torch.tensor([3, 1, 0, 2])
    _write_npy_set(tmp_path / "c", labels)
    got = list(npy_corruptions(tmp_path / "c", labels, (3, 8, 8)))
    assert [(c, s) for c, s, _, _ in got] == [(c, s) for c in ("fog", "snow") for s in range(1, 6)]
    for k, (_, s, x, y) in enumerate(got):
        assert x.shape == (4, 3, 8, 8) and x.dtype == torch.uint8
        assert torch.equal(y, labels)
        assert int(x[1, 0, 0, 0]) == 10 * (k // 5) + (s - 1)
    assert got[0][2][0, :, 1, 2].tolist() == [7, 8, 9]  # HWC -> CHW
    with pytest.raises(DataError, match="corruptions_root.*labels.npy does not match"):
        list(npy_corruptions(tmp_path / "c", torch.tensor([0, 1, 2, 3])))
    with pytest.raises(DataError, match=r"corruptions_root.*fog.npy: expected uint8 of shape"):
        list(npy_corruptions(tmp_path / "c", labels, (3, 16, 16)))
    with pytest.raises(DataError, match="corruptions_root.*no such folder"):
        list(npy_corruptions(tmp_path / "missing", labels))


def _run(tmp_path, text):
    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / "s.yaml"
    path.write_text(text)
    out = tmp_path / "o"
    assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 0
    return out, out / "runs" / "cifar_resnet_tiny-s0"


def test_run_records_the_scores_and_evaluate_fills_in_old_runs(tmp_path, capsys):
    out, run_dir = _run(tmp_path, TINY_SUITE)
    new = json.loads((run_dir / "result.json").read_text())
    assert new["corrupt_set"] == "mpbench-c" and set(new["corruptions"]) == set(BUILTIN_SEVERITIES)
    assert all(len(v["severities"]) == 3 for v in new["corruptions"].values())
    assert new["corrupt_top1"] == pytest.approx(np.mean(
        [t for v in new["corruptions"].values() for t in v["severities"]]))
    assert new["nll"] == pytest.approx(new_loss := json.loads(
        (run_dir / "metrics.json").read_text())[-1]["test_loss"]) and new_loss > 0
    assert sum(new["reliability"]["count"]) == 32 and new["superclass_top1"] >= new["top1"]
    csv = pd.read_csv(out / "results.csv")
    assert {"nll", "ece", "brier", "superclass_top1", "corrupt_top1"} <= set(csv.columns)
    assert "reliability" not in csv.columns and "corruptions" not in csv.columns

    old = {k: v for k, v in new.items() if k not in NEW_FIELDS}  # as made before the fields
    (run_dir / "result.json").write_text(json.dumps(old))
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 0
    assert "[1/1] cifar_resnet_tiny-s0: nll" in capsys.readouterr().out
    again = json.loads((run_dir / "result.json").read_text())
    for k in NEW_FIELDS:  # the same weights give the same scores as at the end of training
        assert again[k] == (pytest.approx(new[k]) if isinstance(new[k], float) else new[k]), k
    assert again["top1"] == new["top1"] and again["evaluated_top1"] == pytest.approx(new["top1"])
    assert pd.read_csv(out / "results.csv").nll[0] == pytest.approx(new["nll"])
    assert main(["evaluate", str(out)]) == 0  # resumable: an evaluated run is skipped
    assert "evaluated earlier, skipped" in capsys.readouterr().out
    assert main(["evaluate", str(tmp_path)]) == 2


def test_opt_out_and_npy_root(tmp_path, capsys):
    text = TINY_SUITE.replace("deterministic: true}", "deterministic: true, corruptions: false}")
    out, run_dir = _run(tmp_path / "a", text)
    r = json.loads((run_dir / "result.json").read_text())
    assert r["corrupt_top1"] is None and r["nll"] is not None and "corrupt_top1" in r
    assert json.loads((run_dir / "config.json").read_text())["recipe"]["corruptions"] is False

    data = synthetic(num_classes=4, num_train=64, num_test=32, image_size=16)
    _write_npy_set(tmp_path / "c", data.test_y, size=16)
    text = TINY_SUITE.replace("image_size: 16}", f"image_size: 16, corruptions_root: "
                                                 f"{tmp_path / 'c'}}}")
    out, run_dir = _run(tmp_path / "b", text)
    r = json.loads((run_dir / "result.json").read_text())
    assert r["corrupt_set"] == "c" and set(r["corruptions"]) == {"fog", "snow"}
    assert all(len(v["severities"]) == 5 for v in r["corruptions"].values())
    # a missing folder: one line naming the field, exit 2, nothing written
    (tmp_path / "d").mkdir()
    path = tmp_path / "d" / "s.yaml"
    path.write_text(text.replace(str(tmp_path / "c"), str(tmp_path / "nothing")))
    capsys.readouterr()
    assert main(["run", str(path), "--out", str(tmp_path / "d" / "o")]) == 2
    assert "dataset.corruptions_root" in capsys.readouterr().err
    assert not (tmp_path / "d" / "o").exists()


def test_default_fields_leave_fingerprints_alone():
    from mpbench.config import DatasetConfig, Recipe

    assert "corruptions" not in Recipe().model_dump()
    assert Recipe(corruptions=False).model_dump()["corruptions"] is False
    assert "corruptions_root" not in DatasetConfig(name="cifar10").model_dump()
