"""Path-wise convolution: one grouped conv vs a loop of per-path convs, per training step.

Times a full SGD step (forward, backward, update) of an ``mp_resnet`` at ResNet-20 scale for
each ``path_conv`` implementation; ``mpbench.models.mp_resnet.resolve_path_conv``'s ``auto``
rule comes from these figures. Both implementations share the same weights, so the model is
built once per P and only switched.

    python benchmarks/path_conv.py [--device cuda] [--paths 2 4] [--batch 128] [--threads N]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from mpbench.registry import create_model

IMPLS = ("grouped", "loop")
PRESETS = {2: "mp_resnet20_p2_fdcc", 4: "mp_resnet20_p4_fdcc", 8: "mp_resnet20_p4_fdcc"}


def sgd_step(model, opt, x, y) -> float:
    if x.is_cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    opt.step()
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def compare(model, x, y, steps: int, warmup: int) -> dict[str, float]:
    """(median, min) step time per implementation, steps interleaved so that load from other
    processes (a shared CPU) hits both alike; the min is the least disturbed estimate."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    times = {impl: [] for impl in IMPLS}
    for i in range(warmup + steps):
        for impl in IMPLS:
            model.set_path_conv(impl)
            t = sgd_step(model, opt, x, y)
            if i >= warmup:
                times[impl].append(t)
    return {impl: (statistics.median(ts), min(ts)) for impl, ts in times.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--paths", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--width", type=int, default=None, help="per-path width (default: preset's)")
    ap.add_argument("--route", default="fdcc")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--reference", default="cifar_resnet20", help="single-path model to time too ('' for none)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    print(f"device={dev} threads={torch.get_num_threads()} batch={args.batch} 32x32 "
          f"steps={args.steps} route={args.route}; s/step as median (min)")
    print(f"{'P':>2} {'width':>5} {'grouped':>17} {'loop':>17} {'loop/grouped':>12}")
    for p in args.paths:
        kw = dict(paths=p, route=args.route)
        if args.width:
            kw["width"] = args.width
        model = create_model(PRESETS.get(p, "mp_resnet20_p4_fdcc"), num_classes=100, **kw)
        model = model.to(dev, memory_format=fmt).train()
        g = torch.Generator().manual_seed(0)
        x = torch.randn(args.batch, 3, 32, 32, generator=g).to(dev, memory_format=fmt)
        y = torch.randint(0, 100, (args.batch,), generator=g).to(dev)
        med = compare(model, x, y, args.steps, args.warmup)
        width = model.stem[0].out_channels
        cell = {k: f"{m:.3f} ({lo:.3f})" for k, (m, lo) in med.items()}
        ratio = med["loop"][0] / med["grouped"][0]
        print(f"{p:>2} {width:>5} {cell['grouped']:>17} {cell['loop']:>17} {ratio:>12.2f}")
    if args.reference:
        ref = create_model(args.reference, num_classes=100).to(dev, memory_format=fmt).train()
        opt = torch.optim.SGD(ref.parameters(), lr=1e-3, momentum=0.9)
        ts = [sgd_step(ref, opt, x, y) for _ in range(args.warmup + args.steps)][args.warmup:]
        print(f"reference {args.reference}: {statistics.median(ts):.3f} ({min(ts):.3f}) s/step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
