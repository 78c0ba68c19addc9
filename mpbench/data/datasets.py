"""Data sets held whole in memory as uint8 tensors.

Every data set becomes one :class:`Dataset` of uint8 ``N x 3 x H x W`` tensors plus labels,
whatever it is stored as on disk: CIFAR-10/100 pickles, an image folder (decoded once, then
cached as one ``.npz``) or synthetic data for tests. The training pipeline (``mpbench.data.loader``)
moves these tensors to the device once and augments whole batches there.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from mpbench.errors import UserError

CIFAR_URLS = {
    "cifar10": ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                "c58f30108f718f92721af3b95e74349a", "cifar-10-batches-py"),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                 "eb9058c3a382ffc7106e4002c42a8d85", "cifar-100-python"),
}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class DataError(UserError):
    """A data set is missing or unreadable; the message says what to fetch and where."""


def balanced_order(labels: torch.Tensor, num_classes: int, seed: int) -> torch.Tensor:
    """Indices round-robin over the classes, each class shuffled by a generator of its own
    (``seed``): any prefix is as class-balanced as it can be (subsets, validation splits)."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=g)
    rank = torch.empty_like(order)
    for c in range(num_classes):
        idx = order[labels[order] == c]
        rank[idx] = torch.arange(len(idx)) * num_classes + c
    return torch.sort(rank).indices


def val_split_order(labels: torch.Tensor, classes: list[str], n: int, seed: int,
                    source: str) -> torch.Tensor:
    """:func:`balanced_order` of the training labels, whose first ``n`` indices are an
    ``n``-image validation split with ``n / len(classes)`` of every class; a DataError naming
    the field and ``source`` when no such split exists."""
    per_class, rest = divmod(n, len(classes))
    if rest or n >= len(labels):
        raise DataError(f"dataset.val_split: {n} images cannot be held out of {source}'s "
                        f"{len(labels)} training images in {len(classes)} classes "
                        f"(need a multiple of {len(classes)}, below {len(labels)})")
    order = balanced_order(labels, len(classes), seed)
    counts = torch.bincount(labels[order[:n]], minlength=len(classes))
    if bool((counts != per_class).any()):  # a small class: the round robin ran out of it
        short = int(torch.argmin(counts))
        raise DataError(f"dataset.val_split: class {classes[short]} has only "
                        f"{int(counts[short])} training images, {per_class} needed per class")
    return order


@dataclass
class Dataset:
    name: str
    train_x: torch.Tensor  # uint8 N x C x H x W
    train_y: torch.Tensor  # int64 N
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    train_coarse: torch.Tensor | None = None  # CIFAR-100 superclass labels
    test_coarse: torch.Tensor | None = None
    coarse_classes: list[str] | None = None

    mean: tuple[float, ...] = ()  # per-channel statistics of the training images, in [0, 1]
    std: tuple[float, ...] = ()
    # the validation split (``split_val``): training images held out, None when there is none
    val_x: torch.Tensor | None = None
    val_y: torch.Tensor | None = None
    val_coarse: torch.Tensor | None = None

    def __post_init__(self):
        if not self.mean:
            self.mean, self.std = channel_stats(self.train_x)

    def _balanced_order(self, seed: int) -> torch.Tensor:
        return balanced_order(self.train_y, self.num_classes, seed)

    def subset(self, n: int, seed: int = 0) -> "Dataset":
        """A class-balanced training subset of ``n`` images (the same one for every run)."""
        if n >= len(self.train_y):
            return self
        keep = self._balanced_order(seed)[:n].sort().values
        pick = lambda t: t[keep] if t is not None else None  # noqa: E731
        return Dataset(self.name, self.train_x[keep], self.train_y[keep], self.test_x,
                       self.test_y, self.classes, pick(self.train_coarse), self.test_coarse,
                       self.coarse_classes, self.mean, self.std, self.val_x, self.val_y,
                       self.val_coarse)

    def split_val(self, n: int, seed: int = 0) -> "Dataset":
        """Hold out ``n`` training images, ``n / num_classes`` of every class, as the
        validation split; the rest stay the training set (whose channel statistics are
        recomputed: nothing of the validation images reaches the normalisation).

        The images depend on the training set and ``seed`` only (a generator of their own,
        never a run's seed), so every run of a suite holds out the same ones.
        """
        order = val_split_order(self.train_y, self.classes, n, seed, self.name)
        held = order[:n].sort().values
        keep = order[n:].sort().values
        pick = lambda t, i: t[i] if t is not None else None  # noqa: E731
        return Dataset(self.name, self.train_x[keep], self.train_y[keep], self.test_x,
                       self.test_y, self.classes, pick(self.train_coarse, keep),
                       self.test_coarse, self.coarse_classes,
                       val_x=self.train_x[held], val_y=self.train_y[held],
                       val_coarse=pick(self.train_coarse, held))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])


