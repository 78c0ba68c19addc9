"""Scores of one evaluation pass beyond top-1: NLL, ECE, Brier score, superclass top-1.

Everything is accumulated as sums over batches (a 15-bin confidence histogram for the ECE),
so one pass over a split gives all of them, memory does not grow with the split, and under
torchrun each rank's sums are added (:func:`mpbench.training.distributed.all_reduce_sum`).

Definitions (the report states them):

- **NLL**: mean cross-entropy of the softmax of the model's output (no label smoothing).
- **ECE**: top-label expected calibration error with ``N_BINS`` = 15 equal-width confidence
  bins, ``sum_b |correct_b - confidence_b| / N``, the confidence being the largest softmax
  probability (Guo et al. 2017; torchmetrics' ``multiclass_calibration_error(n_bins=15,
  norm='l1')``, except that a confidence of exactly 1.0 falls into the top bin here, where
  torchmetrics gives it a bin of its own).
- **Brier score**: ``sum_k (p_k - [k == y])^2`` averaged over images (Brier 1950; 0 is
  perfect, 2 the worst).
- **Superclass top-1**: the fine prediction mapped to its superclass
  (:func:`mpbench.data.superclasses.superclass_map`) equals the true superclass.

The reliability histogram (per bin: mean confidence, accuracy, image count) is stored with
the scores so that reliability diagrams are drawn from stored results alone.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

N_BINS = 15

__all__ = ["N_BINS", "EvalScores", "score_names"]


def score_names(split: str, superclasses: bool = False) -> list[str]:
    """The scalar keys :meth:`EvalScores.result` returns for ``split``."""
    names = ["loss", "top1", "top5", "nll", "ece", "brier"] + (["superclass_top1"] if superclasses
                                                              else [])
    return [f"{split}_{n}" for n in names]


class EvalScores:
    """Running sums of one evaluation pass; :meth:`update` per batch, :meth:`result` at the end.

    ``coarse_of``: the superclass of every fine class (a 1-D int64 tensor) or None.
    """

    def __init__(self, device: torch.device, coarse_of: torch.Tensor | None = None):
        f64, i64 = dict(dtype=torch.float64, device=device), dict(dtype=torch.int64, device=device)
        self.loss = torch.zeros((), **f64)
        self.brier = torch.zeros((), **f64)
        self.correct1 = torch.zeros((), **i64)
        self.correct5 = torch.zeros((), **i64)
        self.super_correct = torch.zeros((), **i64)
        self.n = torch.zeros((), **i64)
        self.bin_count = torch.zeros(N_BINS, **i64)
        self.bin_correct = torch.zeros(N_BINS, **i64)
        self.bin_conf = torch.zeros(N_BINS, **f64)
        self.coarse_of = None if coarse_of is None else coarse_of.to(device)

    @torch.no_grad()
    def update(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        logits = logits.float()
        self.loss += F.cross_entropy(logits, y, reduction="sum").double()
        prob = logits.softmax(dim=1)
        conf, pred = prob.max(dim=1)
        hit = pred == y
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        self.correct1 += hit.sum()
        self.correct5 += (top == y[:, None]).any(dim=1).sum()
        onehot = F.one_hot(y, logits.shape[1]).to(prob.dtype)
        self.brier += ((prob - onehot) ** 2).sum().double()
        # bin b holds confidences in [b/15, (b+1)/15); 1.0 goes into the top bin
        b = (conf * N_BINS).long().clamp_(0, N_BINS - 1)
        self.bin_count += torch.bincount(b, minlength=N_BINS)
        self.bin_correct += torch.bincount(b, weights=hit.double(), minlength=N_BINS).long()
        self.bin_conf += torch.bincount(b, weights=conf.double(), minlength=N_BINS)
        if self.coarse_of is not None:
            self.super_correct += (self.coarse_of[pred] == self.coarse_of[y]).sum()
        self.n += len(y)

    def result(self, split: str) -> dict:
        """Scores in percent (top-1/top-5/superclass top-1) and as fractions (ECE), summed
        over ranks, plus ``<split>_reliability``: ``{"conf", "acc", "count"}`` per bin
        (conf/acc None for an empty bin)."""
        from mpbench.training.distributed import all_reduce_sum

        # one float64 vector (exact for counts below 2**53), summed over ranks in one collective
        flat = torch.cat([t.double().reshape(-1) for t in (
            self.loss, self.brier, self.correct1, self.correct5, self.super_correct, self.n,
            self.bin_count, self.bin_correct, self.bin_conf)])
        flat = torch.stack(all_reduce_sum(*flat.unbind())).cpu()
        loss, brier, c1, c5, sc, n = flat[:6]
        count, correct, conf = flat[6:].view(3, N_BINS)
        n = int(n)
        ece = float((correct - conf).abs().sum() / n)
        out = {f"{split}_loss": float(loss) / n, f"{split}_top1": 100.0 * int(c1) / n,
               f"{split}_top5": 100.0 * int(c5) / n, f"{split}_nll": float(loss) / n,
               f"{split}_ece": ece, f"{split}_brier": float(brier) / n}
        if self.coarse_of is not None:
            out[f"{split}_superclass_top1"] = 100.0 * int(sc) / n
        counts = [int(c) for c in count]
        out[f"{split}_reliability"] = {
            "conf": [float(s) / c if c else None for s, c in zip(conf, counts)],
            "acc": [float(k) / c if c else None for k, c in zip(correct, counts)],
            "count": counts}
        return out
