"""One training run: model + data + recipe, resumable from any epoch boundary.

The learning rate is a pure function of the step (:func:`lr_at`), and the data order and
augmentation of an epoch depend only on (seed, epoch), so a checkpoint needs only the model,
the optimizer, the RNG states and the epoch count: resuming reproduces the uninterrupted run.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mpbench.config import Recipe
from mpbench.data import Dataset
from mpbench.data.loader import BatchLoader
from mpbench.storage import atomic_torch_save, previous, verify_torch_file
from mpbench.training.device import autocast_for, use_channels_last
from mpbench.training.distributed import unwrap


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


def lr_at(step: int, steps_per_epoch: int, recipe: Recipe, base_lr: float | None = None) -> float:
    """Learning rate at optimizer step ``step`` (linear warm-up, then step/cosine/constant)."""
    lr = recipe.lr if base_lr is None else base_lr
    epoch = step / steps_per_epoch
    if epoch < recipe.warmup_epochs:
        return lr * (step + 1) / (recipe.warmup_epochs * steps_per_epoch)
    if recipe.schedule == "step":
        return lr * recipe.gamma ** sum(epoch >= m for m in recipe.milestones)
    if recipe.schedule == "cosine":
        t = (epoch - recipe.warmup_epochs) / max(recipe.epochs - recipe.warmup_epochs, 1e-9)
        return lr * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
    return lr


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def rng_state() -> dict:
    """Every RNG a run draws from, as tensors and plain numbers (loadable with weights_only)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)},
             "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state(("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["gauss"]))
    random.setstate((3, tuple(int(v) for v in state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)
    train_time_s: float = 0.0

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}


def loss_fn(model: nn.Module, out: torch.Tensor, y: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Cross-entropy; a model may define ``training_loss(out, y, smoothing)`` (ensembles do)."""
    if hasattr(model, "training_loss"):
        return model.training_loss(out, y, smoothing)
    return F.cross_entropy(out, y, label_smoothing=smoothing)


@torch.no_grad()
def evaluate(model: nn.Module, loader: BatchLoader, autocast, split: str = "test") -> dict:
    """Loss, top-1 and top-5 (percent) over every image of ``loader`` once, as
    ``<split>_loss``, ``<split>_top1``, ``<split>_top5`` (split: test or val)."""
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=loader.device)
    correct1 = torch.zeros((), dtype=torch.int64, device=loader.device)
    correct5 = torch.zeros((), dtype=torch.int64, device=loader.device)
    n = 0
    for x, y in loader:
        with autocast:
            out = model(x)
        out = out.float()
        loss_sum += F.cross_entropy(out, y, reduction="sum").double()
        top = out.topk(min(5, out.shape[1]), dim=1).indices
        hits = top == y[:, None]
        correct1 += hits[:, 0].sum()
        correct5 += hits.any(dim=1).sum()
        n += len(y)
    from mpbench.training.distributed import all_reduce_sum  # each rank saw its share: sum them
    loss_sum, correct1, correct5, n = all_reduce_sum(loss_sum, correct1, correct5, torch.tensor(n))
    n = int(n)
    return {f"{split}_loss": loss_sum.item() / n, f"{split}_top1": 100.0 * correct1.item() / n,
            f"{split}_top5": 100.0 * correct5.item() / n}


def not_evaluated(split: str) -> dict:
    return {f"{split}_loss": None, f"{split}_top1": None, f"{split}_top5": None}


def make_val_loader(data: Dataset, recipe: Recipe, device: torch.device,
                    channels_last: bool) -> BatchLoader | None:
    """The validation split's loader (None without one), sharded across ranks like the test
    loader: each rank evaluates a contiguous chunk and :func:`evaluate` sums the counts."""
    if getattr(data, "val_x", None) is None:
        return None
    from mpbench.training.distributed import rank, world_size
    return BatchLoader(data.val_x, data.val_y, recipe.eval_batch_size, train=False,
                       mean=data.mean, std=data.std, device=device,
                       channels_last=channels_last, shard=(rank(), world_size()))


def evaluates(recipe: Recipe, epoch: int, has_val: bool) -> tuple[bool, bool]:
    """(validation, test) evaluated after ``epoch`` (1-based)? The validation split every
    ``eval_every`` epochs and after the last; the test set after the last epoch only, unless
    ``test_every`` asks for test-set curves."""
    last = epoch == recipe.epochs
    val = has_val and (epoch % recipe.eval_every == 0 or last)
    test = last or (recipe.test_every is not None and epoch % recipe.test_every == 0)
    return val, test


def make_loaders(data: Dataset, recipe: Recipe, device: torch.device, seed: int,
                 channels_last: bool) -> tuple[BatchLoader, BatchLoader]:
    from mpbench.training.distributed import rank, shard_batch_size, world_size
    common = dict(mean=data.mean, std=data.std, device=device, channels_last=channels_last,
                  shard=(rank(), world_size()))  # recipe.batch_size is the global batch
    train = BatchLoader(data.train_x, data.train_y, shard_batch_size(recipe.batch_size), train=True, seed=seed,
                        padding=recipe.crop_padding, flip=recipe.flip, **common)
    test = BatchLoader(data.test_x, data.test_y, recipe.eval_batch_size, train=False, **common)
    return train, test


def train(model: nn.Module, data: Dataset, recipe: Recipe, *, seed: int,
          device: str | torch.device = "cpu", checkpoint: str | Path | None = None,
          resume: dict | None = None, on_epoch: Callable[[dict], None] | None = None,
          progress: bool | None = None, desc: str = "train",
          callbacks: Sequence = ()) -> TrainResult:
    """Train ``model`` for ``recipe.epochs`` epochs, checkpointing after each epoch.

    ``resume`` is a loaded checkpoint (see :func:`load_checkpoint`); training continues at
    its epoch with its model, optimizer and RNG states. ``on_epoch`` receives each epoch's
    metrics (the runner writes them to disk). ``callbacks`` (see
    :mod:`mpbench.training.callbacks`) carry everything beyond plain training, e.g. a
    fine-tuning start's frozen-backbone epochs or input resizing: this loop only calls their
    ``on_loaders`` and ``on_epoch_start`` hooks.
    """
    from tqdm import tqdm

    device = torch.device(device)
    channels_last = use_channels_last(recipe.channels_last, model, device)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                          nesterov=recipe.nesterov and recipe.momentum > 0,
                          weight_decay=recipe.weight_decay)
    train_loader, test_loader = make_loaders(data, recipe, device, seed, channels_last)
    val_loader = make_val_loader(data, recipe, device, channels_last)
    for cb in callbacks:
        resized_train, test_loader = cb.on_loaders(train_loader, test_loader)
        if val_loader is not None:  # the validation split is fed as the test set is
            _, val_loader = cb.on_loaders(train_loader, val_loader)
        train_loader = resized_train
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        from mpbench.errors import UserError
        raise UserError(f"recipe.batch_size: {recipe.batch_size} is larger than the training set "
                        f"({len(data.train_y)} images)")
    result, start = TrainResult(), 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        set_rng_state(resume["rng"])
        result.history = list(resume["history"])
        result.train_time_s = float(resume["train_time_s"])
        start = int(resume["epoch"])
    autocast = autocast_for(device, recipe)
    from mpbench.training import distributed as ddp
    net = ddp.wrap_ddp(model, device)  # ``model`` itself unless under torchrun
    if recipe.compile:  # training forward only; evaluation and checkpoints use ``model``
        net = torch.compile(net)

    for epoch in range(start, recipe.epochs):
        model.train()
        for cb in callbacks:
            cb.on_epoch_start(model, opt, epoch)
        train_loader.set_epoch(epoch)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen = 0
        t0 = time.perf_counter()
        bar = tqdm(train_loader, desc=f"{desc} epoch {epoch + 1}/{recipe.epochs}", leave=False,
                   disable=(not progress) if progress is not None else None, unit="batch")
        for i, (x, y) in enumerate(bar):
            for group in opt.param_groups:
                group["lr"] = lr_at(epoch * steps_per_epoch + i, steps_per_epoch, recipe)
            with autocast:
                out = net(x)
                loss = loss_fn(model, out, y, recipe.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach().double() * len(y)
            correct += (out.detach().argmax(1) == y).sum()
            seen += len(y)
            if (i % 50 == 0 or i == steps_per_epoch - 1) and not torch.isfinite(ddp.all_reduce_sum(loss_sum)[0]):
                raise Diverged(f"loss became {loss.item()} at epoch {epoch + 1}, step {i + 1}")
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        loss_sum, correct, seen = ddp.end_of_epoch(model, loss_sum, correct, seen)  # global
        do_val, do_test = evaluates(recipe, epoch + 1, val_loader is not None)
        metrics = {**(evaluate(model, test_loader, autocast) if do_test else not_evaluated("test")),
                   **(evaluate(model, val_loader, autocast, "val") if do_val
                      else not_evaluated("val"))}
        result.train_time_s += train_s
        metrics = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"],
                   "train_loss": loss_sum.item() / seen, "train_acc": 100.0 * correct.item() / seen,
                   **metrics, "epoch_time_s": train_s, "eval_time_s": time.perf_counter() - t1,
                   "img_per_s": seen / train_s}
        result.history.append(metrics)
        if checkpoint is not None and ddp.is_main():
            save_checkpoint(checkpoint, model, opt, epoch + 1, result)
        if on_epoch is not None and ddp.is_main():
            on_epoch(metrics)
    return result


def save_checkpoint(path: str | Path, model: nn.Module, opt: torch.optim.Optimizer, epoch: int,
                    result: TrainResult) -> None:
    """Write the checkpoint atomically, keeping the previous one as ``<name>.prev``."""
    path = Path(path)
    state = {"model": unwrap(model).state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
             "rng": rng_state(), "history": result.history, "train_time_s": result.train_time_s}
    atomic_torch_save(path, state, keep_previous=True)


def load_checkpoint(path: str | Path, log: Callable[[str], None] = print) -> dict | None:
    """Load the newest intact checkpoint (``path``, else ``path.prev``); None if neither.

    Intact means: every zip member matches its CRC-32 (truncation and flipped bits are caught
    before loading) and the expected keys are there. Loading uses ``weights_only=True``: a
    checkpoint cannot run code. Every fallback is reported through ``log``.
    """
    path = Path(path)
    prev = previous(path)
    if not path.exists() and prev.exists():
        log(f"checkpoint {path.name} missing (interrupted while saving?); trying {prev.name}")
    for candidate in (path, prev):
        if not candidate.exists():
            continue
        try:
            verify_torch_file(candidate)
            state = torch.load(candidate, map_location="cpu", weights_only=True)
            if not {"model", "optimizer", "epoch", "rng", "history"} <= set(state):
                raise ValueError("missing keys")
            if candidate == prev:
                log(f"using {prev.name} (epoch {state['epoch']}): the newer checkpoint was lost")
            return state
        except Exception as exc:  # truncated zip, bad CRC, bad pickle, missing keys: unusable
            log(f"checkpoint {candidate} unreadable ({type(exc).__name__}: {exc})")
    if path.exists() or prev.exists():  # there were checkpoints, none of them usable
        log("no intact checkpoint left: starting over")
    return None
