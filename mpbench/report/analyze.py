"""Do the paths of a trained multi-path network specialise? Path usage per class and a score.

The paper's claim is that cross-connections let "each path specialise in a context". This
module turns that into numbers, for every cross-connection (layer) of a model:

**Path usage.** For sample n and a layer with gate values α (``P x P``, or ``P x P x C``
averaged over channels first), the usage of destination path j is the share of gate mass it
receives, ``u_n(j) = Σ_i α[i, j] / Σ_{i,j} α[i, j]``: a distribution over the P paths.
Under ``norm='softmax_src'`` every destination always receives exactly 1, so there the usage
of *source* path i, ``Σ_j α[i, j] / Σ α``, is used instead (``axis='src'``).

**Specialisation score.** Let Y be the label of a test image drawn uniformly and Z the path
that a unit of its gate mass goes to, drawn from ``u_n``. Their joint distribution is
``p(y, z) = (1/N) Σ_n [y_n = y] u_n(z)``. The score is the normalised mutual information

    NMI = I(Y; Z) / min(H(Y), H(Z))     (0 when min(H(Y), H(Z)) = 0)

It is 0 when usage does not depend on the label (in particular when every sample routes the
same way) and 1 when the label determines the path: every sample puts all its mass on one
path and that path is a function of its class. Soft usage counts as uncertainty, so a
network that always splits its mass lands below 1 however class-specific the split is. The
model's score is the mean over its layers; each layer's score is reported too.

Next to it: the same score for the untrained network (same config and seed; with the
default ``gate_init='uniform'`` its gates are input-independent, so it scores exactly 0), and
for the trained network with labels randomly permuted (the finite-sample floor: mutual
information estimated from N samples is biased upwards by about (K-1)(P-1)/(2N) nats).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

from mpbench.errors import UserError
from mpbench.models.gates import record_gates

__all__ = ["path_usage", "usage_by_label", "mutual_information", "specialisation",
           "shuffled_specialisation", "usage_axis", "collect_alphas", "analyze_model", "analyze_run"]


# --------------------------------------------------------------------------- pure maths

def usage_axis(norm: str) -> str:
    """The axis whose usage carries information under ``norm`` (see module docstring)."""
    return "src" if norm == "softmax_src" else "dest"


def path_usage(alpha: torch.Tensor, axis: str = "dest") -> torch.Tensor:
    """``N x P x P[ x C]`` gate values -> ``N x P`` usage distributions (rows sum to 1)."""
    a = alpha.double()
    if a.dim() == 4:
        a = a.mean(3)
    mass = a.sum(1) if axis == "dest" else a.sum(2)  # dest: Σ over sources i
    return mass / mass.sum(1, keepdim=True).clamp_min(1e-300)


def usage_by_label(usage: torch.Tensor, labels: torch.Tensor, num_labels: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean usage per label (``K x P``; NaN for labels with no sample) and sample counts."""
    counts = torch.bincount(labels, minlength=num_labels)
    sums = torch.zeros(num_labels, usage.shape[1], dtype=torch.float64).index_add_(0, labels, usage.double())
    return sums / counts.unsqueeze(1).double(), counts


def _entropy(p: torch.Tensor) -> float:
    p = p[p > 0]
    return float(-(p * p.log()).sum())


def _joint(usage: torch.Tensor, labels: torch.Tensor, num_labels: int) -> torch.Tensor:
    joint = torch.zeros(num_labels, usage.shape[1], dtype=torch.float64)
    return joint.index_add_(0, labels, usage.double()) / len(labels)


def mutual_information(usage: torch.Tensor, labels: torch.Tensor, num_labels: int | None = None
                       ) -> tuple[float, float, float]:
    """``(I(Y; Z), H(Y), H(Z))`` in nats for soft path allocations ``usage`` (``N x P``)."""
    k = int(num_labels or int(labels.max()) + 1)
    joint = _joint(usage, labels, k)
    py, pz = joint.sum(1), joint.sum(0)
    outer = py.unsqueeze(1) * pz.unsqueeze(0)
    nz = joint > 0
    mi = float((joint[nz] * (joint[nz] / outer[nz]).log()).sum())
    return max(mi, 0.0), _entropy(py), _entropy(pz)


