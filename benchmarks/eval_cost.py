"""What the evaluation beyond top-1 (#24) adds to a run: the calibration sums, the corruption passes.

    python benchmarks/eval_cost.py                          # ResNet-20, 1,000 JPEG-copy test images
    python benchmarks/eval_cost.py --stride 1 --device cuda # the whole test set on a GPU

Reports, on one model (untrained: the cost does not depend on the weights) and every
``--stride``-th test image of the CIFAR-10 JPEG copy (synthetic data where it is absent):
a clean pass with the old scoring (loss, top-1, top-5) and with :class:`EvalScores`; the
scoring alone on stored logits (the calibration sums' own cost, which pass-to-pass noise
hides); generating mpbench-c; the whole corruption evaluation
(:func:`mpbench.training.robustness.evaluate_corruptions`, 15 passes) in clean passes.
Times are the best of ``--repeat`` (wall clock: on a shared machine, waiting included).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path


def best(f, k: int) -> float:
    ts = []
    for _ in range(k):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return min(ts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-root", default="../shared/data/cifar10-jpg")
    p.add_argument("--stride", type=int, default=10, help="every N-th test image (default 10)")
    p.add_argument("--model", default="cifar_resnet20")
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()

    import torch
    import torch.nn.functional as F

    from mpbench.config import DatasetConfig, Recipe
    from mpbench.data import load_dataset
    from mpbench.data.corruptions import corrupted_test_sets
    from mpbench.registry import create_model
    from mpbench.training.device import autocast_for
    from mpbench.training.metrics import EvalScores
    from mpbench.training.robustness import evaluate_corruptions
    from mpbench.training.trainer import evaluate, make_loaders

    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if Path(a.data_root).exists():
        ds = DatasetConfig(name="imagefolder", root=a.data_root, train_subset=500)
    else:
        ds = DatasetConfig(name="synthetic", num_train=500, num_test=10000)
    data = load_dataset(ds)
    data.test_x = data.test_x[::a.stride].contiguous()
    data.test_y = data.test_y[::a.stride].contiguous()
    recipe = Recipe(epochs=1, eval_batch_size=500, amp="off")
    dev = torch.device(a.device)
    model = create_model(a.model, num_classes=len(data.classes)).to(dev).eval()
    _, test = make_loaders(data, recipe, dev, 0, False)
    autocast = autocast_for(dev, recipe)

    @torch.no_grad()
    def old_pass():  # the evaluation before #24: loss, top-1, top-5
        for x, y in test:
            out = model(x).float()
            F.cross_entropy(out, y, reduction="sum")
            (out.topk(5, 1).indices == y[:, None]).any(1).sum().item()

    t_old = best(old_pass, a.repeat)
    t_new = best(lambda: evaluate(model, test, autocast), a.repeat)
    with torch.no_grad():
        logits = [(model(x).float(), y) for x, y in test]

    def score_old():
        for out, y in logits:
            F.cross_entropy(out, y, reduction="sum")
            (out.topk(5, 1).indices == y[:, None]).any(1).sum().item()

    def score_new():
        s = EvalScores(dev)
        for out, y in logits:
            s.update(out, y)
        s.result("test")

    s_old, s_new = best(score_old, 5 * a.repeat), best(score_new, 5 * a.repeat)
    t = time.perf_counter()
    for _ in corrupted_test_sets(data, None)[1]:
        pass
    t_gen = time.perf_counter() - t
    t = time.perf_counter()
    r = evaluate_corruptions(model, data, recipe, ds, dev)
    t_corr = time.perf_counter() - t
    n = len(data.test_y)
    print(f"{a.model} on {dev}, {ds.name}, {n} test images, torch threads "
          f"{torch.get_num_threads()}")
    print(f"clean pass: old scoring {t_old:.2f} s, with calibration {t_new:.2f} s")
    print(f"scoring stored logits: old {1e3 * s_old:.1f} ms, with NLL/ECE/Brier/bins "
          f"{1e3 * s_new:.1f} ms (+{1e3 * (s_new - s_old):.1f} ms per {n} images)")
    print(f"corruptions ({r['corrupt_set']}, 15 passes): {t_corr:.1f} s = "
          f"{t_corr / t_new:.1f} clean passes, of which generating the set {t_gen:.1f} s")


if __name__ == "__main__":
    main()
