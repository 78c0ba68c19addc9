"""Trainer callbacks: what a run needs beyond plain training reaches the loop through these.

The trainer (:func:`mpbench.training.trainer.train`) knows nothing of fine-tuning; it calls
each callback's hooks at fixed points, the way Lightning's callbacks keep such concerns out of
the loop:

- ``on_loaders(train_loader, eval_loader) -> (train_loader, eval_loader)`` before the first
  epoch, once per evaluation split (test, then the validation split if there is one; the
  training loader returned by the first call is the one used), e.g. resize the inputs;
- ``on_epoch_start(model, optimizer, epoch)`` after ``model.train()`` at every epoch (e.g.
  freeze the backbone for the first epochs).

:func:`recipe_callbacks` builds the ones a recipe asks for (``freeze_backbone_epochs``,
``input_size``); a caller may add its own.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from mpbench.config import Recipe
from mpbench.training.distributed import unwrap
from mpbench.training.init import classifier

__all__ = ["Callback", "FreezeBackbone", "ResizeInputs", "ResizedBatches", "freeze_backbone",
           "resize_batches", "recipe_callbacks"]


class Callback:
    """No-op hooks; subclass and override what you need."""

    def on_loaders(self, train_loader, eval_loader):
        return train_loader, eval_loader

    def on_epoch_start(self, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int) -> None:
        pass


class FreezeBackbone(Callback):
    """Only the classifier learns during the first ``epochs`` epochs (fine-tuning warm-up)."""

    def __init__(self, epochs: int):
        self.epochs = int(epochs)

    def on_epoch_start(self, model, optimizer, epoch):
        freeze_backbone(model, optimizer, epoch < self.epochs)


class ResizeInputs(Callback):
    """Feed the model ``size``x``size`` images (e.g. an ImageNet-pretrained start on CIFAR)."""

    def __init__(self, size: int):
        self.size = int(size)

    def on_loaders(self, train_loader, eval_loader):
        return resize_batches(train_loader, eval_loader, size=self.size)


def recipe_callbacks(recipe: Recipe) -> list[Callback]:
    """The callbacks a recipe's fine-tuning fields ask for (none for a plain run)."""
    out: list[Callback] = []
    if recipe.input_size:
        out.append(ResizeInputs(recipe.input_size))
    if recipe.freeze_backbone_epochs:
        out.append(FreezeBackbone(recipe.freeze_backbone_epochs))
    return out


def freeze_backbone(model: nn.Module, opt: torch.optim.Optimizer, frozen: bool) -> None:
    """Train only the classifier (``frozen``) or everything; call after ``model.train()``.

    Frozen: the backbone runs in eval mode (its batch-norm statistics stay put) and a step
    pre-hook on ``opt`` drops the backbone's gradients, so SGD, weight decay and momentum
    included, leaves those parameters exactly as they were. The hook works under DDP too
    (every parameter still takes part in the backward pass); outside DDP the backbone also
    stops requiring gradients, which saves most of the backward pass.
    """
    net = unwrap(model)
    head = classifier(net)
    head_params = {id(p) for p in head.parameters()}
    backbone = [p for p in net.parameters() if id(p) not in head_params]
    state = getattr(opt, "_mpbench_freeze", None)
    if state is None:
        state = opt._mpbench_freeze = {"frozen": False}

        def drop_backbone_grads(optimizer, args, kwargs):
            if state["frozen"]:
                for p in backbone:
                    p.grad = None
        opt.register_step_pre_hook(drop_backbone_grads)
    state["frozen"] = frozen
    if not (dist.is_available() and dist.is_initialized()):
        for p in backbone:
            p.requires_grad_(not frozen)
    if frozen:
        net.eval()
        head.train()


class ResizedBatches:
    """A batch loader whose images are resized on the device (bilinear) to ``size``²."""

    def __init__(self, loader, size: int):
        self.loader, self.size = loader, int(size)

    def __getattr__(self, name):  # device, set_epoch, ... of the wrapped loader
        return getattr(self.loader, name)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for x, y in self.loader:
            if x.shape[-1] != self.size or x.shape[-2] != self.size:
                x = F.interpolate(x, size=(self.size, self.size), mode="bilinear",
                                  align_corners=False, antialias=x.shape[-1] > self.size)
            yield x, y


def resize_batches(*loaders, size: int | None):
    """``loaders`` unchanged when ``size`` is None, else each wrapped in :class:`ResizedBatches`."""
    return loaders if not size else tuple(ResizedBatches(ld, size) for ld in loaders)