def channel_stats(x: torch.Tensor, chunk: int = 8192) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1], in chunks so 50k images need little memory."""
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros(x.shape[1], dtype=torch.float64)
    for i in range(0, len(x), chunk):
        xf = x[i:i + chunk].to(torch.float64)
        total += xf.sum(dim=(0, 2, 3))
        squares += xf.square().sum(dim=(0, 2, 3))
    n = x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / n
    std = (squares / n - mean.square()).clamp_min(0).sqrt()
    return tuple((mean / 255).tolist()), tuple((std / 255).tolist())


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 images -> float, normalised per channel (works on any device, on whole batches)."""
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1) * 255
    std_t = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1) * 255
    return (x.float() - mean_t) / std_t


# --------------------------------------------------------------------------- CIFAR pickles

def _unpickle(path: Path) -> dict:
    """Load one CIFAR pickle. The originals are Python 2 pickles whose keys arrive as str
    (with latin1) or bytes (if re-pickled by Python 3 tools); accept both."""
    with open(path, "rb") as f:
        raw = pickle.load(f, encoding="latin1")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in raw.items()}


def _text(name) -> str:
    return name.decode("latin1") if isinstance(name, bytes) else str(name)


def _to_chw(data) -> torch.Tensor:
    return torch.from_numpy(np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32).copy())


def read_cifar10(folder: Path) -> Dataset:
    """Read ``cifar-10-batches-py`` (data_batch_1..5, test_batch, batches.meta)."""
    train = [_unpickle(folder / f"data_batch_{i}") for i in range(1, 6)]
    test = _unpickle(folder / "test_batch")
    meta = _unpickle(folder / "batches.meta")
    return Dataset(
        "cifar10",
        _to_chw(np.concatenate([b["data"] for b in train])),
        torch.tensor([y for b in train for y in b["labels"]], dtype=torch.int64),
        _to_chw(test["data"]), torch.tensor(test["labels"], dtype=torch.int64),
        [_text(n) for n in meta["label_names"]])


def read_cifar100(folder: Path) -> Dataset:
    """Read ``cifar-100-python`` (train, test, meta), keeping the 20 coarse labels."""
    train, test, meta = (_unpickle(folder / n) for n in ("train", "test", "meta"))
    return Dataset(
        "cifar100",
        _to_chw(train["data"]), torch.tensor(train["fine_labels"], dtype=torch.int64),
        _to_chw(test["data"]), torch.tensor(test["fine_labels"], dtype=torch.int64),
        [_text(n) for n in meta["fine_label_names"]],
        torch.tensor(train["coarse_labels"], dtype=torch.int64),
        torch.tensor(test["coarse_labels"], dtype=torch.int64),
        [_text(n) for n in meta["coarse_label_names"]])


