"""Activations: how many output elements a model's convolutions and matrix products make.

Equal MACs are not equal memory: a multi-path network or an ensemble keeps more feature maps
than a plain ResNet of the same MACs. The count here is fvcore's ``ActivationCountAnalysis``
with its default handles, the figure timm's ``benchmark.py`` reports as "activations":

* the output elements of every convolution, linear layer, ``addmm``, ``matmul``, ``bmm`` and
  ``einsum`` (the multi-path mixing included), at **batch 1, eval mode**, the suite's input
  size and class count (the conventions of :mod:`mpbench.complexity.counting`);
* nothing for batch norm, activations functions, additions or pooling: the count is a
  proxy for what training must keep, not the bytes it keeps (the measured peak training
  memory, :mod:`mpbench.bench.memory`, is that).

Reported in millions (``activations_m``), as timm does.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import torch
import torch.nn as nn

from mpbench.complexity.counting import build_for_count, freeze, model_args

__all__ = ["count_activations", "activations_model"]


def count_activations(model: nn.Module, input_size: Sequence[int] = (3, 32, 32)) -> int:
    """Output elements of ``model``'s convolutions and matrix products at batch 1, eval mode
    (fvcore's ``ActivationCountAnalysis``); every module's train/eval flag is restored."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # importing fvcore scripts a loss (deprecated API)
        from fvcore.nn import ActivationCountAnalysis

    modes = {m: m.training for m in model.modules()}
    param = next(model.parameters(), None)
    x = torch.zeros((1, *(int(s) for s in input_size)),
                    device=param.device if param is not None else "cpu",
                    dtype=param.dtype if param is not None and param.is_floating_point()
                    else torch.float32)
    threads = torch.get_num_threads()
    model.eval()
    try:
        torch.set_num_threads(1)  # a batch-1 trace gains nothing from threads (see counting)
        analysis = (ActivationCountAnalysis(model, x).unsupported_ops_warnings(False)
                    .uncalled_modules_warnings(False).tracer_warnings("none"))
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return int(analysis.total())
    finally:
        torch.set_num_threads(threads)
        for m, training in modes.items():
            m.training = training


_CACHE: dict[tuple, int] = {}


def activations_model(name: str, args: dict | None = None, *,
                      input_size: Sequence[int] = (3, 32, 32), num_classes: int = 100) -> int:
    """:func:`count_activations` of a registered model built with ``args`` (as
    :func:`mpbench.complexity.count_model` builds it); cached per model, args and geometry."""
    from mpbench.registry import get_entry

    entry = get_entry(name)
    input_size = tuple(int(s) for s in input_size)
    full = model_args(entry, args, input_size=input_size, num_classes=num_classes)
    key = (name, entry.fn, freeze(full), input_size)
    if key not in _CACHE:
        _CACHE[key] = count_activations(
            build_for_count(name, args, input_size=input_size, num_classes=num_classes),
            input_size)
    return _CACHE[key]
