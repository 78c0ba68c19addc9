"""The streaming input pipeline's speed (``mpbench bench MODEL --loader stream --data-root DIR``).

For each worker count it measures, on the training images of an image folder:

* **loader** img/s: :class:`mpbench.data.streaming.StreamLoader` iterated with no model
  (decode, RandomResizedCrop, flip, collate, normalise), after a warm-up that starts the
  workers; per worker = img/s / workers (0 workers: decoding in the training process);
* **e2e** img/s and the **data-wait share** of a training step: SGD steps of MODEL fed by that
  loader, the share being the time spent waiting for the next batch over the whole step (what
  the trainer writes to metrics.json as ``data_wait_share``);

next to the in-memory pipeline (:class:`mpbench.data.loader.BatchLoader` over the same number
of uint8 images at the crop size, already decoded) and MODEL's model-only step on a fixed
batch. Figures are medians over ``repeats``.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Sequence

import torch


def _loader_img_s(loader, batches: int) -> float:
    it = iter(loader)
    next(it)  # warm-up: the workers start and fill their queues
    t0 = time.perf_counter()
    n = 0
    for _ in range(batches):
        x, _y = next(it)
        n += len(x)
    return n / (time.perf_counter() - t0)


def _e2e(loader, step, batches: int) -> tuple[float, float]:
    """(img/s, data-wait share) of ``batches`` training steps fed by ``loader``."""
    it = iter(loader)
    x, y = next(it)
    step(x, y)  # warm-up
    wait = 0.0
    n = 0
    t0 = t_last = time.perf_counter()
    for _ in range(batches):
        x, y = next(it)
        wait += time.perf_counter() - t_last
        step(x, y)
        n += len(x)
        t_last = time.perf_counter()
    total = time.perf_counter() - t0
    return n / total, wait / total


def bench_stream(model_name: str, root: str | Path, *, workers: Sequence[int] = (0, 1, 2),
                 batch_size: int = 64, size: int = 64, batches: int = 10, repeats: int = 3,
                 device: str = "cpu", num_classes: int | None = None, seed: int = 0,
                 decode: str = "cpu") -> dict:
    from mpbench.config import DatasetConfig, Recipe
    from mpbench.data.loader import BatchLoader
    from mpbench.data.streaming import StreamLoader, load_dataset
    from mpbench.registry import create_model
    from mpbench.training.device import autocast_for
    from mpbench.bench.throughput import TrainStep

    dev = torch.device(device)
    data = load_dataset(DatasetConfig(name="imagefolder", root=str(root), loader="stream",
                                      crop_size=size).model_dump())
    classes = num_classes or data.num_classes
    torch.manual_seed(seed)
    model = create_model(model_name, num_classes=classes).to(dev)
    step = TrainStep(model, dev, lambda: autocast_for(dev, Recipe()))
    need = batch_size * (batches + 1)
    files, labels = data.train_files[:need * 4], data.train_y[:need * 4]

    images = torch.randint(0, 256, (need, 3, size, size), dtype=torch.uint8)
    memory = BatchLoader(images, torch.arange(need) % classes, batch_size, train=True,
                         mean=data.mean, std=data.std, device=dev, seed=seed)
    x0 = next(iter(memory))[0]
    y0 = (torch.arange(batch_size) % classes).to(dev)

    def model_only_img_s() -> float:
        step(x0, y0)
        t0 = time.perf_counter()
        for _ in range(batches):
            step(x0, y0)
        return batch_size * batches / (time.perf_counter() - t0)

    rows = []
    mem = {"loader_img_s": [], "e2e_img_s": [], "wait": [], "model_img_s": []}
    for _ in range(repeats):
        mem["loader_img_s"].append(_loader_img_s(memory, batches))
        e2e, wait = _e2e(memory, step, batches)
        mem["e2e_img_s"].append(e2e)
        mem["wait"].append(wait)
        mem["model_img_s"].append(model_only_img_s())
    med = {k: statistics.median(v) for k, v in mem.items()}
    for w in workers:
        loader = StreamLoader(files, labels, batch_size, train=True, mean=data.mean,
                              std=data.std, size=size, device=dev, num_workers=w, seed=seed,
                              decode=decode)
        got = {"loader": [], "e2e": [], "wait": []}
        for r in range(repeats):
            loader.set_epoch(r)
            got["loader"].append(_loader_img_s(loader, batches))
            loader.set_epoch(r + 100)
            e2e, wait = _e2e(loader, step, batches)
            got["e2e"].append(e2e)
            got["wait"].append(wait)
        img_s = statistics.median(got["loader"])
        rows.append({"workers": w, "loader_img_s": img_s,
                     "loader_img_s_per_worker": img_s / max(w, 1),
                     "e2e_img_s": statistics.median(got["e2e"]),
                     "data_wait_share": statistics.median(got["wait"])})
        del loader
    return {"model": model_name, "root": str(root), "size": size, "batch_size": batch_size,
            "device": str(dev), "threads": torch.get_num_threads(), "decode": decode,
            "model_only_img_s": med["model_img_s"],
            "memory": {"loader_img_s": med["loader_img_s"], "e2e_img_s": med["e2e_img_s"],
                       "data_wait_share": med["wait"]},
            "stream": rows}


def format_stream(res: dict) -> str:
    lines = [f"{res['model']} at {res['size']}x{res['size']}, batch {res['batch_size']}, "
             f"{res['device']} ({res['threads']} threads); model-only step "
             f"{res['model_only_img_s']:.1f} img/s",
             f"{'pipeline':<32}  {'loader img/s':>12}  {'per worker':>10}  {'e2e img/s':>9}  "
             f"{'data wait':>9}"]
    m = res["memory"]
    lines.append(f"{'memory (decoded)':<32}  {m['loader_img_s']:12.0f}  {'-':>10}  "
                 f"{m['e2e_img_s']:9.1f}  {100 * m['data_wait_share']:8.1f}%")
    for r in res["stream"]:
        name = (f"stream, {r['workers']} worker" + ("s" if r["workers"] != 1 else "")
                + (", device decode" if res.get("decode") == "device" else ""))
        lines.append(f"{name:<32}  {r['loader_img_s']:12.0f}  "
                     f"{r['loader_img_s_per_worker']:10.0f}  {r['e2e_img_s']:9.1f}  "
                     f"{100 * r['data_wait_share']:8.1f}%")
    lines.append("loader: the pipeline alone; e2e: training steps fed by it; data wait: time "
                 "waiting for the next batch / whole step (metrics.json's data_wait_share)")
    return "\n".join(lines)
