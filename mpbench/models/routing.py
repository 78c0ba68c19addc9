"""Cross-connections between the paths of successive layers (DESIGN.md §1).

Path features travel stacked along channels: ``B x (P·C) x H x W``, path ``i`` in channels
``[i·C, (i+1)·C)``. A :class:`Gate` maps that tensor to gate values ``α`` of shape
``B x P x P`` (``granularity='scalar'``) or ``B x P x P x C`` (``'channel'``), indexed
``[b, source i, destination j]``; :class:`CrossConnection` then mixes
``U_j = Σ_i α[i, j] · X_i``. Gates see only the block input, so ``α`` is a function of the
features, never of the label.

Everything here is traceable by TorchScript (fvcore): branches depend on configuration,
never on data; the maths is pooling, linear layers, softmax/sigmoid and einsum; reshapes
use ``view`` (fvcore ignores it, but not ``unflatten``).
"""
import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

ROUTES = ("none", "static", "fdcc", "cross_pred")
NORMS = ("softmax_dest", "softmax_src", "sigmoid")
GRANULARITIES = ("scalar", "channel")
GATE_INITS = ("uniform", "identity")
IDENTITY_LOGIT = 2.0  # 'identity' init: softmax of ±2 on/off the diagonal: α[i, i] ≈ 0.95 (P=4)


def normalise(logits: torch.Tensor, norm: str) -> torch.Tensor:
    """``softmax_dest``: each source's allocations sum to 1 over destinations (dim 2);
    ``softmax_src``: each destination is a convex mix of sources (dim 1); ``sigmoid``: free."""
    if norm == "softmax_dest":
        return logits.softmax(2)
    if norm == "softmax_src":
        return logits.softmax(1)
    if norm == "sigmoid":
        return logits.sigmoid()
    # a literal list and no !r: TorchScript compiles this function
    raise ValueError(f"norm must be one of ['softmax_dest', 'softmax_src', 'sigmoid'], got '{norm}'")


def neutral_logit(norm: str, paths: int) -> float:
    """Constant logit giving column sums ``Σ_i α[i, j] = 1``: with identical paths the mix is
    then the identity, which is what upcycling a single-path network needs."""
    if norm == "sigmoid":
        return -math.log(paths - 1) if paths > 1 else 30.0
    return 0.0


def init_alpha(paths: int, gate_init: str) -> torch.Tensor:
    """The ``P x P`` gate values every norm starts from: ``1/P`` everywhere for ``uniform``;
    for ``identity`` the softmax of ``±IDENTITY_LOGIT`` on/off the diagonal (symmetric, rows
    sum to 1). Both are doubly stochastic, so every column sums to 1 too: mixing identical
    inputs gives outputs of the input's scale, whatever the norm (DESIGN.md §8, fair starts)."""
    if gate_init == "uniform":
        return torch.full((paths, paths), 1.0 / paths)
    if gate_init == "identity":
        return ((2 * torch.eye(paths) - 1) * IDENTITY_LOGIT).softmax(1)
    raise ValueError(f"gate_init must be one of {GATE_INITS}, got {gate_init!r}")


def init_logits(shape: tuple[int, ...], paths: int, gate_init: str, temperature: float,
                norm: str = "softmax_dest") -> torch.Tensor:
    """Initial logits (before ``/ τ``) of shape ``(P, P[, C])`` giving α = :func:`init_alpha`
    (so α at init ignores τ and ``norm``). Softmax norms: zeros for ``uniform``,
    ``±IDENTITY_LOGIT·τ`` on/off the diagonal for ``identity``. ``sigmoid``: ``logit(α)·τ``
    (``-log(P-1)`` for ``uniform``, not 0, which would give α = 1/2 and column sums P/2,
    compounded at every cross-connection)."""
    alpha = init_alpha(paths, gate_init)  # checks gate_init
    if norm == "sigmoid":
        logits = torch.logit(alpha.double()).float()
    elif norm in ("softmax_dest", "softmax_src"):
        logits = (torch.zeros(paths, paths) if gate_init == "uniform"
                  else (2 * torch.eye(paths) - 1) * IDENTITY_LOGIT)
    else:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    logits = logits.view(paths, paths, *([1] * (len(shape) - 2)))
    return (logits * temperature).expand(shape).clone()


