"""Corrupted copies of a test set, for accuracy under common corruptions.

Two sources, each a sequence of ``(corruption, severity, images, labels)`` with uint8
N x C x H x W images:

- **CIFAR-10-C / CIFAR-100-C** (Hendrycks & Dietterich, ICLR 2019) when ``dataset.corruptions_root``
  names their folder: ``<corruption>.npy`` of shape (5 * N, H, W, C) uint8, severities 1-5
  one after another, and ``labels.npy`` (5 * N labels). Read memory-mapped, one severity at a
  time.
- otherwise **mpbench-c**, mpbench's own set (not CIFAR-10-C: other corruptions, other
  strengths): five corruptions at three severities made from the test images with
  torchvision's functional transforms (:data:`BUILTIN_SEVERITIES`). The noise is drawn from
  generators seeded by ``BUILTIN_SEED`` and the corruption, in fixed chunks, so every run of
  every suite sees the same images.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from mpbench.data.datasets import DataError

BUILTIN_SET = "mpbench-c"
BUILTIN_SEED = 0
#: corruption -> the parameter of each severity (light, medium, heavy)
BUILTIN_SEVERITIES = {
    "gaussian_noise": (0.04, 0.08, 0.12),   # std of additive noise, images in [0, 1]
    "gaussian_blur": (0.6, 1.0, 1.5),       # std in pixels (kernel 2 * ceil(3 std) + 1)
    "jpeg_compression": (60, 30, 10),       # JPEG quality
    "contrast": (0.5, 0.3, 0.15),           # blend factor with the mean grey (1 = unchanged)
    "brightness": (1.3, 1.6, 2.0),          # multiplicative factor (1 = unchanged)
}
CHUNK = 500  # images corrupted at a time (fixed: the noise draws depend on it)
KNOWN_SETS = {"cifar10": "CIFAR-10-C", "cifar100": "CIFAR-100-C"}

Corrupted = Iterator[tuple[str, int, torch.Tensor, torch.Tensor]]

__all__ = ["BUILTIN_SET", "BUILTIN_SEVERITIES", "builtin_corruption", "builtin_corruptions",
           "npy_corruptions", "check_corruptions_root", "corruption_set_name",
           "corrupted_test_sets"]


def builtin_corruption(images: torch.Tensor, name: str, severity: int) -> torch.Tensor:
    """``images`` (uint8 N x C x H x W) under corruption ``name`` at ``severity`` (1-3)."""
    from torchvision.transforms.v2 import functional as TF

    value = BUILTIN_SEVERITIES[name][severity - 1]
    index = list(BUILTIN_SEVERITIES).index(name)
    gen = torch.Generator().manual_seed(BUILTIN_SEED + 1000 * index + severity)
    out = []
    for chunk in images.cpu().split(CHUNK):
        if name == "gaussian_noise":
            x = chunk.float() / 255 + value * torch.randn(chunk.shape, generator=gen)
            y = (x.clamp(0, 1) * 255).round().to(torch.uint8)
        elif name == "gaussian_blur":
            k = min(2 * int(np.ceil(3 * value)) + 1, 2 * (min(chunk.shape[-2:]) // 2) - 1)
            y = TF.gaussian_blur(chunk, kernel_size=[k, k], sigma=[value, value])
        elif name == "jpeg_compression":
            with warnings.catch_warnings():  # torchvision 0.29 points to TorchCodec for JPEG
                warnings.simplefilter("ignore", DeprecationWarning)
                y = TF.jpeg(chunk, quality=int(value))
        elif name == "contrast":
            y = TF.adjust_contrast(chunk, value)
        elif name == "brightness":
            y = TF.adjust_brightness(chunk, value)
        else:
            raise KeyError(name)
        out.append(y)
    return torch.cat(out)


def builtin_corruptions(images: torch.Tensor, labels: torch.Tensor) -> Corrupted:
    """Every built-in corruption at every severity, made one at a time (memory: one copy)."""
    for name, levels in BUILTIN_SEVERITIES.items():
        for severity in range(1, len(levels) + 1):
            yield name, severity, builtin_corruption(images, name, severity), labels


def check_corruptions_root(root: str | Path, labels: torch.Tensor | None = None,
                           image_shape: tuple[int, ...] | None = None) -> list[Path]:
    """The corruption files of a CIFAR-10-C-style folder; :class:`DataError` naming
    ``dataset.corruptions_root`` and the file if it is not one (or does not match the test
    set's ``labels`` / C x H x W ``image_shape``)."""
    root = Path(root).expanduser()
    where = f"dataset.corruptions_root: {root}"
    if not root.is_dir():
        raise DataError(f"{where}: no such folder (it should hold <corruption>.npy and "
                        f"labels.npy, e.g. CIFAR-10-C)")
    label_file = root / "labels.npy"
    files = sorted(p for p in root.glob("*.npy") if p.name != "labels.npy")
    if not label_file.exists() or not files:
        raise DataError(f"{where}: needs labels.npy and at least one <corruption>.npy")
    all_labels = np.load(label_file, mmap_mode="r")
    if all_labels.ndim != 1 or len(all_labels) % 5:
        raise DataError(f"{where}: labels.npy: expected 5 severities x N labels, got shape "
                        f"{all_labels.shape}")
    n = len(all_labels) // 5
    if labels is not None and (n != len(labels) or not np.array_equal(
            np.asarray(all_labels[:n]), labels.cpu().numpy())):
        raise DataError(f"{where}: labels.npy does not match this suite's test set "
                        f"({len(labels)} images); is it the corrupted copy of another data set?")
    for f in files:
        arr = np.load(f, mmap_mode="r")
        expected = (5 * n, *image_shape[1:], image_shape[0]) if image_shape else None
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[0] != 5 * n or (
                expected and arr.shape != expected):
            raise DataError(f"{where}: {f.name}: expected uint8 of shape "
                            f"{expected or (5 * n, 'H', 'W', 'C')}, got {arr.dtype} {arr.shape}")
    return files


def npy_corruptions(root: str | Path, labels: torch.Tensor | None = None,
                    image_shape: tuple[int, ...] | None = None) -> Corrupted:
    """Every corruption and severity (1-5) of a CIFAR-10-C-style folder, one at a time."""
    files = check_corruptions_root(root, labels, image_shape)
    all_labels = torch.from_numpy(np.load(Path(root).expanduser() / "labels.npy").astype(np.int64))
    n = len(all_labels) // 5
    for f in files:
        arr = np.load(f, mmap_mode="r")
        for severity in range(1, 6):
            rows = np.array(arr[(severity - 1) * n:severity * n])  # a writable copy
            yield (f.stem, severity, torch.from_numpy(rows).permute(0, 3, 1, 2).contiguous(),
                   all_labels[(severity - 1) * n:severity * n])


def corruption_set_name(dataset: str, root: str | Path | None) -> str:
    """How results name the set: CIFAR-10-C / CIFAR-100-C, the folder's name, or mpbench-c."""
    if root is None:
        return BUILTIN_SET
    return KNOWN_SETS.get(dataset, Path(root).expanduser().name)


def corrupted_test_sets(data, root: str | Path | None = None) -> tuple[str, Corrupted]:
    """(set name, its corrupted copies) of ``data``'s test set: the .npy folder ``root`` if
    given, else the built-in set."""
    if root is None:
        return BUILTIN_SET, builtin_corruptions(data.test_x, data.test_y)
    return (corruption_set_name(data.name, root),
            npy_corruptions(root, data.test_y, tuple(data.test_x.shape[1:])))
