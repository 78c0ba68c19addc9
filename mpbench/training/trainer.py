"""One training run: model + data + recipe, resumable from any epoch boundary or batch.

The learning rate is a pure function of the step (:func:`lr_at`), and the data order and
augmentation of an epoch depend only on (seed, epoch), so a checkpoint needs only the model,
the optimizer, the RNG states and the epoch count: resuming reproduces the uninterrupted run.
Inside an epoch (every ``recipe.checkpoint_every_min``, and on SIGTERM / SIGUSR1) it also
holds the next batch's index and the epoch's partial sums; both loaders can start an epoch at
any batch with the same order, so such a resume ends with the same metrics too.
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
def evaluate(model: nn.Module, loader: BatchLoader, autocast, split: str = "test",
             coarse_of: torch.Tensor | None = None) -> dict:
    """Every image of ``loader`` once: ``<split>_loss``, ``_top1``, ``_top5`` (percent) and
    the calibration scores of :class:`~mpbench.training.metrics.EvalScores` (``_nll``,
    ``_ece``, ``_brier``, ``_reliability``; ``_superclass_top1`` with ``coarse_of``)."""
    from mpbench.training.metrics import EvalScores

    model.eval()
    scores = EvalScores(loader.device, coarse_of)
    for x, y in loader:
        with autocast:
            out = model(x)
        scores.update(out, y)
    return scores.result(split)  # summed over ranks: each rank saw its share


def not_evaluated(split: str) -> dict:
    from mpbench.training.metrics import score_names
    return dict.fromkeys(score_names(split))


def make_val_loader(data: Dataset, recipe: Recipe, device: torch.device,
                    channels_last: bool) -> BatchLoader | None:
    """The validation split's loader (None without one), sharded across ranks like the test
    loader: each rank evaluates a contiguous chunk and :func:`evaluate` sums the counts."""
    from mpbench.training.distributed import rank, world_size
    if getattr(data, "streaming", False):  # an image folder read by DataLoader workers
        from mpbench.data.streaming import stream_loaders
        return stream_loaders(data, recipe, device, 0, channels_last, (rank(), world_size()),
                              1, splits=("val",))[2]
    if getattr(data, "val_x", None) is None:
        return None
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
    if getattr(data, "streaming", False):  # an image folder read by DataLoader workers
        from mpbench.data.streaming import stream_loaders
        train, test, _ = stream_loaders(data, recipe, device, seed, channels_last,
                                        (rank(), world_size()),
                                        shard_batch_size(recipe.batch_size),
                                        splits=("train", "test"))
        return train, test
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
          callbacks: Sequence = (), evaluate_test: bool = True) -> TrainResult:
    """Train ``model`` for ``recipe.epochs`` epochs, checkpointing after each epoch.

    ``resume`` is a loaded checkpoint (see :func:`load_checkpoint`); training continues at
    its epoch with its model, optimizer and RNG states. ``on_epoch`` receives each epoch's
    metrics (the runner writes them to disk). ``callbacks`` (see
    :mod:`mpbench.training.callbacks`) carry everything beyond plain training, e.g. a
    fine-tuning start's frozen-backbone epochs or input resizing: this loop only calls their
    ``on_loaders`` and ``on_epoch_start`` hooks. ``evaluate_test=False`` never evaluates
    the test set (tuning trials, selected on the validation split).
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
    result, start, start_batch, partial = TrainResult(), 0, 0, None
    if resume is not None:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        set_rng_state(resume["rng"])
        result.history = list(resume["history"])
        result.train_time_s = float(resume["train_time_s"])
        start = int(resume["epoch"])
        start_batch = int(resume.get("batch", 0))  # a mid-epoch checkpoint: the next batch
        partial = resume.get("partial")
    autocast = autocast_for(device, recipe)
    from mpbench.data.superclasses import superclass_map
    coarse_of = superclass_map(data)  # superclass top-1 where the data set has coarse labels
    from mpbench.training import distributed as ddp
    net = ddp.wrap_ddp(model, device)  # ``model`` itself unless under torchrun
    if recipe.compile:  # training forward only; evaluation and checkpoints use ``model``
        net = torch.compile(net)

    def _train_epoch(epoch: int, first: int, partial: dict | None) -> None:
        model.train()
        for cb in callbacks:
            cb.on_epoch_start(model, opt, epoch)
        if first:
            train_loader.set_epoch(epoch, first)
        else:
            train_loader.set_epoch(epoch)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen, train_before, wait_s, skipped_before = 0, 0.0, 0.0, 0
        if partial is not None:  # the sums of the batches before ``first`` (global, on rank 0)
            train_before, wait_s = float(partial["train_s"]), float(partial["data_wait_s"])
            if ddp.is_main():
                skipped_before = int(partial.get("skipped", 0))
                loss_sum += partial["loss_sum"].to(device)
                correct += partial["correct"].to(device)
                seen = int(partial["seen"])
        t0 = time.perf_counter()
        t_last = t0
        bar = tqdm(train_loader, desc=f"{desc} epoch {epoch + 1}/{recipe.epochs}", leave=False,
                   disable=(not progress) if progress is not None else None, unit="batch",
                   initial=first, total=steps_per_epoch)
        for i, (x, y) in enumerate(bar, start=first):
            wait_s += time.perf_counter() - t_last  # waiting for this batch
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
            t_last = time.perf_counter()
            if i % 20 == 19 and not bar.disable:
                spent = train_before + t_last - t0
                bar.set_postfix(img_s=f"{seen / max(spent, 1e-9):.0f}",
                                data_wait=f"{wait_s / max(spent, 1e-9):.0%}", refresh=False)
            if i + 1 < steps_per_epoch and clock.due(i + 1, stop.signum is not None):
                g_loss, g_correct, g_seen, g_skipped = ddp.all_reduce_sum(
                    loss_sum.clone(), correct.clone(), torch.tensor(seen),
                    torch.tensor(skipped_before + getattr(train_loader, "epoch_skipped", 0)))
                state = {"loss_sum": g_loss.cpu(), "correct": g_correct.cpu(),
                         "seen": int(g_seen), "train_s": train_before + t_last - t0,
                         "data_wait_s": wait_s, "skipped": int(g_skipped)}
                if checkpoint is not None and ddp.is_main():
                    save_checkpoint(checkpoint, model, opt, epoch, result, batch=i + 1,
                                    partial=state)
                clock.saved()
                if stop.signum is not None:
                    from mpbench.errors import Interrupted
                    raise Interrupted(stop.signum, f"after {i + 1}/{steps_per_epoch} batches of "
                                                    f"epoch {epoch + 1}")
                t0 += time.perf_counter() - t_last  # the save is not training time
                t_last = time.perf_counter()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_s = train_before + time.perf_counter() - t0
        t1 = time.perf_counter()
        loss_sum, correct, seen = ddp.end_of_epoch(model, loss_sum, correct, seen)  # global
        do_val, do_test = evaluates(recipe, epoch + 1, val_loader is not None)
        do_test = do_test and evaluate_test
        metrics = {**(evaluate(model, test_loader, autocast, coarse_of=coarse_of) if do_test
                      else not_evaluated("test")),
                   **(evaluate(model, val_loader, autocast, "val", coarse_of) if do_val
                      else not_evaluated("val"))}
        result.train_time_s += train_s
        metrics = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"],
                   "train_loss": loss_sum.item() / seen, "train_acc": 100.0 * correct.item() / seen,
                   **metrics, "epoch_time_s": train_s, "eval_time_s": time.perf_counter() - t1,
                   "img_per_s": seen / train_s, "data_wait_s": wait_s,
                   "data_wait_share": wait_s / train_s if train_s > 0 else 0.0}
        skipped = getattr(train_loader, "epoch_skipped", None)
        if skipped is not None:  # streamed folders: unreadable images skipped, summed over ranks
            metrics["skipped_images"] = int(ddp.all_reduce_sum(
                torch.tensor(skipped_before + skipped))[0])
            files = ddp.gather_lists(train_loader.skipped_files[:5])
            if metrics["skipped_images"]:
                metrics["skipped_files"] = list(dict.fromkeys(files))[:5]  # rank order, once
        result.history.append(metrics)
        if checkpoint is not None and ddp.is_main():
            save_checkpoint(checkpoint, model, opt, epoch + 1, result)
        clock.saved()
        if on_epoch is not None and ddp.is_main():
            on_epoch(metrics)
        if stop.signum is not None and epoch + 1 < recipe.epochs:
            from mpbench.errors import Interrupted
            raise Interrupted(stop.signum, f"after epoch {epoch + 1}")

    from mpbench.training.checkpointing import CheckpointClock, StopSignals
    clock = CheckpointClock(recipe.checkpoint_every_min)
    with StopSignals() as stop:
        for epoch in range(start, recipe.epochs):
            first = start_batch if epoch == start else 0
            _train_epoch(epoch, first, partial if first else None)
        return result


def save_checkpoint(path: str | Path, model: nn.Module, opt: torch.optim.Optimizer, epoch: int,
                    result: TrainResult, *, batch: int = 0, partial: dict | None = None) -> None:
    """Write the checkpoint atomically, keeping the previous one as ``<name>.prev``.

    ``epoch`` epochs are complete; a mid-epoch checkpoint also has ``batch`` (the next batch
    of epoch ``epoch + 1``) and ``partial``, that epoch's sums so far (summed over ranks)."""
    path = Path(path)
    state = {"model": unwrap(model).state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
             "rng": rng_state(), "history": result.history, "train_time_s": result.train_time_s}
    if batch:
        state.update(batch=int(batch), partial=partial)
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