class Gate(nn.Module):
    """Base: subclasses compute logits ``B x P x P[ x C]``; this divides by τ and normalises.

    ``gate_channels`` is C for ``granularity='channel'`` and 1 otherwise; ``gate_shape`` is
    the per-sample shape of α. :func:`mpbench.models.gates.record_gates` hooks every Gate.
    """

    def __init__(self, paths: int, channels: int, norm: str = "softmax_dest",
                 granularity: str = "scalar", temperature: float = 1.0):
        super().__init__()
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        self.paths, self.channels = paths, channels
        self.norm, self.granularity, self.temperature = norm, granularity, float(temperature)
        self.gate_channels = channels if granularity == "channel" else 1
        self.gate_shape = (paths, paths) + ((channels,) if granularity == "channel" else ())

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalised(self.logits(x))

    def normalised(self, logits: torch.Tensor) -> torch.Tensor:
        """``normalise(logits / τ)``: the gate values."""
        if self.temperature != 1.0:  # configuration, not data: traces to no op at τ = 1
            logits = logits / self.temperature
        return normalise(logits, self.norm)

    def set_neutral(self) -> None:
        """Make α input-independent with unit column sums (see :func:`neutral_logit`)."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return (f"paths={self.paths}, channels={self.channels}, norm={self.norm}, "
                f"granularity={self.granularity}, temperature={self.temperature:g}")


def _pool(x: torch.Tensor) -> torch.Tensor:
    """Global average pool, ``B x (P·C) x H x W -> B x P·C`` (fvcore counts it natively)."""
    return F.adaptive_avg_pool2d(x, 1).flatten(1)


class StaticGate(Gate):
    """Learned, input-independent α (the same for every sample): mixing without features."""

    def __init__(self, paths: int, channels: int, gate_init: str = "uniform", **kw):
        super().__init__(paths, channels, **kw)
        self.weight = nn.Parameter(init_logits(self.gate_shape, paths, gate_init,
                                               self.temperature, self.norm))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight.unsqueeze(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # normalise once, then broadcast to the batch so recorded α is per sample
        alpha = self.normalised(self.logits(x))
        if self.granularity == "channel":  # configuration: TorchScript and torch.fx both follow
            return alpha.expand(x.shape[0], -1, -1, -1)
        return alpha.expand(x.shape[0], -1, -1)

    @torch.no_grad()
    def set_neutral(self) -> None:
        self.weight.fill_(neutral_logit(self.norm, self.paths) * self.temperature)


class FdccGate(Gate):
    """The paper's joint gate: ``logits = W2 · ReLU(BN(W1 · concat_i GAP(X_i)))``.

    Every destination's weights see every source's pooled features, which is what makes the
    cross-connections feature-dependent. ``W2 = 0`` at init, so α starts at the
    ``gate_init`` pattern for every input and the gate learns away from it.
    """

    def __init__(self, paths: int, channels: int, reduction: float = 16, gate_init: str = "uniform",
                 min_hidden: int = 16, **kw):
        super().__init__(paths, channels, **kw)
        hidden = max(int(paths * channels // reduction), min_hidden)
        self.fc1 = nn.Linear(paths * channels, hidden, bias=False)
        self.bn = nn.BatchNorm1d(hidden)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, math.prod(self.gate_shape))
        nn.init.zeros_(self.fc2.weight)
        with torch.no_grad():
            self.fc2.bias.copy_(init_logits(self.gate_shape, paths, gate_init, self.temperature,
                                            self.norm).flatten())

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.bn(self.fc1(_pool(x))))
        return self.fc2(h).view((-1,) + self.gate_shape)

    @torch.no_grad()
    def set_neutral(self) -> None:
        self.fc2.weight.zero_()
        self.fc2.bias.fill_(neutral_logit(self.norm, self.paths) * self.temperature)


class CrossPredGate(Gate):
    """The journal's cross-prediction router: source ``i`` predicts its own allocation,
    ``logits[i, :] = W_i · GAP(X_i) + b_i`` (one linear predictor per source, no mixing of
    sources inside the gate). Zero weights at init, as for :class:`FdccGate`."""

    def __init__(self, paths: int, channels: int, gate_init: str = "uniform", **kw):
        super().__init__(paths, channels, **kw)
        out = paths * self.gate_channels
        self.weight = nn.Parameter(torch.zeros(paths, out, channels))
        bias = init_logits(self.gate_shape, paths, gate_init, self.temperature, self.norm)
        self.bias = nn.Parameter(bias.reshape(paths, out).clone())

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        s = _pool(x).view(-1, self.paths, self.channels)  # B x P x C
        out = torch.einsum("bic,ioc->bio", s, self.weight) + self.bias
        return out.view((-1,) + self.gate_shape)

    @torch.no_grad()
    def set_neutral(self) -> None:
        self.weight.zero_()
        self.bias.fill_(neutral_logit(self.norm, self.paths) * self.temperature)


GATES = {"static": StaticGate, "fdcc": FdccGate, "cross_pred": CrossPredGate}


def create_gate(route: str, paths: int, channels: int, *, norm: str = "softmax_dest",
                granularity: str = "scalar", temperature: float = 1.0, gate_init: str = "uniform",
                gate_reduction: float = 16) -> Gate:
    if route not in GATES:
        raise ValueError(f"route must be one of {ROUTES}, got {route!r}")
    kw = dict(norm=norm, granularity=granularity, temperature=temperature, gate_init=gate_init)
    if route == "fdcc":
        kw["reduction"] = gate_reduction
    return GATES[route](paths, channels, **kw)


def mix_paths(x: torch.Tensor, alpha: torch.Tensor, paths: int,
              per_channel: Optional[bool] = None) -> torch.Tensor:
    """``U_j = Σ_i α[i, j] · X_i`` on stacked paths; α is ``B x P x P`` or ``B x P x P x C``
    (``per_channel``; None: read off α, which ``torch.fx`` cannot trace, so modules pass it)."""
    xp = x.view(x.shape[0], paths, -1, x.shape[2], x.shape[3])  # B x P x C x H x W
    if per_channel is None:
        per_channel = alpha.dim() == 4
    if per_channel:
        u = torch.einsum("bijc,bichw->bjchw", alpha, xp)
    else:
        u = torch.einsum("bij,bichw->bjchw", alpha, xp)
    return u.flatten(1, 2)


class CrossConnection(nn.Module):
    """Mixes the P paths entering a block with gate values computed from those paths."""

    def __init__(self, gate: Gate):
        super().__init__()
        self.paths = gate.paths
        self.per_channel = gate.granularity == "channel"
        self.gate = gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mix_paths(x, self.gate(x), self.paths, self.per_channel)
