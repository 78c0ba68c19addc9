"""Where a run trains and in which formats: device, channels_last, bf16 autocast.

One resolver per setting, shared by the trainer, ``mpbench bench`` and the reference script,
so that a benchmark measures exactly what a run does.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn as nn

from mpbench.config import Recipe
from mpbench.errors import UserError


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UserError(f"--device {device}: not a device (auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UserError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA "
                        f"device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return dev


def channels_last_setting(value: str | bool) -> str:
    """``value`` as on/off/auto (YAML turns a bare on/off into a boolean); UserError if not."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if value not in ("on", "off", "auto"):
        raise UserError(f"channels_last must be on, off or auto, got {value!r}")
    return value


def use_channels_last(setting: str | bool, model: nn.Module, device: torch.device) -> bool:
    """Resolve a ``channels_last`` setting (on/off/auto, or a YAML boolean) for ``model``.

    ``auto``: on CUDA only. On CPU, NHWC trained ResNet-20 1.2x faster here but was slower
    for multi-path, SK and ensemble models, is not bit-reproducible, and torch 2.14's oneDNN
    corrupts the heap in the backward pass of a strided 1x1 convolution with fewer than 8
    input channels (BENCHMARKS.md §0); ``on`` is refused for such models on CPU.
    """
    setting = channels_last_setting(setting)
    if setting == "auto":
        return device.type == "cuda"
    if setting == "on" and device.type == "cpu":
        bad = next((name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)
                    and m.kernel_size == (1, 1) and max(m.stride) > 1
                    and m.in_channels // m.groups < 8), None)
        if bad is not None:
                raise UserError(f"channels_last: on: {bad} is a strided 1x1 convolution with fewer "
                            f"than 8 input channels, whose channels_last backward crashes on "
                            f"CPU (oneDNN, torch 2.14); use channels_last: off")
    return setting == "on"


def autocast_for(device: torch.device, recipe: Recipe):
    use_bf16 = recipe.amp == "bf16" or (recipe.amp == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()
