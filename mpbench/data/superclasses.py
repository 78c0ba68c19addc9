"""Superclass (coarse label) of every fine class, for superclass top-1 of fine predictions.

CIFAR-100 groups its 100 classes into 20 superclasses of 5 (Krizhevsky 2009; the table on
the CIFAR page). ``CIFAR100_COARSE_OF_FINE[f]`` is the coarse label of fine label ``f``, both
numbered as in the data set's ``meta`` file (label names in alphabetical order). Other data
sets with coarse labels (the synthetic one) get their map from their own label pairs.
"""
from __future__ import annotations

import torch

from mpbench.data.datasets import DataError

CIFAR100_COARSE_OF_FINE = (
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
)


def superclass_map(data) -> torch.Tensor | None:
    """The coarse label of every fine class of ``data`` (int64, one per class), or None when
    the data set has no coarse labels. For CIFAR-100 the published map, checked against the
    file's own label pairs; a fine class with two coarse labels is a :class:`DataError`."""
    fine, coarse = getattr(data, "train_y", None), getattr(data, "train_coarse", None)
    if coarse is None or fine is None:
        return None
    if data.name == "cifar100":
        table = torch.tensor(CIFAR100_COARSE_OF_FINE, dtype=torch.int64)
    else:
        table = torch.full((data.num_classes,), -1, dtype=torch.int64)
        table[fine] = coarse  # any one pair per class; checked just below
    if bool((table[fine] != coarse).any()) or bool((table < 0).any()):
        raise DataError(f"{data.name}: the coarse labels do not map each fine class to one "
                        f"superclass")
    return table