def load_cifar(name: str, root: Path, download: bool) -> Dataset:
    url, md5, folder_name = CIFAR_URLS[name]
    folder = root / folder_name
    if not folder.is_dir():
        if not download:
            raise DataError(
                f"{name} not found: expected {folder}; download {url} and extract it into "
                f"{root}, or set `dataset.download: true` in the suite")
        from torchvision.datasets.utils import download_and_extract_archive
        try:
            download_and_extract_archive(url, str(root), md5=md5)
        except Exception as exc:  # network errors come in many types
            raise DataError(f"{name}: download from {url} failed ({exc}); download it by hand "
                            f"and extract it into {root}") from None
    try:
        return read_cifar10(folder) if name == "cifar10" else read_cifar100(folder)
    except (OSError, KeyError, pickle.UnpicklingError, ValueError) as exc:
        raise DataError(f"{folder}: not a readable {name} pickle folder ({exc})") from None


# --------------------------------------------------------------------------- image folders

def to_rgb(img):
    """A PIL image as 8-bit RGB. PIL's ``convert("RGB")`` clips a 16-bit greyscale image
    (modes ``I;16*``, ``I``) at 255, so nearly every pixel turns white: such an image is
    scaled to 0..255 first (v * 255 / 65535, as ``decode: device`` reads it)."""
    from PIL import Image
    if img.mode.startswith("I;16") or img.mode == "I":
        v = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.clip(np.rint(v * 255 / 65535), 0, 255).astype(np.uint8), "L")
    return img.convert("RGB")


def _decode(data: bytes) -> np.ndarray:
    from PIL import Image
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(to_rgb(img), dtype=np.uint8).transpose(2, 0, 1)


def _iter_folder(root: Path) -> Iterable[tuple[str, str, bytes]]:
    for path in sorted(root.glob("*/*/*")):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.parts[-3] in ("train", "test"):
            yield path.parts[-3], path.parts[-2], path.read_bytes(), str(path)


def _iter_tar(archive: Path) -> Iterable[tuple[str, str, bytes]]:
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = Path(member.name).parts
            if (member.isfile() and len(parts) >= 3 and parts[-3] in ("train", "test")
                    and Path(member.name).suffix.lower() in IMAGE_SUFFIXES):
                yield parts[-3], parts[-2], tar.extractfile(member).read(), f"{archive}:{member.name}"


def _image_source(root: Path) -> tuple[Path, Iterable]:
    """An image folder, or a folder holding one .tar.gz of it (read without extracting)."""
    if (root / "train").is_dir() and (root / "test").is_dir():
        return root, _iter_folder(root)
    archives = sorted(root.glob("*.tar.gz")) + sorted(root.glob("*.tgz")) if root.is_dir() else []
    if root.is_file() and root.name.endswith((".tar.gz", ".tgz", ".tar")):
        archives = [root]
    if len(archives) == 1:
        return archives[0], _iter_tar(archives[0])
    raise DataError(f"{root}: expected an image folder with train/<class>/* and test/<class>/* "
                    f"(or one .tar.gz of it)")


def cache_dir() -> Path:
    return Path(os.environ.get("MPBENCH_CACHE", Path.home() / ".cache" / "mpbench"))


