"""Device-resident batches with whole-batch augmentation (the airbench way).

The data set lives on the training device as one uint8 tensor; each step gathers a batch by
index, crops it with one gather and flips it with one ``where``. There is no per-image Python,
no PIL and no worker process, so the input pipeline costs almost nothing next to the model.
Shuffles and augmentation draws come from a generator seeded by (seed, epoch): an epoch is
the same whether it runs straight through or after a resume.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mpbench.data.datasets import normalize


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad each image by ``padding`` and take a random same-size window per image."""
    if padding == 0:
        return x
    b, c, h, w = x.shape
    pw = w + 2 * padding
    padded = F.pad(x, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(x.device)
    # one flat gather: offsets of an h x w window in the padded plane, shifted per image
    window = (torch.arange(h, device=x.device)[:, None] * pw
              + torch.arange(w, device=x.device)[None, :]).flatten()
    index = ((dy * pw + dx)[:, None] + window)[:, None, :].expand(b, c, h * w)
    return padded.flatten(2).gather(2, index).view(b, c, h, w)


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror a random half of the batch left-right."""
    mask = (torch.rand(x.shape[0], generator=generator) < 0.5).to(x.device)
    return torch.where(mask[:, None, None, None], x.flip(3), x)


class BatchLoader:
    """Iterate (images, labels) batches of a device-resident uint8 data set.

    ``train=True``: shuffled, augmented, last partial batch dropped. ``train=False``: in order,
    every image once. ``shard=(rank, world)``: training batches are per-rank shares of a global
    batch of ``batch_size * world`` images; every rank builds that same global batch (same
    permutation, same augmentation draws) and keeps the rows ``rank::world``, so the union of
    the ranks' step-i batches is exactly step i of a single process with the global batch.
    Evaluation splits the images into ``world`` contiguous chunks.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *,
                 train: bool, mean, std, seed: int = 0, padding: int = 4, flip: bool = True,
                 device: str | torch.device = "cpu", channels_last: bool = False,
                 shard: tuple[int, int] = (0, 1)):
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.padding, self.flip = padding, flip
        self.mean, self.std = mean, std
        self.channels_last = channels_last
        self.rank, self.world = shard
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Iterate epoch ``epoch`` from batch ``start_batch`` on (a mid-epoch resume): the
        skipped batches' augmentation draws are replayed, so the rest is exactly the tail of
        the whole epoch."""
        self.epoch, self.start_batch = epoch, start_batch

    def _indices(self) -> tuple[torch.Tensor, torch.Generator]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        n = len(self.labels)
        order = torch.randperm(n, generator=g) if self.train else torch.arange(n)
        if self.world > 1 and not self.train:  # training shards per batch, in __iter__
            per_rank = -(-n // self.world)
            order = order[self.rank * per_rank:(self.rank + 1) * per_rank]
        return order, g

    def __len__(self) -> int:
        n = len(self.labels) // self.world if self.train else -(-len(self.labels) // self.world)
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def __iter__(self):
        order, g = self._indices()
        step = self.batch_size * (self.world if self.train else 1)  # train: the global batch
        start, self.start_batch = self.start_batch, 0  # the next pass over an epoch is whole
        for i in range(len(self)):
            if i < start:
                if self.train:  # the draws random_crop and random_flip make, nothing else
                    b = len(order[i * step:(i + 1) * step])
                    if self.padding:
                        torch.randint(0, 2 * self.padding + 1, (b,), generator=g)
                        torch.randint(0, 2 * self.padding + 1, (b,), generator=g)
                    if self.flip:
                        torch.rand(b, generator=g)
                continue
            idx = order[i * step:(i + 1) * step].to(self.device)
            x, y = self.images[idx], self.labels[idx]
            if self.train:
                x = random_crop(x, self.padding, g)
                if self.flip:
                    x = random_flip(x, g)
                if self.world > 1:  # this rank's share of the global batch
                    x, y = x[self.rank::self.world], y[self.rank::self.world]
            x = normalize(x, self.mean, self.std)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y
