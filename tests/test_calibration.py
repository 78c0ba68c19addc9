"""Scores beyond top-1: NLL, ECE, Brier, superclass top-1 (hand computations), the CIFAR-100
superclass map (the published list), corrupted test sets, `mpbench evaluate`."""
import json
import math

import numpy as np
import pytest
import torch

from mpbench.data import synthetic
from mpbench.data.datasets import DataError, Dataset
from mpbench.data.superclasses import CIFAR100_COARSE_OF_FINE, superclass_map
from mpbench.training.metrics import EvalScores

# five images, three classes: softmax(log p) = p; images 1 and 5 share ECE bin 10 of 15
PROBS = torch.tensor([[0.70, 0.20, 0.10],   # y 0: right, conf 0.70 (bin 10)
                      [0.60, 0.30, 0.10],   # y 1: wrong, conf 0.60 (bin 9)
                      [0.20, 0.75, 0.05],   # y 1: right, conf 0.75 (bin 11)
                      [0.40, 0.35, 0.25],   # y 2: wrong, conf 0.40 (bin 6)
                      [0.72, 0.18, 0.10]],  # y 1: wrong, conf 0.72 (bin 10)
                     dtype=torch.float64)
LABELS = torch.tensor([0, 1, 1, 2, 1])


def _scores(coarse_of=None):
    s = EvalScores(torch.device("cpu"), coarse_of)
    s.update(PROBS[:2].log().float(), LABELS[:2])  # two batches: the sums must add up
    s.update(PROBS[2:].log().float(), LABELS[2:])
    return s.result("test")


def test_nll_ece_brier_against_hand_computation():
    r = _scores()
    # NLL: -mean log p(y)
    assert r["test_nll"] == pytest.approx(-(math.log(.7) + math.log(.3) + math.log(.75)
                                            + math.log(.25) + math.log(.18)) / 5, rel=1e-5)
    # ECE: sum over bins |correct - sum conf| / N: bin 10 |1 - 1.42|, bin 9 |0 - .6|,
    # bin 11 |1 - .75|, bin 6 |0 - .4|  -> (0.42 + 0.6 + 0.25 + 0.4) / 5
    assert r["test_ece"] == pytest.approx(1.67 / 5, rel=1e-5)
    # Brier: sum_k (p_k - onehot_k)^2 per image, mean over images
    brier = [.09 + .04 + .01, .36 + .49 + .01, .04 + .0625 + .0025, .16 + .1225 + .5625,
             .5184 + .6724 + .01]
    assert r["test_brier"] == pytest.approx(sum(brier) / 5, rel=1e-5)
    assert r["test_top1"] == pytest.approx(40.0)
    rel = r["test_reliability"]
    assert rel["count"] == [0] * 6 + [1, 0, 0, 1, 2, 1, 0, 0, 0]
    assert rel["acc"][10] == pytest.approx(0.5) and rel["conf"][10] == pytest.approx(0.71)
    assert rel["acc"][0] is None and "test_superclass_top1" not in r


def test_ece_agrees_with_torchmetrics():
    from torchmetrics.functional.classification import multiclass_calibration_error

    g = torch.Generator().manual_seed(0)
    # confidences across the range, some bins over- and some under-confident (with random
    # labels every bin is over-confident and any binning gives the same ECE)
    logits = torch.randn(300, 10, generator=g) * torch.linspace(0.2, 4, 300)[:, None]
    y = torch.where(torch.rand(300, generator=g) < 0.7, logits.argmax(1),
                    torch.randint(0, 10, (300,), generator=g))
    s = EvalScores(torch.device("cpu"))
    s.update(logits, y)
    expected = multiclass_calibration_error(logits.softmax(1), y, num_classes=10, n_bins=15,
                                            norm="l1")
    assert s.result("val")["val_ece"] == pytest.approx(float(expected), abs=1e-6)


def test_superclass_top1_maps_fine_predictions():
    # classes 0, 1 -> superclass 0, class 2 -> 1; predictions 0, 0, 1, 0, 0
    r = _scores(torch.tensor([0, 0, 1]))
    # hits: img1 (0->0), img2 (pred 0, y 1: both 0), img3, img5 (pred 0, y 1); img4 misses
    assert r["test_superclass_top1"] == pytest.approx(80.0)


# The CIFAR page's table (https://www.cs.toronto.edu/~kriz/cifar.html), superclasses in the
# order of the data set's meta file, classes as its fine_label_names spell them.
CIFAR100_TABLE = [
    ("aquatic_mammals", "beaver dolphin otter seal whale"),
    ("fish", "aquarium_fish flatfish ray shark trout"),
    ("flowers", "orchid poppy rose sunflower tulip"),
    ("food_containers", "bottle bowl can cup plate"),
    ("fruit_and_vegetables", "apple mushroom orange pear sweet_pepper"),
    ("household_electrical_devices", "clock keyboard lamp telephone television"),
    ("household_furniture", "bed chair couch table wardrobe"),
    ("insects", "bee beetle butterfly caterpillar cockroach"),
    ("large_carnivores", "bear leopard lion tiger wolf"),
    ("large_man-made_outdoor_things", "bridge castle house road skyscraper"),
    ("large_natural_outdoor_scenes", "cloud forest mountain plain sea"),
    ("large_omnivores_and_herbivores", "camel cattle chimpanzee elephant kangaroo"),
    ("medium_mammals", "fox porcupine possum raccoon skunk"),
    ("non-insect_invertebrates", "crab lobster snail spider worm"),
    ("people", "baby boy girl man woman"),
    ("reptiles", "crocodile dinosaur lizard snake turtle"),
    ("small_mammals", "hamster mouse rabbit shrew squirrel"),
    ("trees", "maple_tree oak_tree palm_tree pine_tree willow_tree"),
    ("vehicles_1", "bicycle bus motorcycle pickup_truck train"),
    ("vehicles_2", "lawn_mower rocket streetcar tank tractor"),
]


def test_cifar100_superclass_map_is_the_published_list():
    fine = sorted(n for _, names in CIFAR100_TABLE for n in names.split())  # meta order
    assert len(fine) == 100 == len(set(fine)) == len(CIFAR100_COARSE_OF_FINE)
    for coarse, (_, names) in enumerate(CIFAR100_TABLE):
        for name in names.split():
            assert CIFAR100_COARSE_OF_FINE[fine.index(name)] == coarse, name


def test_superclass_map_from_the_data_and_checked_against_it():
    data = synthetic(num_classes=6, num_train=60, num_test=12)
    assert superclass_map(data).tolist() == [0, 0, 1, 1, 2, 2]  # synthetic: class // 2
    y = torch.arange(100).repeat(2)
    x = torch.zeros(200, 3, 4, 4, dtype=torch.uint8)
    table = torch.tensor(CIFAR100_COARSE_OF_FINE)
    good = Dataset("cifar100", x, y, x, y, [str(i) for i in range(100)], table[y], table[y],
                   [str(i) for i in range(20)])
    assert superclass_map(good).tolist() == list(CIFAR100_COARSE_OF_FINE)
    bad = Dataset("cifar100", x, y, x, y, [str(i) for i in range(100)], (table[y] + 1) % 20,
                  table[y], [str(i) for i in range(20)])
    with pytest.raises(DataError, match="coarse labels"):
        superclass_map(bad)
    assert superclass_map(Dataset("cifar10", x, y, x, y, [str(i) for i in range(100)])) is None