def load_image_folder(root: Path) -> Dataset:
    """Decode every image once; later loads read one cached ``.npz`` (seconds, not minutes)."""
    if not root.exists():
        raise DataError(f"{root}: image folder not found")
    source, items = _image_source(root)
    stat = source.stat()
    key = hashlib.sha1(f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    cache = cache_dir() / "imagefolder" / f"{key}.npz"
    if cache.exists():
        with np.load(cache, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    else:
        arrays = _decode_all(items, source)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, cache)
    classes = [str(c) for c in arrays["classes"]]
    t = torch.from_numpy
    return Dataset("imagefolder", t(arrays["train_x"]), t(arrays["train_y"]),
                   t(arrays["test_x"]), t(arrays["test_y"]), classes)


def _decode_all(items: Iterable, source: Path) -> dict[str, np.ndarray]:
    from tqdm import tqdm

    split_images: dict[str, list] = {"train": [], "test": []}
    split_names: dict[str, list] = {"train": [], "test": []}
    for split, cls, data, name in tqdm(items, desc=f"decoding {source.name} (once)", unit="img",
                                       disable=None):
        try:
            split_images[split].append(_decode(data))
        except (OSError, SyntaxError, ValueError) as exc:  # truncated / corrupt: nothing cached
            raise DataError(f"{name}: unreadable image ({exc}); replace or remove it (or use "
                            f"dataset.loader: stream, which skips and counts such files)") from None
        split_names[split].append(cls)
    classes = sorted(set(split_names["train"]))
    if not classes or not split_names["test"]:
        raise DataError(f"{source}: no images found under train/<class>/ and test/<class>/")
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(split_names["test"]) - set(classes))
    if unknown:
        raise DataError(f"{source}: test classes not in train: {unknown[:3]}")
    shapes = {im.shape for split in split_images.values() for im in split}
    if len(shapes) != 1:
        raise DataError(f"{source}: images differ in size ({sorted(shapes)[:3]}); resize them first")
    out = {"classes": np.array(classes)}
    for split in ("train", "test"):
        out[f"{split}_x"] = np.stack(split_images[split])
        out[f"{split}_y"] = np.array([index[c] for c in split_names[split]], dtype=np.int64)
    return out


# --------------------------------------------------------------------------- synthetic

def synthetic(num_classes: int = 10, num_train: int = 512, num_test: int = 256,
              image_size: int = 32, seed: int = 0) -> Dataset:
    """A small learnable problem: each class is a fixed random colour pattern plus noise.

    Coarse labels (``class // 2``) stand in for CIFAR-100 superclasses in tests.
    """
    g = torch.Generator().manual_seed(seed)
    templates = torch.rand(num_classes, 3, 4, 4, generator=g)
    templates = torch.nn.functional.interpolate(templates, size=image_size, mode="bilinear",
                                                align_corners=False)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % num_classes
        y = y[torch.randperm(n, generator=g)]
        x = templates[y] * 0.6 + torch.rand(n, 3, image_size, image_size, generator=g) * 0.4
        return (x * 255).round().to(torch.uint8), y

    train_x, train_y = draw(num_train)
    test_x, test_y = draw(num_test)
    n_coarse = max(1, num_classes // 2)
    return Dataset("synthetic", train_x, train_y, test_x, test_y,
                   [f"class{i}" for i in range(num_classes)], train_y // 2, test_y // 2,
                   [f"super{i}" for i in range(n_coarse)])


# --------------------------------------------------------------------------- entry point

def default_root() -> Path:
    return cache_dir() / "data"


def load_dataset(config, data_root: str | Path | None = None) -> Dataset:
    """Load the data set a suite names. ``config`` is a DatasetConfig or its dict.

    The root is ``data_root`` (``--data-root``: where the data live on this machine), else
    the suite's ``dataset.root`` (relative to the working directory), else
    ``~/.cache/mpbench/data``. For CIFAR it is the folder holding ``cifar-10-batches-py`` /
    ``cifar-100-python``; for an image folder, the folder itself (or one holding its .tar.gz).
    ``train_subset`` is applied first, then ``val_split`` holds out its validation images from
    what is left (:meth:`Dataset.split_val`).
    """
    cfg = config if isinstance(config, dict) else config.model_dump()
    name = cfg["name"]
    if name == "synthetic":
        data = synthetic(cfg.get("num_classes") or 10, cfg.get("num_train", 512),
                         cfg.get("num_test", 256), cfg.get("image_size", 32))
    else:
        data = _load_full(cfg, name, data_root)
    if cfg.get("train_subset"):
        data = data.subset(cfg["train_subset"])
    if cfg.get("val_split"):  # carved from the training images left after train_subset
        data = data.split_val(cfg["val_split"], cfg.get("val_seed") or 0)
    return data


def _load_full(cfg: dict, name: str, data_root) -> Dataset:
    root = Path(data_root or cfg.get("root") or default_root()).expanduser()
    if name in CIFAR_URLS:
        return load_cifar(name, root, bool(cfg.get("download")))
    return load_image_folder(root)
