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

timm's contract: features are the members' concatenated along channels (member i's in
channels ``[i·C, (i+1)·C)``): ``forward_features``, ``forward_intermediates`` and
``feature_info`` (each stage ``N·C`` channels), ``num_features`` = ``N·C`` pooled;
``forward_head(x)`` splits them, runs each member's head and combines, and
``pre_logits=True`` (or ``num_classes=0``) returns the members' pooled features
concatenated. These need members that have the contract themselves (every built-in does);
``forward`` itself calls each member whole, so any registered model can be a member.
"""
import inspect
import math
from dataclasses import replace
from typing import Any, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from mpbench.registry import Knob, get_entry, register_model

__all__ = ["Ensemble", "ensemble", "register_ensemble"]

COMBINE = ("mean_probs", "mean_logits")


class Ensemble(nn.Module):
    """Runs every member on the same input and combines their class scores."""

    member_logits: Optional[torch.Tensor]

    def __init__(self, members: Sequence[nn.Module], combine: str = "mean_probs"):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if combine not in COMBINE:
            raise ValueError(f"combine must be one of {COMBINE}, got {combine!r}")
        self.members = nn.ModuleList(members)
        self.combine = combine
        self.num_classes = getattr(members[0], "num_classes", None)
        self.features_only = self.num_classes == 0  # no classifier: forward gives features
        if hasattr(members[0], "num_features"):
            self.num_features = self.head_hidden_size = len(members) * members[0].num_features
        if hasattr(members[0], "feature_info"):
            self.feature_info = [dict(info, num_chs=info["num_chs"] * len(members))
                                 for info in members[0].feature_info]
        # Set by forward() in training mode for training_loss(); None otherwise.
        self.member_logits = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for m in self.members:
            outs.append(m(x))
        if self.features_only:
            return torch.cat(outs, 1)
        return self.combine_logits(torch.stack(outs))  # N x B x classes

    def combine_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """``N x B x classes`` member logits -> the combination (see the module docstring)."""
        self.member_logits = logits if self.training else None
        if self.combine == "mean_logits":
            return logits.mean(0)
        return torch.logsumexp(F.log_softmax(logits, dim=-1), dim=0) - math.log(len(self.members))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([m.forward_features(x) for m in self.members], 1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        xs = x.chunk(len(self.members), 1)
        outs = [m.forward_head(xi, pre_logits=pre_logits) for m, xi in zip(self.members, xs)]
        if pre_logits or self.features_only:
            return torch.cat(outs, 1)
        return self.combine_logits(torch.stack(outs))

    def forward_intermediates(self, x: torch.Tensor, indices=None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False):
        """Each member's ``forward_intermediates``, concatenated stage by stage."""
        outs = [m.forward_intermediates(x, indices, norm=norm, stop_early=stop_early,
                                        output_fmt=output_fmt,
                                        intermediates_only=intermediates_only)
                for m in self.members]
        if intermediates_only:
            return [torch.cat(maps, 1) for maps in zip(*outs)]
        return (torch.cat([o[0] for o in outs], 1),
                [torch.cat(maps, 1) for maps in zip(*(o[1] for o in outs))])

    def prune_intermediate_layers(self, indices=None, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        take = [m.prune_intermediate_layers(indices, prune_norm=prune_norm,
                                            prune_head=prune_head) for m in self.members]
        if prune_head:
            self.num_classes, self.features_only = 0, True
        return take[0]

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

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        for m in self.members:
            if global_pool is None:
                m.reset_classifier(num_classes)
            else:
                m.reset_classifier(num_classes, global_pool)
        self.num_classes = num_classes
        self.features_only = num_classes == 0


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
    # the member's geometry: its class count (an ImageNet member's 1000, not the builder's
    # CIFAR-100 default), input size and channel statistics
    if 0 < entry.default_num_classes() != _parameters_default_classes():
        member_overrides.setdefault("num_classes", entry.default_num_classes())
    register_model(ensemble, name=name, family="ensemble", knob=ens_knob, member=member, n=n,
                   member_args=member_args, combine=combine, input_size=entry.input_size,
                   default_cfg=entry.default_cfg, **member_overrides)
    return name


def _parameters_default_classes() -> int:
    return inspect.signature(ensemble).parameters["num_classes"].default


# The plain ResNets' knob is depth; ensembles are matched by making members *narrower*.
_WIDTH_3STAGE = Knob("width", kind="float", low=2, high=128)
_WIDTH_4STAGE = Knob("width", kind="float", low=4, high=256)

register_ensemble("cifar_resnet20", 3, knob=_WIDTH_3STAGE, width=16)
for _n in (2, 4):
    register_ensemble("cifar_resnet56", _n, knob=_WIDTH_3STAGE, width=16)
    register_ensemble("cifar_resnet18", _n, knob=_WIDTH_4STAGE, width=64)
register_ensemble("cifar_wrn16_4", 3)
