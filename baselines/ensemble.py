"""Ensembles of N independently initialised members: the "several networks" baseline.

Any registered model can be a member. At a FLOP budget the knob is the *member's* knob
(width, widen factor, ...) applied to every member, so the members get narrower as N grows
and the ensemble costs N times one member (the combination is free in fvcore MACs).

Combination at test time (``combine``):

- ``"mean_probs"`` (default): the members' softmax outputs are averaged, as deep ensembles
  are usually evaluated; the module returns ``log(mean_i softmax(z_i))``, computed stably as
  ``logsumexp_i(log_softmax(z_i)) - log N``. Those are valid logits: their softmax *is* the
  averaged distribution, so top-k and cross-entropy on the output are the ensemble's.
- ``"mean_logits"``: the members' logits are averaged (what the multi-path networks'
  ``merge: mean_logits`` head does).

Training: one run trains all members, and each member learns on its own, as if trained
alone: :meth:`Ensemble.training_loss` is the **sum** of the members' cross-entropies (a
mean would divide every member's effective learning rate by N). mpbench's trainer calls
``model.training_loss(out, y, smoothing)`` when a model defines it; ``out`` is still the
combined output, so training accuracy is the ensemble's. A trainer that applies plain
cross-entropy to ``model(x)`` instead would train the members jointly through the combined
output (a mixture), which is a different baseline; mpbench's does not.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from mpbench.registry import Knob, get_entry, register_model

__all__ = ["Ensemble", "ensemble", "register_ensemble"]

COMBINE = ("mean_probs", "mean_logits")


class Ensemble(nn.Module):
    """Runs every member on the same input and combines their class scores."""

    def __init__(self, members: Sequence[nn.Module], combine: str = "mean_probs"):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if combine not in COMBINE:
            raise ValueError(f"combine must be one of {COMBINE}, got {combine!r}")
        self.members = nn.ModuleList(members)
        self.combine = combine
        self.num_classes = getattr(members[0], "num_classes", None)
        # Set by forward() in training mode for training_loss(); None otherwise.
        self.member_logits: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.stack([m(x) for m in self.members])  # N x B x classes
        self.member_logits = logits if self.training else None
        if self.combine == "mean_logits":
            return logits.mean(0)
        return torch.logsumexp(F.log_softmax(logits, dim=-1), dim=0) - math.log(len(self.members))

    def training_loss(self, out: torch.Tensor, y: torch.Tensor,
                      smoothing: float = 0.0) -> torch.Tensor:
        """Sum over members of each member's own cross-entropy (see the module docstring)."""
        logits = self.member_logits
        if logits is None:  # not called after a training-mode forward: score the combination
            return F.cross_entropy(out, y, label_smoothing=smoothing)
        n, b, k = logits.shape
        per_member = F.cross_entropy(logits.reshape(n * b, k), y.repeat(n),
                                     label_smoothing=smoothing, reduction="none")
        return per_member.view(n, b).mean(1).sum()

    def get_classifier(self) -> nn.ModuleList:
        return nn.ModuleList(m.get_classifier() for m in self.members)

    def reset_classifier(self, num_classes: int) -> None:
        for m in self.members:
            m.reset_classifier(num_classes)
        self.num_classes = num_classes


def ensemble(member: str = "cifar_resnet20", n: int = 3, member_args: dict | None = None,
             combine: str = "mean_probs", num_classes: int = 100, in_chans: int = 3,
             **member_overrides: Any) -> Ensemble:
    """N members of the registered model ``member``.

    Each member is ``create_model(member, **member_args, **member_overrides)``; the
    overrides are where the member's knob (e.g. ``width=12``) arrives when matching.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    entry = get_entry(member)
    args = {**(member_args or {}), **member_overrides, "num_classes": num_classes,
            "in_chans": in_chans}
    return Ensemble([entry.build(**args) for _ in range(n)], combine=combine)


def register_ensemble(member: str, n: int, *, name: str | None = None,
                      knob: Knob | None = None, member_args: dict | None = None,
                      combine: str = "mean_probs", **member_overrides: Any) -> str:
    """Register ``ensemble_<member>_x<n>`` whose knob is ``knob`` or the member's own.

    The knob's current value is stored among the defaults, so matching starts from the
    member as registered. A knob whose step depends on arguments sees the member's.
    """
    entry = get_entry(member)
    base = knob or entry.knob
    if base is None:
        raise ValueError(f"{member} has no complexity knob; pass knob=")
    member_args = dict(member_args or {})
    name = name or f"ensemble_{member.removeprefix('cifar_')}_x{n}"
    step = base.step
    if callable(step):
        def step(args: dict, _step=base.step) -> int:  # the member's view of the arguments
            return _step({**entry.defaults, **args.get("member_args", {}), **args})
    ens_knob = replace(base, step=step)
    knob_value = member_overrides.get(
        base.name, member_args.get(base.name, entry.defaults.get(base.name)))
    if knob_value is not None:
        member_overrides[base.name] = knob_value
    register_model(ensemble, name=name, family="ensemble", knob=ens_knob, member=member, n=n,
                   member_args=member_args, combine=combine, **member_overrides)
    return name


# The plain ResNets' knob is depth; ensembles are matched by making members *narrower*.
_WIDTH_3STAGE = Knob("width", kind="float", low=2, high=128)
_WIDTH_4STAGE = Knob("width", kind="float", low=4, high=256)

register_ensemble("cifar_resnet20", 3, knob=_WIDTH_3STAGE, width=16)
for _n in (2, 4):
    register_ensemble("cifar_resnet56", _n, knob=_WIDTH_3STAGE, width=16)
    register_ensemble("cifar_resnet18", _n, knob=_WIDTH_4STAGE, width=64)
register_ensemble("cifar_wrn16_4", 3)
