"""The paper's claim needs gates that learn to depend on the input: train a tiny routed net
with mpbench's own ``train()`` on a task with class-dependent structure and watch the spread
of α across test images (mpbench.models.gates.record_gates). It starts at exactly 0 (W2 = 0), must
grow clearly for ``fdcc``, and must stay exactly 0 for ``static``. One CPU thread, seconds."""
from __future__ import annotations

import pytest
import torch

from mpbench.config import Recipe
from mpbench.data import normalize, synthetic
from mpbench.models.gates import record_gates
from mpbench.models.mp_resnet import mp_resnet_by_depth
from mpbench.training.trainer import seed_everything, train

STEPS = 8 * 25  # 8 batches of 32 per epoch, 25 epochs


def alpha_spread(model, x: torch.Tensor) -> float:
    """Largest std across images of any gate value, over all cross-connections (eval mode)."""
    model.eval()
    with torch.no_grad(), record_gates(model) as rec:
        model(x)
    return max(a.std(0).max().item() for a in rec.alphas.values())


def trained_spread(route: str) -> tuple[float, float, dict]:
    seed_everything(0)
    # 4 classes, each a fixed random colour pattern plus noise: different images, different
    # pooled features, so a feature-dependent gate has something to depend on
    data = synthetic(num_classes=4, num_train=256, num_test=64, image_size=16)
    model = mp_resnet_by_depth(8, width=4, paths=2, route=route, num_classes=4)
    x = normalize(data.test_x, data.mean, data.std)
    before = alpha_spread(model, x)
    recipe = Recipe(epochs=STEPS // 8, batch_size=32, lr=0.05, schedule="constant",
                    weight_decay=0, eval_every=STEPS // 8, deterministic=True)
    res = train(model, data, recipe, seed=0, progress=False)
    return before, alpha_spread(model, x), res.final


@pytest.mark.parametrize("route", ["fdcc", "static"])
def test_gate_spread_across_images_grows_only_for_feature_dependent_gates(route):
    before, after, final = trained_spread(route)
    assert before == 0  # W2 = 0 at init: the same α for every image
    assert final["test_top1"] > 50  # it did learn the task (chance 25)
    if route == "fdcc":
        assert after > 0.05, after  # α differs clearly between images
    else:
        assert after == 0  # a static gate cannot depend on the image
