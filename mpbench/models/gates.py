"""Record gate values α while a model runs, without global state.

    with record_gates(model) as rec:
        for x in batches:
            model(x)
    rec.alphas   # {"stages.1.route0": B_total x P x P (or B_total x P x P x C)}

Forward hooks on every :class:`~mpbench.models.routing.Gate` collect its output (detached,
moved to ``device``, CPU by default) per call; leaving the block removes the hooks, so a
recorded model is unchanged afterwards. Names are those of the cross-connections
(``MPResNet.gates()``), in forward order.
"""
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn

from mpbench.models.routing import Gate

__all__ = ["GateRecorder", "record_gates"]


class GateRecorder:
    """Per-layer lists of α batches; :attr:`alphas` concatenates them along the batch."""

    def __init__(self, device: str | torch.device | None = "cpu"):
        self.device = device
        self._batches: dict[str, list[torch.Tensor]] = {}

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs, output: torch.Tensor) -> None:
            alpha = output.detach()
            self._batches[name].append(alpha if self.device is None else alpha.to(self.device))
        return hook

    @property
    def alphas(self) -> dict[str, torch.Tensor]:
        return {name: torch.cat(bs) for name, bs in self._batches.items() if bs}

    @property
    def layers(self) -> list[str]:
        return list(self._batches)

    def clear(self) -> None:
        for bs in self._batches.values():
            bs.clear()


@contextmanager
def record_gates(model: nn.Module, device: str | torch.device | None = "cpu") -> Iterator[GateRecorder]:
    """Hook every gate of ``model`` for the duration of the block (``device=None``: keep α
    where it was computed). A model without gates yields a recorder with no layers."""
    rec = GateRecorder(device)
    handles = []
    try:
        for name, module in model.named_modules():
            if isinstance(module, Gate):
                layer = name[:-len(".gate")] if name.endswith(".gate") else name
                rec._batches[layer] = []
                handles.append(module.register_forward_hook(rec._hook(layer)))
        yield rec
    finally:
        for h in handles:
            h.remove()
