"""Image folders too large for memory, read by DataLoader worker processes.

``dataset.loader`` picks the pipeline of an image folder (``train/<class>/*``,
``test/<class>/*``):

- ``memory``: today's in-memory pipeline (:mod:`mpbench.data.datasets`: decoded once into
  uint8 tensors, augmented in whole batches on the device);
- ``stream``: this module. Worker processes decode each JPEG/PNG with PIL and apply timm's
  transforms (``timm.data.create_transform``): RandomResizedCrop (scale
  ``recipe.crop_scale_min``..1) and a horizontal flip for training; resize to
  ``crop_size / recipe.crop_pct`` and a centre crop for evaluation. Batches leave the
  workers as uint8 and are moved to the device, normalised (ImageNet mean/std, timm's
  constants) and made channels_last there, as the in-memory loader does;
- ``auto`` (default): ``memory`` when the decoded set (file count x 3 x H x W bytes, H x W
  read from the headers of up to 32 evenly spaced files, nothing decoded) fits
  ``dataset.memory_budget_gib`` (default 8 GiB, a fixed number and not a fraction of this
  machine's RAM, so the same suite picks the same pipeline on every machine, and a run
  never changes pipeline when it resumes elsewhere) and every sampled image has one size;
  else ``stream``.

Determinism: the sampler (:class:`ShardSampler`) draws the epoch's permutation from
(seed, epoch) and gives every position of it its own augmentation seed, with which the worker
seeds Python's and torch's RNGs (inside a fork, so the main process's RNGs are untouched)
before transforming that image. An epoch's batches are therefore the same whatever the
number of workers, and an epoch started at batch k (a mid-epoch resume) is exactly the tail
of the uninterrupted one.

Unreadable images (truncated or corrupt files) are skipped and counted: the batch holding one
is one image shorter, the loader records the file (``epoch_skipped``, ``skipped_files``) and
the trainer writes the count to metrics.json (``skipped_images``) and the run log. A large run
should not die hours in on one bad file of a million, and the same files are skipped in
every epoch and every resume, so results stay reproducible. Under DDP the count and names are
summed over the ranks; a rank's short batch there weighs its remaining images a little more
than one process would (each rank averages its own loss before DDP averages the ranks), so a
DDP run with skipped images differs from the 1-process run by that reweighting (about 3e-3 in
the loss for one bad image in a batch of 8). A batch with no readable image at
all is an error naming its first file. Folder-level problems (no images, an empty class
folder, a memory pipeline that does not fit) are :class:`DataError`s before anything is read.

``dataset.decode: device`` decodes on the run's device instead (nvJPEG on CUDA), the workers
only reading bytes: :mod:`mpbench.data.device_decode`. DALI is not used.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from mpbench.data.datasets import (IMAGE_SUFFIXES, DataError, balanced_order, normalize, to_rgb,
                                   val_split_order)

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # timm.data.IMAGENET_DEFAULT_MEAN / _STD
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_CROP = 224
HEADER_SAMPLES = 32


# --------------------------------------------------------------------------- the folder

def list_split(root: Path, split: str, classes: list[str] | None = None
               ) -> tuple[list[str], list[int], list[str]]:
    """(files, labels, classes) of ``root/split/<class>/*``, sorted; DataError on an empty
    class folder or an empty split."""
    base = root / split
    if not base.is_dir():
        raise DataError(f"{base}: missing (expected {root}/train/<class>/* and "
                        f"{root}/test/<class>/*)")
    found = sorted(p for p in base.iterdir() if p.is_dir())
    names = [p.name for p in found]
    if classes is None:
        classes = names
    else:
        unknown = sorted(set(names) - set(classes))
        if unknown:
            raise DataError(f"{base}: class folders not in train/: {unknown[:3]}")
    index = {c: i for i, c in enumerate(classes)}
    files, labels = [], []
    for folder in found:
        images = sorted(e.path for e in os.scandir(folder)
                        if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES)
        if not images:
            raise DataError(f"{folder}: a class folder with no images "
                            f"({', '.join(IMAGE_SUFFIXES)}); remove it or fill it")
        files += images
        labels += [index[folder.name]] * len(images)
    if not files:
        raise DataError(f"{base}: no images found under {split}/<class>/")
    return files, labels, classes


def decoded_bytes(files: list[str]) -> tuple[int, bool]:
    """(estimated bytes of the decoded uint8 RGB set, whether every sampled image has the
    same size), from the headers of up to HEADER_SAMPLES evenly spaced files."""
    from PIL import Image

    step = max(1, len(files) // HEADER_SAMPLES)
    sizes = []
    for path in files[::step][:HEADER_SAMPLES]:
        try:
            with Image.open(path) as img:  # lazy: reads the header only
                sizes.append(img.size)
        except (OSError, SyntaxError, ValueError):  # skipped when read, as in training
            continue
    if not sizes:
        raise DataError(f"{files[0]}: none of {len(files[::step][:HEADER_SAMPLES])} sampled "
                        f"files is a readable image")
    mean_pixels = sum(w * h for w, h in sizes) / len(sizes)
    return int(mean_pixels * 3 * len(files)), len(set(sizes)) == 1


def available_ram() -> int | None:
    """MemAvailable from /proc/meminfo in bytes (None where there is none)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def choose_loader(cfg: dict, root: Path) -> tuple[str, str]:
    """("memory" | "stream", why) for an image folder under ``dataset.loader`` (cfg)."""
    wanted = cfg.get("loader") or "auto"
    if not ((root / "train").is_dir() and (root / "test").is_dir()):
        if wanted == "stream":
            raise DataError(f"{root}: dataset.loader: stream reads an extracted image folder "
                            f"(train/<class>/*, test/<class>/*); extract the archive first")
        return "memory", "not an extracted folder (an archive is decoded into memory)"
    files = list_split(root, "train")[0]
    test_files = list_split(root, "test", list_split(root, "train")[2])[0]
    need, same_size = decoded_bytes(files + test_files)
    gib = need / 2**30
    budget = float(cfg.get("memory_budget_gib") or 8.0)
    if wanted == "stream":
        return "stream", "dataset.loader: stream"
    if wanted == "auto" and (gib > budget or not same_size):
        why = (f"{gib:.1f} GiB decoded > dataset.memory_budget_gib {budget:g}" if same_size
               else "images differ in size")
        return "stream", why
    if not same_size:
        raise DataError(f"{root}: dataset.loader: memory needs images of one size (they "
                        f"differ); use loader: stream")
    ram = available_ram()
    if ram is not None and need > ram:
        raise DataError(f"{root}: dataset.loader: {wanted}: the decoded set needs {gib:.1f} GiB, "
                        f"only {ram / 2**30:.1f} GiB of RAM is available; use loader: stream")
    return "memory", f"{gib:.2f} GiB decoded fits"


# --------------------------------------------------------------------------- the data set

@dataclass
class StreamingDataset:
    """An image folder listed, not decoded: the files and labels the streaming loader reads.

    Duck-types :class:`mpbench.data.Dataset` where the trainer, matching and the runner
    look (``name``, ``classes``, ``num_classes``, ``image_size``, ``mean``, ``std``,
    ``subset``, ``split_val``); ``image_size`` is the crop the model sees.
    """

    name: str
    root: str
    train_files: list[str]
    train_y: torch.Tensor
    test_files: list[str]
    test_y: torch.Tensor
    classes: list[str]
    crop_size: int = DEFAULT_CROP
    num_workers: int | None = None
    decode: str = "cpu"  # dataset.decode: cpu (in the workers) or device
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    val_files: list[str] | None = None
    val_y: torch.Tensor | None = None
    streaming: bool = field(default=True, init=False)
    val_x = None  # no in-memory validation images (the trainer asks)
    train_coarse = test_coarse = coarse_classes = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> tuple[int, int, int]:
        return (3, self.crop_size, self.crop_size)

    def _pick(self, keep: torch.Tensor) -> tuple[list[str], torch.Tensor]:
        return [self.train_files[i] for i in keep.tolist()], self.train_y[keep]

    def subset(self, n: int, seed: int = 0) -> "StreamingDataset":
        if n >= len(self.train_y):
            return self
        files, y = self._pick(balanced_order(self.train_y, self.num_classes, seed)[:n].sort().values)
        return replace(self, train_files=files, train_y=y)

    def split_val(self, n: int, seed: int = 0) -> "StreamingDataset":
        """As :meth:`mpbench.data.Dataset.split_val`: ``n / num_classes`` files of every
        class held out (chosen by ``seed`` alone), the rest stay the training files."""
        order = val_split_order(self.train_y, self.classes, n, seed, str(self.root))
        val_files, val_y = self._pick(order[:n].sort().values)
        files, y = self._pick(order[n:].sort().values)
        return replace(self, train_files=files, train_y=y, val_files=val_files, val_y=val_y)


def load_stream_folder(root: Path, cfg: dict) -> StreamingDataset:
    files, labels, classes = list_split(root, "train")
    test_files, test_labels, _ = list_split(root, "test", classes)
    return StreamingDataset("imagefolder", str(root), files, torch.tensor(labels),
                            test_files, torch.tensor(test_labels), classes,
                            cfg.get("crop_size") or DEFAULT_CROP, cfg.get("num_workers"),
                            cfg.get("decode") or "cpu")


def load_dataset(config, data_root: str | Path | None = None):
    """The data set a suite names: :func:`mpbench.data.datasets.load_dataset`, except that an
    image folder goes through :func:`choose_loader` and may come back as a
    :class:`StreamingDataset` (listed, not decoded)."""
    from mpbench.data import datasets

    cfg = config if isinstance(config, dict) else config.model_dump()
    if cfg["name"] != "imagefolder":
        return datasets.load_dataset(cfg, data_root)
    root = Path(data_root or cfg.get("root") or datasets.default_root()).expanduser()
    if not root.exists():
        raise DataError(f"{root}: image folder not found")
    loader, _why = choose_loader(cfg, root)
    if loader == "memory":
        return datasets.load_dataset(cfg, data_root)
    data = load_stream_folder(root, cfg)
    if cfg.get("train_subset"):
        data = data.subset(cfg["train_subset"])
    if cfg.get("val_split"):
        data = data.split_val(cfg["val_split"], cfg.get("val_seed") or 0)
    return data


# --------------------------------------------------------------------------- sampling

class ShardSampler(torch.utils.data.Sampler):
    """This rank's (index, augmentation seed) pairs of one epoch, from position ``start``.

    Training: the permutation of (seed, epoch) cut to whole global batches
    (``batch_size * world``), this rank taking positions ``rank::world``: rank r's batch i
    and the other ranks' batches i together are exactly batch i of one process with the
    global batch (as :class:`~mpbench.data.loader.BatchLoader` shards). Evaluation: in order,
    one contiguous chunk per rank, seeds unused. Deterministic; like DistributedSampler, but
    it can start an epoch at any batch.
    """

    def __init__(self, n: int, batch_size: int, *, train: bool, seed: int = 0,
                 rank: int = 0, world: int = 1):
        self.n, self.batch_size, self.train, self.seed = n, batch_size, train, seed
        self.rank, self.world = rank, world
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def positions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(indices, positions in the global order) of this rank, the whole epoch."""
        if self.train:
            base = self.seed * 1_000_003 + self.epoch
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(base))
            usable = self.n // (self.batch_size * self.world) * self.batch_size * self.world
            pos = torch.arange(usable)[self.rank::self.world]
            return order[pos], pos
        per_rank = -(-self.n // self.world)
        pos = torch.arange(self.rank * per_rank, min(self.n, (self.rank + 1) * per_rank))
        return pos, pos

    def num_batches(self) -> int:
        if self.train:
            return self.n // (self.batch_size * self.world)
        return -(-len(self.positions()[0]) // self.batch_size)

    def __len__(self) -> int:
        idx, _ = self.positions()
        return max(0, len(idx) - self.start_batch * self.batch_size)

    def __iter__(self):
        idx, pos = self.positions()
        base = (self.seed * 1_000_003 + self.epoch) * 10_000_019
        skip = self.start_batch * self.batch_size
        for i, p in zip(idx[skip:].tolist(), pos[skip:].tolist()):
            yield i, (base + p) % 2**62


# --------------------------------------------------------------------------- decoding

def build_transform(size: int, *, train: bool, crop_pct: float = 0.875,
                    scale_min: float = 0.08):
    """timm's ImageNet transforms, ending in a uint8 CHW tensor (timm's prefetcher form)."""
    from timm.data import create_transform

    if train:
        return create_transform(size, is_training=True, scale=(scale_min, 1.0), hflip=0.5,
                                color_jitter=None, interpolation="bilinear",
                                use_prefetcher=True)
    return create_transform(size, is_training=False, crop_pct=crop_pct,
                            interpolation="bilinear", use_prefetcher=True)


class ImageFiles(torch.utils.data.Dataset):
    """Decode + transform one file; an unreadable one comes back as its path (skipped)."""

    def __init__(self, files: list[str], labels: torch.Tensor, transform):
        self.files, self.labels, self.transform = files, labels.tolist(), transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item):
        index, aug_seed = item if isinstance(item, tuple) else (item, 0)
        from PIL import Image
        path = self.files[index]
        py_state = random.getstate()
        try:
            with torch.random.fork_rng(devices=[]):  # the caller's RNGs stay as they were
                random.seed(aug_seed)
                torch.default_generator.manual_seed(aug_seed)  # not CUDA's (workers=0)
                with Image.open(path) as img:
                    x = self.transform(to_rgb(img))
        except (OSError, SyntaxError, ValueError):  # truncated / corrupt / not an image
            return path
        finally:
            random.setstate(py_state)
        return x, self.labels[index]


def collate(samples: list) -> tuple[torch.Tensor | None, torch.Tensor | None, list[str]]:
    good = [s for s in samples if not isinstance(s, str)]
    bad = [s for s in samples if isinstance(s, str)]
    if not good:
        return None, None, bad
    return (torch.stack([s[0] for s in good]),
            torch.tensor([s[1] for s in good], dtype=torch.int64), bad)


def default_workers() -> int:
    env = os.environ.get("MPBENCH_NUM_WORKERS")
    if env:
        return int(env)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return min(8, cores)


class StreamLoader:
    """(images, labels) batches of an image folder read by DataLoader workers: the interface
    of :class:`~mpbench.data.loader.BatchLoader` (``__iter__``, ``__len__``,
    ``set_epoch(epoch, start_batch)``, ``device``), float batches normalised on the device.

    ``train=True``: shuffled by (seed, epoch), augmented, the last partial batch dropped;
    ``train=False``: in order, every image once. ``shard=(rank, world)`` as BatchLoader.
    """

    def __init__(self, files: list[str], labels: torch.Tensor, batch_size: int, *,
                 train: bool, mean=IMAGENET_MEAN, std=IMAGENET_STD, size: int = DEFAULT_CROP,
                 crop_pct: float = 0.875, scale_min: float = 0.08, seed: int = 0,
                 device: str | torch.device = "cpu", channels_last: bool = False,
                 shard: tuple[int, int] = (0, 1), num_workers: int | None = None,
                 prefetch_factor: int = 4, decode: str = "cpu"):
        self.device = torch.device(device)
        self.files, self.labels = files, labels
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.mean, self.std, self.channels_last = mean, std, channels_last
        self.rank, self.world = shard
        self.num_workers = default_workers() if num_workers is None else int(num_workers)
        self.sampler = ShardSampler(len(files), batch_size, train=train, seed=seed,
                                    rank=self.rank, world=self.world)
        self.decoder = None
        if decode == "device":  # the workers read bytes; the batch is decoded on the device
            from mpbench.data.device_decode import DeviceDecoder, EncodedFiles, collate_encoded
            self.decoder = DeviceDecoder(size, train=train, device=self.device,
                                         crop_pct=crop_pct, scale_min=scale_min)
            self.dataset, collate_fn = EncodedFiles(files, labels), collate_encoded
        else:
            self.dataset, collate_fn = ImageFiles(files, labels, build_transform(
                size, train=train, crop_pct=crop_pct, scale_min=scale_min)), collate
        workers = self.num_workers
        self.loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=batch_size, sampler=self.sampler, num_workers=workers,
            collate_fn=collate_fn, pin_memory=self.device.type == "cuda" and not self.decoder,
            persistent_workers=workers > 0, prefetch_factor=prefetch_factor if workers else None,
            generator=torch.Generator().manual_seed(seed))  # not the global RNG
        self.epoch = 0
        self.epoch_skipped = 0
        self.skipped_files: list[str] = []

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.sampler.set_epoch(epoch, start_batch)

    def __len__(self) -> int:  # whole epochs, as BatchLoader (a resumed epoch yields fewer)
        return self.sampler.num_batches()

    def __iter__(self):
        self.epoch_skipped = 0
        left = len(self) - self.sampler.start_batch
        for n, batch in enumerate(self.loader):
            if n >= left:  # training: the sampler yields whole batches only
                break
            x, y, bad = self.decoder(batch) if self.decoder else batch
            if bad:
                self.epoch_skipped += len(bad)
                self.skipped_files += [b for b in bad if b not in self.skipped_files][:100]
            if x is None:
                raise DataError(f"{bad[0]}: no image of a whole batch could be read "
                                f"({len(bad)} files); is the folder damaged?")
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            x = normalize(x, self.mean, self.std)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y
        self.sampler.set_epoch(self.epoch, 0)  # the next pass over this epoch is whole


def stream_loaders(data: StreamingDataset, recipe, device, seed: int, channels_last: bool,
                   shard: tuple[int, int], train_batch: int,
                   splits: tuple[str, ...] = ("train", "test", "val")):
    """(train, test, val) StreamLoaders of a StreamingDataset under ``recipe``; None for a
    split not in ``splits`` (and for val without a validation split)."""
    common = dict(mean=data.mean, std=data.std, size=data.crop_size, device=device,
                  channels_last=channels_last, shard=shard, num_workers=data.num_workers,
                  decode=data.decode,
                  crop_pct=getattr(recipe, "crop_pct", 0.875),
                  scale_min=getattr(recipe, "crop_scale_min", 0.08))
    train = (StreamLoader(data.train_files, data.train_y, train_batch, train=True, seed=seed,
                          **common) if "train" in splits else None)
    test = (StreamLoader(data.test_files, data.test_y, recipe.eval_batch_size, train=False,
                         **common) if "test" in splits else None)
    val = (StreamLoader(data.val_files, data.val_y, recipe.eval_batch_size, train=False,
                        **common) if "val" in splits and data.val_files else None)
    return train, test, val
