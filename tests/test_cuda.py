"""mpbench's CUDA paths: bf16 autocast, channels_last, the device-resident loader, grouped
path convolutions, torch.compile, checkpoint resume and NCCL DDP.

Every test carries the ``cuda`` marker and is skipped, with its reason, where CUDA is absent
(they run in the default test run and skip on a CPU-only machine). ``benchmarks/gpu_check.py``
runs them with ``python -m pytest -m cuda tests/test_cuda.py``.

Exact comparisons (loader, resume) use fp32 with TF32 off; the cuDNN/cuBLAS reductions of
the model comparisons (channels_last, grouped vs loop, compiled vs eager) differ in summation
order only, hence the stated float32 tolerances.
"""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

# deterministic cuBLAS (the resume test) needs this before the first cuBLAS handle exists
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import pytest
import torch
import torch.nn as nn

from mpbench.config import Recipe
from mpbench.data import synthetic
from mpbench.data.loader import BatchLoader
from mpbench.registry import create_model

NO_CUDA = not torch.cuda.is_available()
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(NO_CUDA, reason="CUDA is not available on this machine "
                                       "(torch.cuda.is_available() is False)"),
]

FP32_RTOL, FP32_ATOL = 1e-4, 1e-4  # same maths, another cuDNN algorithm / summation order