def specialisation(usage: torch.Tensor, labels: torch.Tensor, num_labels: int | None = None) -> float:
    """Normalised mutual information ``I(Y; Z) / min(H(Y), H(Z))`` in [0, 1]."""
    mi, hy, hz = mutual_information(usage, labels, num_labels)
    denom = min(hy, hz)
    return 0.0 if denom < 1e-12 else min(mi / denom, 1.0)


def shuffled_specialisation(usage: torch.Tensor, labels: torch.Tensor, num_labels: int | None = None,
                            repeats: int = 5, seed: int = 0) -> float:
    """Mean score with labels randomly permuted: what chance alone gives at this N."""
    g = torch.Generator().manual_seed(seed)
    scores = [specialisation(usage, labels[torch.randperm(len(labels), generator=g)], num_labels)
              for _ in range(repeats)]
    return sum(scores) / len(scores)


# --------------------------------------------------------------------------- models

@torch.no_grad()
def collect_alphas(model: nn.Module, images: torch.Tensor, mean, std, batch_size: int = 500,
                   device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Gate values of ``model`` (eval mode) for uint8 ``images``, per cross-connection."""
    from mpbench.data import normalize

    model = model.to(device).eval()
    with record_gates(model) as rec:
        for i in range(0, len(images), batch_size):
            model(normalize(images[i:i + batch_size].to(device), mean, std))
    return rec.alphas


def _gate_norm(model: nn.Module) -> str | None:
    from mpbench.models.routing import Gate

    return next((m.norm for m in model.modules() if isinstance(m, Gate)), None)


def _layer_scores(alphas: dict[str, torch.Tensor], labels: torch.Tensor, num_labels: int,
                  axis: str) -> dict[str, dict[str, float]]:
    out = {}
    for layer, alpha in alphas.items():
        u = path_usage(alpha, axis)
        out[layer] = {"score": specialisation(u, labels, num_labels),
                      "shuffled": shuffled_specialisation(u, labels, num_labels)}
    return out


def _heatmap(means: torch.Tensor, names: Sequence[str], layers: Sequence[str], paths: int,
             title: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    grid = means.numpy()  # K x (L·P)
    centre = 1.0 / paths
    norm = TwoSlopeNorm(vcenter=centre, vmin=min(float(grid.min()), centre - 1e-3),
                        vmax=max(float(grid.max()), centre + 1e-3))
    fig, ax = plt.subplots(figsize=(3 + 0.22 * grid.shape[1], 2 + 0.14 * grid.shape[0]))
    im = ax.imshow(grid, aspect="auto", cmap="RdBu_r", norm=norm, interpolation="nearest")
    ax.set_yticks(range(len(names)), names, fontsize=6 if len(names) > 30 else 8)
    ax.set_xticks([i * paths + (paths - 1) / 2 for i in range(len(layers))],
                  [layer.replace("stages.", "s").replace(".route", "/b") for layer in layers],
                  rotation=90, fontsize=7)
    for i in range(1, len(layers)):
        ax.axvline(i * paths - 0.5, color="k", linewidth=0.5)
    ax.set_xlabel(f"cross-connection (layer), {paths} paths each")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label=f"mean path usage (uniform = {centre:.3g})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def analyze_model(model: nn.Module, untrained: nn.Module, dataset, out_dir: str | Path | None = None,
                  device: str | torch.device | None = None, batch_size: int = 500,
                  meta: dict | None = None) -> dict:
    """Path usage per class (and superclass, where ``dataset.test_coarse`` exists) on the test
    split, and specialisation scores of ``model`` next to ``untrained``'s.

    ``dataset`` needs ``test_x`` (uint8), ``test_y``, ``classes``, ``mean``, ``std`` and
    optionally ``test_coarse``/``coarse_classes``. Returns a JSON-safe summary (``meta``
    merged in). With ``out_dir``, also writes ``path_usage_{class,superclass}.csv`` (long
    form: level, label, n, layer, path, usage) with a heatmap ``.png`` each,
    ``specialisation.csv`` and ``analysis.json``.
    """
    import pandas as pd

    norm = _gate_norm(model)
    if norm is None:
        raise UserError("model has no cross-connections (route=none or paths=1): "
                        "there is no path allocation to analyse")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    axis = usage_axis(norm)
    trained = collect_alphas(model, dataset.test_x, dataset.mean, dataset.std, batch_size, device)
    fresh = collect_alphas(untrained, dataset.test_x, dataset.mean, dataset.std, batch_size, device)
    layers = list(trained)
    paths = trained[layers[0]].shape[1]

    levels = [("class", dataset.test_y, list(dataset.classes))]
    if getattr(dataset, "test_coarse", None) is not None and getattr(dataset, "coarse_classes", None):
        levels.append(("superclass", dataset.test_coarse, list(dataset.coarse_classes)))

    result = {**(meta or {}), "norm": norm, "axis": axis, "paths": paths, "layers": layers,
              "num_samples": len(dataset.test_y), "specialisation": {}, "files": []}
    usage_rows, score_rows, grids = [], [], {}
    for level, labels, names in levels:
        k = len(names)
        ours = _layer_scores(trained, labels, k, axis)
        base = _layer_scores(fresh, labels, k, axis)
        per_layer = {layer: {"trained": ours[layer]["score"], "untrained": base[layer]["score"],
                             "shuffled": ours[layer]["shuffled"]} for layer in layers}
        mean = {key: sum(v[key] for v in per_layer.values()) / len(layers)
                for key in ("trained", "untrained", "shuffled")}
        result["specialisation"][level] = {**mean, "per_layer": per_layer}
        score_rows += [{"level": level, "layer": layer, **v} for layer, v in per_layer.items()]
        score_rows.append({"level": level, "layer": "mean", **mean})

        means = []
        for layer in layers:
            m, counts = usage_by_label(path_usage(trained[layer], axis), labels, k)
            means.append(m)
            usage_rows += [{"level": level, "label_index": y, "label": names[y], "n": int(counts[y]),
                            "layer": layer, "path": j, "usage": float(m[y, j])}
                           for y in range(k) for j in range(paths)]
        grids[level] = torch.cat(means, 1)  # K x (L·P)

    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        usage = pd.DataFrame(usage_rows)
        for level, _, names in levels:
            csv, png = out / f"path_usage_{level}.csv", out / f"path_usage_{level}.png"
            usage[usage.level == level].to_csv(csv, index=False)
            s = result["specialisation"][level]
            _heatmap(grids[level], names, layers, paths,
                     f"path usage by {level} ({axis} axis); specialisation NMI "
                     f"{s['trained']:.3f} trained, {s['untrained']:.3f} untrained", png)
            result["files"] += [str(csv), str(png)]
        scores, summary = out / "specialisation.csv", out / "analysis.json"
        pd.DataFrame(score_rows).to_csv(scores, index=False)
        result["files"] += [str(scores), str(summary)]
        summary.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


def analyze_run(run_dir: str | Path, out_dir: str | Path | None = None,
                data_root: str | Path | None = None, device: str | None = None) -> dict:
    """:func:`analyze_model` for a finished run directory (default output: ``RUN_DIR/analysis``).

    The untrained network is the run's model freshly built with the run's seed
    (``mpbench.suite.runner.build_untrained``); the data are the run's test split.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: not a run directory")
    from mpbench import data
    from mpbench.suite import runner as runs

    model, config = runs.load_run(run_dir)
    untrained = runs.build_untrained(config)
    dataset = data.load_dataset(config["dataset"], data_root)
    meta = {"run_dir": str(run_dir), "model": config.get("model")}
    return analyze_model(model, untrained, dataset, Path(out_dir) if out_dir else run_dir / "analysis",
                         device=device, meta=meta)
