"""mpbench's input pipeline against the usual torchvision DataLoader + PIL one, same model.

The reference is what most CIFAR training scripts do: a Dataset that turns each stored
image into a PIL image (as ``torchvision.datasets.CIFAR10`` does), per-image
``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize``, and a
``DataLoader`` with ``num_workers`` worker processes collating batches. mpbench's is
:class:`mpbench.data.loader.BatchLoader`: the uint8 data set on the device, whole-batch crop, flip
and normalise. Both feed the same model (one instance, so the compute is identical) through
the same SGD step as :func:`mpbench.training.trainer.train`, in one process, with the repeats
interleaved (the order rotates each repeat) so that load from other processes hits every
pipeline alike.

Fairness with worker processes: a DataLoader keeps up to ``prefetch_factor x num_workers``
batches in flight, and its workers keep filling them while another pipeline is timed. Each
timed block therefore first consumes ``warmup + prefetch_factor x num_workers`` batches
untimed, so the timed steps see the steady state, not a queue filled for free.

Each training block is followed by the same pipeline timed alone (batches fetched, no
model): its ms/batch is the pipeline's own cost (for 0 workers it adds to the step time one
for one; with workers it is their delivery rate while the main process waits).

Data: the real CIFAR-10 JPEG copy (decoded once into mpbench's cache) when
``../shared/data/cifar10-jpg`` exists next to the repository, else synthetic images.

    python benchmarks/reference_pipeline.py [--model cifar_resnet20] [--workers 0 1 2]
        [--batch-size 128] [--steps 8] [--repeats 3] [--data DIR | --synthetic] [--json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

from mpbench.bench import TrainStep, cycle_batches, machine_info, time_steps
from mpbench.data import load_dataset, synthetic
from mpbench.data.loader import BatchLoader
from mpbench.registry import create_model
from mpbench.training.device import autocast_for, resolve_device, use_channels_last

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "cifar10-jpg"
PREFETCH = 2  # DataLoader's default prefetch_factor


class PILImages(torch.utils.data.Dataset):
    """HWC uint8 images served as PIL images through ``transform``, as torchvision's CIFAR10."""

    def __init__(self, images_nchw: torch.Tensor, labels: torch.Tensor, transform):
        self.data = np.ascontiguousarray(images_nchw.permute(0, 2, 3, 1).numpy())  # N x H x W x C
        self.targets = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.data[i])), self.targets[i]


def reference_loader(data, batch_size: int, workers: int, seed: int = 0):
    from torchvision import transforms as T

    size = data.train_x.shape[-1]
    tf = T.Compose([T.RandomCrop(size, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize(data.mean, data.std)])
    ds = PILImages(data.train_x, data.train_y, tf)
    return torch.utils.data.DataLoader(
        ds, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=workers,
        persistent_workers=workers > 0, generator=torch.Generator().manual_seed(seed))


def endless(loader):
    while True:
        yield from loader


def load_data(path: Path | None, synthetic_data: bool):
    if not synthetic_data and path is not None and path.exists():
        return load_dataset({"name": "imagefolder"}, path), f"CIFAR-10 JPEG copy ({path})"
    return synthetic(num_classes=10, num_train=10_000, num_test=100), "synthetic (10,000 images)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="cifar_resnet20")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per block")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps before each block")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--synthetic", action="store_true", help="synthetic images even if --data exists")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--channels-last", choices=("auto", "on", "off"), default="auto",
                    help="model and batches in channels_last (auto: on CUDA only, as the trainer)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)

    device = resolve_device(a.device)
    data, data_desc = load_data(a.data, a.synthetic)
    from mpbench.config import Recipe
    recipe = Recipe()
    torch.manual_seed(0)
    model = create_model(a.model, num_classes=data.num_classes).to(device)
    channels_last = use_channels_last(a.channels_last, model, device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    model.train()
    step = TrainStep(model, device, lambda: autocast_for(device, recipe))

    mp_loader = BatchLoader(data.train_x, data.train_y, a.batch_size, train=True, seed=0,
                            mean=data.mean, std=data.std, device=device, channels_last=channels_last)
    pipelines = {"mpbench BatchLoader": (cycle_batches(mp_loader), 0)}
    for w in a.workers:
        pipelines[f"DataLoader+PIL, {w} workers"] = (
            endless(reference_loader(data, a.batch_size, w)), PREFETCH * w)

    def feeder(batches):
        def fn():
            x, y = next(batches)
            if x.device != device:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            step(x, y)
        return fn

    def alone(batches):
        def fn():
            x, _ = next(batches)
            if x.device != device:
                x.to(device)
        return fn

    fns = {name: (feeder(b), extra) for name, (b, extra) in pipelines.items()}
    loader_fns = {name: alone(b) for name, (b, _) in pipelines.items()}
    times = {name: [] for name in fns}
    loader_times = {name: [] for name in fns}
    names = list(fns)
    for name in names:  # first use: worker start-up, allocator, thread pool
        fn, extra = fns[name]
        time_steps(fn, 0, device, warmup=1 + extra)
    for r in range(a.repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            fn, extra = fns[name]
            t = time_steps(fn, a.steps, device, warmup=a.warmup + extra)
            times[name].append(a.batch_size * a.steps / t)
            # the pipeline alone, right after: batches/s it can deliver with no model running
            t = time_steps(loader_fns[name], a.steps, device, warmup=extra)
            loader_times[name].append(a.steps / t)
            print(f"  repeat {r + 1}/{a.repeats} {name}: {times[name][-1]:.1f} img/s",
                  file=sys.stderr, flush=True)

    med = {n: statistics.median(v) for n, v in times.items()}
    loader_ms = {n: 1e3 / statistics.median(v) for n, v in loader_times.items()}
    mp = med[names[0]]
    best_ref = max(v for n, v in med.items() if n != names[0]) if len(names) > 1 else float("nan")
    info = machine_info(device)
    out = {"machine": info, "model": a.model, "data": data_desc, "batch_size": a.batch_size,
           "steps": a.steps, "repeats": a.repeats, "channels_last": channels_last,
           "img_s": med, "img_s_all": times,
           "ratio_vs_best_reference": mp / best_ref,
           "ratio_vs_each": {n: mp / v for n, v in med.items() if n != names[0]},
           "loader_alone_ms_per_batch": loader_ms, "loader_alone_batches_s_all": loader_times}
    if a.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{a.model}, batch {a.batch_size}, {data_desc}; {device}, {torch.get_num_threads()} threads, "
          f"torch {info['torch']}; median of {a.repeats} x {a.steps} steps; load avg {info.get('load_avg')}")
    width = max(map(len, names))
    for n in names:
        ratio = "" if n == names[0] else f"   mpbench / this = {mp / med[n]:.3f}"
        print(f"{n:<{width}}  {med[n]:8.1f} img/s   (pipeline alone: {loader_ms[n]:7.2f} ms/batch)"
              f"{ratio}")
    print(f"mpbench vs the best reference: {out['ratio_vs_best_reference']:.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