@pytest.fixture
def fp32_exact():
    """TF32 off for matmuls and convolutions (restored afterwards)."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _data(n: int = 128, classes: int = 10):
    return synthetic(num_classes=classes, num_train=n, num_test=64, image_size=32)


def _batch(data, n: int = 32, device="cuda"):
    from mpbench.data import normalize
    x = normalize(data.train_x[:n].to(device), data.mean, data.std)
    return x, data.train_y[:n].to(device)


def test_bf16_autocast_training_step():
    from mpbench.bench.throughput import TrainStep
    from mpbench.training.device import autocast_for

    device = torch.device("cuda")
    torch.manual_seed(0)
    model = create_model("cifar_resnet_tiny", num_classes=10).to(device)
    seen = []
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    conv.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    recipe = Recipe()  # amp: auto -> bf16 on CUDA, as the trainer
    step = TrainStep(model, device, lambda: autocast_for(device, recipe))
    x, y = _batch(_data())
    before = [p.detach().clone() for p in model.parameters()]
    loss = step(x, y)
    assert seen == [torch.bfloat16], "the convolution did not run in bf16 under autocast"
    assert torch.isfinite(loss).item(), f"loss {loss.item()}"
    assert all(p.dtype == torch.float32 for p in model.parameters()), "weights must stay fp32"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters())), "no update"


def test_channels_last_matches_nchw(fp32_exact):
    from mpbench.training.device import use_channels_last

    device = torch.device("cuda")
    data = _data()
    torch.manual_seed(0)
    nchw = create_model("cifar_resnet20", num_classes=10).to(device).eval()
    nhwc = create_model("cifar_resnet20", num_classes=10).to(device)
    nhwc.load_state_dict(nchw.state_dict())
    assert use_channels_last("auto", nhwc, device) is True  # auto: on for CUDA
    nhwc.to(memory_format=torch.channels_last).eval()
    conv_w = [m.weight for m in nhwc.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)]
    assert conv_w and all(w.is_contiguous(memory_format=torch.channels_last) for w in conv_w)
    loader = BatchLoader(data.train_x, data.train_y, 32, train=True, mean=data.mean,
                         std=data.std, device=device, channels_last=True)
    x, _ = next(iter(loader))
    assert x.is_cuda and x.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(nhwc(x), nchw(x.contiguous()), rtol=FP32_RTOL, atol=FP32_ATOL)


def test_device_loader_on_cuda_matches_cpu():
    data = _data(n=200)
    kw = dict(train=True, mean=data.mean, std=data.std, seed=7, padding=4, flip=True)
    cpu = BatchLoader(data.train_x, data.train_y, 64, device="cpu", **kw)
    gpu = BatchLoader(data.train_x, data.train_y, 64, device="cuda", **kw)
    assert gpu.images.is_cuda and len(cpu) == len(gpu) == 3
    firsts = []
    for epoch in (0, 3):
        cpu.set_epoch(epoch)
        gpu.set_epoch(epoch)
        for i, ((xc, yc), (xg, yg)) in enumerate(zip(cpu, gpu)):
            assert xg.is_cuda and yg.is_cuda
            assert torch.equal(yc, yg.cpu()), (epoch, i)  # same permutation
            # same crops and flips: the uint8 pixels agree, so normalisation agrees to fp32 rounding
            torch.testing.assert_close(xg.cpu(), xc, rtol=1e-6, atol=1e-6, msg=f"epoch {epoch} batch {i}")
            if i == 0:
                firsts.append(xc)
    assert not torch.equal(firsts[0], firsts[1]), "epochs 0 and 3 drew the same augmentation"
    test = BatchLoader(data.test_x, data.test_y, 50, train=False, mean=data.mean, std=data.std,
                       device="cuda")
    assert torch.equal(torch.cat([y for _, y in test]).cpu(), data.test_y)  # in order, once


def test_grouped_path_conv_equals_loop_on_cuda(fp32_exact):
    from mpbench.models.mp_resnet import resolve_path_conv

    device = torch.device("cuda")
    assert resolve_path_conv("auto", device) == "grouped"
    torch.manual_seed(0)
    model = create_model("mp_resnet_tiny", paths=4, route="fdcc", num_classes=10).to(device)
    x, y = _batch(_data())
    outs, grads = {}, {}
    for impl in ("grouped", "loop"):
        model.set_path_conv(impl)
        model.train()  # batch-norm statistics of the batch: both see the same batch
        model.zero_grad(set_to_none=True)
        out = model(x)
        nn.functional.cross_entropy(out, y).backward()
        outs[impl] = out.detach()
        grads[impl] = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    torch.testing.assert_close(outs["loop"], outs["grouped"], rtol=FP32_RTOL, atol=FP32_ATOL)
    assert grads["loop"].keys() == grads["grouped"].keys() and grads["loop"]
    for name, g in grads["grouped"].items():
        torch.testing.assert_close(grads["loop"][name], g, rtol=1e-3, atol=1e-4, msg=name)


def test_compiled_training_step_matches_eager(fp32_exact):
    from contextlib import nullcontext

    from mpbench.bench.throughput import TrainStep

    device = torch.device("cuda")
    torch.manual_seed(0)
    eager = create_model("cifar_resnet_tiny", num_classes=10).to(device)
    compiled = create_model("cifar_resnet_tiny", num_classes=10).to(device)
    compiled.load_state_dict(eager.state_dict())
    x, y = _batch(_data())
    steps = {"eager": TrainStep(eager, device, nullcontext),
             "compiled": TrainStep(compiled, device, nullcontext, compile=True)}
    losses = {k: [float(s(x, y)) for _ in range(3)] for k, s in steps.items()}
    assert losses["compiled"] == pytest.approx(losses["eager"], rel=1e-3), losses
    assert losses["eager"][-1] < losses["eager"][0], losses  # the steps trained
    for (n, a), b in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4, msg=n)


def test_nvjpeg_decode_matches_cpu_decode(tmp_path):
    """``dataset.decode: device`` on CUDA (nvJPEG): the batches are those of decode: device
    on the CPU (the same crops and flips: parameters drawn on the CPU from the same seeds) up
    to the decoders' and resamplers' rounding (another IDCT and chroma upsampling); a
    truncated JPEG is skipped and a CMYK one (which nvJPEG refuses) read, as on the CPU; the
    CUDA generator is not touched by the augmentation seeds."""
    from PIL import Image
    from test_device_decode import MEAN, STD, pixels
    from test_streaming import write_folder

    from mpbench.config import DatasetConfig
    from mpbench.data import StreamLoader, load_dataset

    root = write_folder(tmp_path / "sq", size=(16, 16), truncated=True)
    cmyk = root / "train" / "ant" / "0002.jpg"
    with Image.open(cmyk) as img:
        img.convert("CMYK").save(cmyk)
    data = load_dataset(DatasetConfig(name="imagefolder", root=str(root), loader="stream",
                                      crop_size=16).model_dump())
    for train, kw in ((False, dict(crop_pct=1.0)), (True, dict(scale_min=0.3, seed=2))):
        files, y = (data.train_files, data.train_y) if train else (data.test_files, data.test_y)
        out, skipped = {}, {}
        for device in ("cpu", "cuda"):
            ld = StreamLoader(files, y, 8, train=train, size=16, mean=MEAN, std=STD,
                              num_workers=0, decode="device", device=device, **kw)
            cuda_rng = torch.cuda.get_rng_state()
            out[device] = [(x.cpu(), yy.cpu()) for x, yy in ld]
            assert torch.equal(torch.cuda.get_rng_state(), cuda_rng)
            skipped[device] = list(ld.skipped_files)
        assert len(out["cpu"]) == len(out["cuda"]) > 0 and skipped["cpu"] == skipped["cuda"]
        assert skipped["cuda"] == ([str(root / "train" / "bee" / "0003.jpg")] if train else [])
        for (xc, yc), (xg, yg) in zip(out["cpu"], out["cuda"]):
            assert torch.equal(yc, yg)
            diff = (pixels(xc) - pixels(xg)).abs()
            # a wrong crop or flip of these noisy images is ~20 levels off on average
            assert diff.mean() < 2.0, (train, diff.mean(), diff.max())


def test_checkpoint_resume_on_cuda_reproduces_uninterrupted(tmp_path):
    from mpbench.training.trainer import load_checkpoint, seed_everything, train

    data = synthetic(num_classes=4, num_train=128, num_test=64, image_size=16)
    recipe = Recipe(epochs=3, batch_size=32, eval_batch_size=64, lr=0.05, schedule="cosine",
                    amp="off", deterministic=True)
    saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             torch.are_deterministic_algorithms_enabled())

    def fresh():
        torch.manual_seed(0)
        return create_model("cifar_resnet_tiny", width=4, num_classes=4)

    class Stop(Exception):
        pass

    def stop_after_two(m):
        if m["epoch"] == 2:
            raise Stop

    try:
        seed_everything(0, deterministic=True)
        torch.backends.cudnn.deterministic = True
        straight_model = fresh()
        straight = train(straight_model, data, recipe, seed=0, device="cuda", progress=False)
        model = fresh()
        with pytest.raises(Stop):
            train(model, data, recipe, seed=0, device="cuda", checkpoint=tmp_path / "ck.pt",
                  on_epoch=stop_after_two, progress=False)
        state = load_checkpoint(tmp_path / "ck.pt")
        assert state is not None and state["epoch"] == 2
        seed_everything(123, deterministic=True)  # a resumed process starts from other RNG state
        resumed_model = fresh()
        resumed = train(resumed_model, data, recipe, seed=0, device="cuda", resume=state,
                        progress=False)
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[:2]
        torch.use_deterministic_algorithms(saved[2])
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    a, b = straight.history[-1], resumed.history[-1]
    for key in ("train_loss", "test_loss"):
        assert b[key] == pytest.approx(a[key], rel=1e-5), key
    assert (b["train_acc"], b["test_top1"]) == (a["train_acc"], a["test_top1"])
    for (n, p), q in zip(straight_model.state_dict().items(), resumed_model.state_dict().values()):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=n)


# ------------------------------------------------------------------ two-process NCCL DDP

class _NoBNNet(nn.Module):
    """No batch norm: a DDP step is then the single-process step up to summation order."""

    def __init__(self, classes: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


def _ddp_recipe():
    return Recipe(epochs=2, batch_size=32, eval_batch_size=64, lr=0.05, schedule="cosine", amp="off")


def _ddp_data():
    return synthetic(num_classes=4, num_train=128, num_test=64, image_size=16)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nccl_worker(rank: int, world: int, port: int, tmp: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    from mpbench.training import distributed
    from mpbench.training.trainer import train

    device = distributed.setup("cuda")
    assert device == torch.device("cuda", rank)
    import torch.distributed as dist
    assert dist.get_backend() == "nccl"
    torch.manual_seed(100 + rank)  # different init per rank: DDP must broadcast rank 0's
    res = train(_NoBNNet(), _ddp_data(), _ddp_recipe(), seed=0, device="cuda", progress=False)
    if rank == 0:
        Path(tmp, "ddp.json").write_text(json.dumps(res.history))
    distributed.teardown()


@pytest.mark.skipif(NO_CUDA or torch.cuda.device_count() < 2,
                    reason=f"two-process NCCL DDP needs 2 GPUs, this machine has "
                           f"{torch.cuda.device_count() if not NO_CUDA else 0}")
def test_ddp_two_nccl_processes_match_one_process(tmp_path, fp32_exact):
    import torch.multiprocessing as mp

    from mpbench.training.trainer import train

    torch.manual_seed(100)  # rank 0's draw: DDP starts every rank from rank 0's weights
    single = train(_NoBNNet(), _ddp_data(), _ddp_recipe(), seed=0, device="cuda", progress=False)
    mp.spawn(_nccl_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ddp = json.loads((tmp_path / "ddp.json").read_text())
    assert [h["epoch"] for h in ddp] == [h["epoch"] for h in single.history] == [1, 2]
    for u, v in zip(ddp, single.history):
        for key in ("train_loss", "test_loss"):
            assert u[key] == pytest.approx(v[key], rel=1e-4), (u["epoch"], key)
        for key in ("train_acc", "test_top1"):  # counts: at most one image apart
            assert abs(u[key] - v[key]) <= 100 / 64 + 1e-9, (u["epoch"], key)
