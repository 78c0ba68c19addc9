"""Top-1 under common corruptions of the test set (:mod:`mpbench.data.corruptions`).

One evaluation pass per corruption and severity, fed exactly as the clean test set is (the
run's normalisation, eval batch size, device, channels_last, autocast and input resizing),
so the difference to the clean top-1 is the corruption's alone. Under torchrun every rank
evaluates its share and the counts are summed, as for the clean test set.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from mpbench.config import DatasetConfig, Recipe

__all__ = ["CORRUPTION_FIELDS", "evaluate_corruptions", "not_measured"]

CORRUPTION_FIELDS = ("corrupt_set", "corrupt_top1", "corruptions")


def not_measured() -> dict:
    return dict.fromkeys(CORRUPTION_FIELDS)


@torch.no_grad()
def evaluate_corruptions(model: nn.Module, data, recipe: Recipe, dataset: DatasetConfig,
                         device: torch.device,
                         note: Callable[[str], None] = lambda m: None) -> dict:
    """``corrupt_set`` (which set), ``corrupt_top1`` (mean over corruptions and severities)
    and ``corruptions``: ``{corruption: {"top1": mean over severities, "severities": [...]}}``.

    All None when ``recipe.corruptions`` is off or the data set is streamed from a folder
    (its test images are never held in memory)."""
    from mpbench.data import BatchLoader
    from mpbench.data.corruptions import corrupted_test_sets
    from mpbench.training.callbacks import recipe_callbacks
    from mpbench.training.device import autocast_for, use_channels_last
    from mpbench.training.distributed import rank, world_size
    from mpbench.training.trainer import evaluate

    if not recipe.corruptions:
        return not_measured()
    if getattr(data, "streaming", False) or getattr(data, "test_x", None) is None:
        note("corruptions: not measured (a streamed image folder's test set is not in memory)")
        return not_measured()
    device = torch.device(device)
    channels_last = use_channels_last(recipe.channels_last, model, device)
    autocast = autocast_for(device, recipe)
    name, sets = corrupted_test_sets(data, dataset.corruptions_root)
    per: dict[str, list[float]] = {}
    for corruption, severity, images, labels in sets:
        loader = BatchLoader(images, labels, recipe.eval_batch_size, train=False,
                             mean=data.mean, std=data.std, device=device,
                             channels_last=channels_last, shard=(rank(), world_size()))
        for cb in recipe_callbacks(recipe):
            _, loader = cb.on_loaders(loader, loader)
        top1 = evaluate(model, loader, autocast)["test_top1"]
        per.setdefault(corruption, []).append(top1)
        del loader, images
    every = [t for levels in per.values() for t in levels]
    mean = sum(every) / len(every)
    note(f"corruptions ({name}, {len(per)} x {len(every) // len(per)} severities): "
         f"mean top1 {mean:.2f}")
    return {"corrupt_set": name, "corrupt_top1": mean,
            "corruptions": {c: {"top1": sum(v) / len(v), "severities": v} for c, v in per.items()}}
