"""Throughput of training and inference, against the device's measured matmul peak.

``mpbench bench`` (and the reference-pipeline comparison in ``benchmarks/``) call these
functions. For each model it measures, in one process:

* **model-only training** img/s: SGD steps (forward, loss, backward, update, exactly as
  :func:`mpbench.training.trainer.train` does them, autocast and channels_last included) on one fixed,
  pre-made batch: what the model alone costs;
* **end-to-end training** img/s: the same steps fed by :class:`mpbench.data.loader.BatchLoader`
  (gather, random crop, flip, normalise), as the trainer feeds them;
* **inference** img/s: eval-mode forward passes under ``torch.no_grad``;
* achieved GFLOP/s = img/s x GMACs x 2 (x 3 for a training step: forward + two backward
  products), and **MFU**, its fraction of the device's dense matmul peak, measured here
  with a large ``torch.mm`` (median of repeats);
* the input pipeline's **overhead** = 1 - end-to-end / model-only, and the loader's own time
  per batch (the same ``BatchLoader`` iterated with no model): ``loader_share`` = loader time /
  (loader + model-only step) is what it would cost if nothing overlapped, and is far less
  noisy than the difference of two throughputs on a loaded machine.

Every figure is a median over ``repeats``. The repeats are interleaved: repeat r runs every
model's model-only, end-to-end and inference blocks before repeat r+1 starts (alternating
the order of the first two), so load from other processes on a shared machine hits every
figure alike and the ratios stay meaningful even when the absolute numbers wander.
GMACs follow mpbench's convention (fvcore, batch 1, eval mode; :mod:`mpbench.complexity`).
"""
from __future__ import annotations

import math
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator, Sequence

import torch
import torch.nn as nn

from mpbench.errors import UserError

__all__ = ["ModelSpec", "BenchResult", "matmul_peak", "bench_models", "bench_model",
           "machine_info", "parse_model_spec", "TrainStep", "MatmulPeak",
           "profile_train_step", "run_speed", "device_name"]


@dataclass(frozen=True)
class ModelSpec:
    """A registered model with argument overrides; ``label`` names it in tables."""

    name: str
    args: dict = field(default_factory=dict)
    label: str | None = None

    @property
    def display(self) -> str:
        if self.label:
            return self.label
        if not self.args:
            return self.name
        return self.name + ":" + ":".join(f"{k}={v}" for k, v in self.args.items())


def parse_model_spec(text: str, common: dict | None = None) -> ModelSpec:
    """``NAME`` or ``NAME:key=value[:key=value...]`` (YAML values) -> :class:`ModelSpec`.

    ``common`` arguments apply first; the spec's own override them.
    """
    from mpbench.config import parse_override

    name, *pairs = text.split(":")
    if not name:
        raise UserError(f"model spec '{text}': missing the model name")
    args = dict(common or {})
    own = {}
    for pair in pairs:
        key, own[key] = parse_override(pair, f"model spec '{text}'", "NAME:key=value")
    args.update(own)
    return ModelSpec(name, args, text if own else None)


@dataclass
class BenchResult:
    """One model's figures. Throughputs are images per second, medians over repeats."""

    model: str
    label: str
    args: dict
    gmacs: float
    params: int
    budget_gmacs: float | None
    batch_size: int
    device: str
    dtype: str  # compute dtype of the training step: float32, or bfloat16 under autocast
    channels_last: bool
    train_img_s: float  # model-only training steps (fixed batch)
    e2e_img_s: float  # training steps fed by BatchLoader (augmentation included)
    infer_img_s: float  # eval forward, no_grad
    train_gflops: float  # achieved: train_img_s x GMACs x 2 x 3
    e2e_gflops: float
    infer_gflops: float  # infer_img_s x GMACs x 2
    peak_gflops: float  # measured dense matmul peak of the device, in the training dtype
    train_mfu: float  # train_gflops / peak_gflops
    infer_mfu: float
    pipeline_overhead: float  # 1 - e2e_img_s / train_img_s
    loader_ms: float  # BatchLoader alone: milliseconds per batch (gather, crop, flip, normalise)
    loader_share: float  # loader time / (loader + model-only step): the overhead if nothing overlaps
    steps: int
    repeats: int
    warmup: int
    threads: int
    interleave: str
    train_img_s_all: list[float] = field(default_factory=list)  # per repeat, for the record
    e2e_img_s_all: list[float] = field(default_factory=list)
    infer_img_s_all: list[float] = field(default_factory=list)
    peak_gflops_all: list[float] = field(default_factory=list)  # one sample per repeat (+1)
    compiled: bool = False  # training forward under torch.compile (recipe.compile)

    def as_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- timing helpers

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


class MatmulPeak:
    """Dense-matmul throughput of the device: square ``n x n`` ``torch.mm`` in ``dtype``,
    2·n³ FLOPs each. ``n`` defaults to 2048 on CPU (17 GFLOP per product: large enough for
    the BLAS to reach its plateau) and 8192 on CUDA. :meth:`sample` times ``inner`` products
    and returns GFLOP/s; :func:`bench_models` takes one sample per repeat, between the models'
    blocks, so the peak sees the same machine load as the models do."""

    def __init__(self, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 n: int | None = None):
        self.device = torch.device(device)
        self.n = n or (8192 if self.device.type == "cuda" else 2048)
        g = torch.Generator(device="cpu").manual_seed(0)
        self.a = torch.randn(self.n, self.n, generator=g).to(device=self.device, dtype=dtype)
        self.b = torch.randn(self.n, self.n, generator=g).to(device=self.device, dtype=dtype)
        self.out = torch.empty(self.n, self.n, device=self.device, dtype=dtype)
        torch.mm(self.a, self.b, out=self.out)  # warm-up: thread pool, BLAS workspace
        _sync(self.device)
        self.samples: list[float] = []

    def sample(self, inner: int = 2) -> float:
        _sync(self.device)
        t0 = time.perf_counter()
        for _ in range(inner):
            torch.mm(self.a, self.b, out=self.out)
        _sync(self.device)
        rate = inner * 2 * self.n ** 3 / (time.perf_counter() - t0) / 1e9
        self.samples.append(rate)
        return rate


def matmul_peak(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                n: int | None = None, repeats: int = 5, inner: int = 2) -> float:
    """Measured dense-matmul peak in GFLOP/s: median over ``repeats`` samples of
    :class:`MatmulPeak` (after one warm-up product)."""
    mm = MatmulPeak(device, dtype, n)
    return _median([mm.sample(inner) for _ in range(repeats)])


class TrainStep:
    """One optimizer step as :func:`mpbench.training.trainer.train` runs it (autocast, the model's own
    loss, zero_grad/backward/step); the learning rate stays fixed."""

    def __init__(self, model: nn.Module, device: torch.device, autocast_factory: Callable,
                 lr: float = 0.01, compile: bool = False):
        from mpbench.config import Recipe

        recipe = Recipe()
        self.model, self.device = model, device
        self.forward = torch.compile(model) if compile else model  # as recipe.compile does
        self.autocast_factory = autocast_factory
        self.smoothing = recipe.label_smoothing
        self.opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=recipe.momentum,
                                   nesterov=recipe.nesterov, weight_decay=recipe.weight_decay)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        from mpbench.training.trainer import loss_fn

        with self.autocast_factory():
            out = self.forward(x)
            loss = loss_fn(self.model, out, y, self.smoothing)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss


def cycle_batches(loader) -> Iterator:
    """Endless batches from a :class:`BatchLoader`, moving to the next epoch as the trainer
    does (new permutation and augmentation draws)."""
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def time_steps(fn: Callable[[], object], steps: int, device: torch.device,
               warmup: int = 0) -> float:
    """Seconds for ``steps`` calls of ``fn`` after ``warmup`` untimed ones (synchronised)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- the benchmark

@dataclass
class _Prepared:
    spec: ModelSpec
    args: dict
    gmacs: float
    params: int
    budget: float | None
    model: nn.Module
    step: TrainStep
    batches: Iterator
    x: torch.Tensor
    y: torch.Tensor
    channels_last: bool
    times: dict = field(default_factory=lambda: {"train": [], "e2e": [], "infer": [], "loader": []})


def _resolve(spec: ModelSpec, budget: float | None, num_classes: int,
             input_size: tuple[int, int, int]) -> tuple[dict, float, int]:
    """Full builder arguments, GMACs and params of ``spec`` (matched to ``budget`` if given)."""
    from mpbench.complexity import count_model, model_args
    from mpbench.complexity.matching import match_budget
    from mpbench.registry import get_entry

    entry = get_entry(spec.name)  # UnknownModelError (a UserError) for a bad name
    geometry = dict(input_size=input_size, num_classes=num_classes)
    if budget is not None:
        m = match_budget(spec.name, budget, spec.args, **geometry)
        return dict(m.args), float(m.gmacs), int(m.params)
    full = model_args(entry, spec.args, **geometry)
    c = count_model(spec.name, spec.args, **geometry)
    return full, c.gmacs, c.params


def _prepare(spec: ModelSpec, *, budget, batch_size, device, data, num_classes, seed,
             amp, channels_last, compile: bool = False) -> _Prepared:
    from mpbench.config import Recipe
    from mpbench.data import normalize
    from mpbench.data.loader import BatchLoader
    from mpbench.registry import get_entry
    from mpbench.training.device import autocast_for, use_channels_last

    input_size = tuple(data.train_x.shape[1:])
    full, gmacs, params = _resolve(spec, budget, num_classes, input_size)
    torch.manual_seed(seed)
    model = get_entry(spec.name).fn(**full).to(device)
    channels_last = use_channels_last(channels_last, model, device)  # as the trainer does
    if channels_last:
        model.to(memory_format=torch.channels_last)
    recipe = Recipe(amp=amp)
    step = TrainStep(model, device, lambda: autocast_for(device, recipe), compile=compile)
    loader = BatchLoader(data.train_x, data.train_y, batch_size, train=True, seed=seed,
                         mean=data.mean, std=data.std, device=device,
                         channels_last=channels_last)
    # the model-only batch: made once, already augmented-shaped, normalised and on the device
    x = normalize(data.train_x[:batch_size].to(device), data.mean, data.std)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = (data.train_y[:batch_size] % num_classes).to(device)
    return _Prepared(spec, full, gmacs, params, budget, model, step, cycle_batches(loader), x, y,
                     channels_last)


#: keys of a model spec that are benchmark options, not builder arguments
SPEC_OPTIONS = ("channels_last",)


def _split_options(spec: ModelSpec) -> tuple[ModelSpec, dict]:
    opts = {k: spec.args[k] for k in SPEC_OPTIONS if k in spec.args}
    if not opts:
        return spec, {}
    args = {k: v for k, v in spec.args.items() if k not in SPEC_OPTIONS}
    return ModelSpec(spec.name, args, spec.display), opts


def _bench_data(batch_size: int, num_classes: int, input_size: tuple[int, int, int]):
    from mpbench.data import synthetic

    # two batches' worth of distinct images: the end-to-end path gathers real random indices
    return synthetic(num_classes=num_classes, num_train=max(2 * batch_size, num_classes),
                     num_test=num_classes, image_size=input_size[-1])


def _kernels(p: _Prepared) -> dict[str, Callable[[], object]]:
    """The timed operations of one model: one call = one batch."""

    def model_only():
        p.model.train()
        p.step(p.x, p.y)

    def end_to_end():
        p.model.train()
        x, y = next(p.batches)
        p.step(x, y)

    def infer():
        p.model.eval()
        with torch.no_grad(), p.step.autocast_factory():
            p.model(p.x)
        p.model.train()

    def loader_only():
        next(p.batches)

    return {"train": model_only, "e2e": end_to_end, "loader": loader_only, "infer": infer}


def _one_repeat(p: _Prepared, steps: int, warmup: int, device: torch.device, order: int) -> None:
    """``interleave='block'``: ``steps`` calls per figure, one block after another."""
    k = _kernels(p)
    keys = ["train", "e2e"] if order % 2 == 0 else ["e2e", "train"]
    for key in keys + ["loader", "infer"]:
        p.times[key].append(time_steps(k[key], steps, device, warmup))


def _step_repeat(prepared: list[_Prepared], steps: int, warmup: int, device: torch.device,
                 order: int) -> None:
    """``interleave='step'``: one call of each figure of each model in turn, ``steps`` rounds
    (order reversed every other round); each call timed alone and summed per figure.
    Load bursts on a shared machine then hit every figure alike, at the cost of a device
    synchronisation per call (which hides no CPU/GPU overlap on a CPU)."""
    kernels = [_kernels(p) for p in prepared]
    for k in kernels:
        for key in ("train", "e2e", "loader", "infer"):
            time_steps(k[key], 0, device, warmup)
    sums = [dict.fromkeys(("train", "e2e", "loader", "infer"), 0.0) for _ in prepared]
    calls = [(i, key) for i in range(len(prepared)) for key in ("train", "e2e", "loader", "infer")]
    for r in range(steps):
        for i, key in (calls if (r + order) % 2 == 0 else calls[::-1]):
            sums[i][key] += time_steps(kernels[i][key], 1, device)
    for p, total in zip(prepared, sums):
        for key, t in total.items():
            p.times[key].append(t)


def bench_models(specs: Sequence[ModelSpec | str], *, batch_size: int = 128,
                 budget: float | None = None, steps: int = 10, repeats: int = 5,
                 warmup: int = 2, device: str | torch.device = "cpu", num_classes: int = 100,
                 input_size: Sequence[int] = (3, 32, 32), data=None, seed: int = 0,
                 amp: str = "auto", channels_last: str = "auto", peak: float | None = None,
                 peak_n: int | None = None, interleave: str = "block",
                 progress: Callable[[str], None] | None = None,
                 compile: bool = False) -> list[BenchResult]:
    """Benchmark every model, repeats interleaved across models (see the module docstring).

    ``data``: a :class:`mpbench.data.Dataset` to feed the end-to-end steps (default: a
    synthetic one of ``2 x batch_size`` images; the pipeline's cost does not depend on the
    pixel values). ``amp``/``channels_last`` as in a suite's recipe (``auto``: bf16 autocast
    and channels_last on CUDA only, as the trainer); ``compile``: the training forward under
    ``torch.compile``, as ``recipe.compile`` (warm-up steps absorb the compilation; raise
    ``warmup`` if a model recompiles). ``peak``: a matmul peak (GFLOP/s) measured earlier;
    measured here when None. Each repeat runs ``warmup`` untimed steps then ``steps`` timed
    steps per figure. ``interleave='step'`` alternates single calls across every figure of
    every model instead of timing blocks (see :func:`_step_repeat`): far steadier ratios on
    a loaded machine.
    """
    if interleave not in ("block", "step"):
        raise UserError(f"interleave must be block or step, got {interleave!r}")
    from mpbench.training.device import channels_last_setting, resolve_device

    if batch_size < 1 or steps < 1 or repeats < 1 or warmup < 0:
        raise UserError("need --batch-size, --steps, --repeats >= 1 and --warmup >= 0")
    if budget is not None and not budget > 0:
        raise UserError(f"--budget must be a positive number of GMACs, got {budget}")
    device = resolve_device(str(device))
    say = progress or (lambda _msg: None)
    specs = [s if isinstance(s, ModelSpec) else parse_model_spec(s) for s in specs]
    if not specs:
        raise UserError("no models to benchmark")
    input_size = tuple(int(v) for v in input_size)
    if data is None:
        data = _bench_data(batch_size, num_classes, input_size)
    if len(data.train_y) < batch_size:
        raise UserError(f"--batch-size {batch_size} is larger than the data ({len(data.train_y)} images)")
    use_bf16 = amp == "bf16" or (amp == "auto" and device.type == "cuda")
    dtype = torch.bfloat16 if use_bf16 else torch.float32

    from mpbench.registry import get_entry

    channels_last_setting(channels_last)
    for spec in specs:  # unknown names and bad options fail before anything is built or printed
        get_entry(spec.name)
        channels_last_setting(_split_options(spec)[1].get("channels_last", channels_last))
    prepared = []
    for spec in specs:
        say(f"building {spec.display}" + (f" at {budget:g} GMACs" if budget else ""))
        spec, opts = _split_options(spec)
        use_cl = opts.get("channels_last", channels_last)
        prepared.append(_prepare(spec, budget=budget, batch_size=batch_size, device=device,
                                 data=data, num_classes=num_classes, seed=seed, amp=amp,
                                 channels_last=use_cl, compile=compile))
    mm = None
    if peak is None:
        say(f"measuring the {str(dtype).removeprefix('torch.')} matmul peak, interleaved with the models")
        mm = MatmulPeak(device, dtype, peak_n)
        mm.sample()
    for p in prepared:  # first-call costs (allocator, thread pool, oneDNN primitives)
        _one_repeat(p, 1, max(warmup, 1), device, 0)
        p.times = {"train": [], "e2e": [], "infer": [], "loader": []}
    for r in range(repeats):
        if interleave == "step":
            say(f"repeat {r + 1}/{repeats}: every model, step by step")
            _step_repeat(prepared, steps, warmup, device, r)
        else:
            for p in prepared:
                say(f"repeat {r + 1}/{repeats}: {p.spec.display}")
                _one_repeat(p, steps, warmup, device, r)
        if mm is not None:
            mm.sample()
    if mm is not None:
        peak = _median(mm.samples)

    results = []
    for p in prepared:
        rate = {k: [batch_size * steps / t for t in ts] for k, ts in p.times.items()}
        med = {k: _median(v) for k, v in rate.items()}
        train_gf = med["train"] * p.gmacs * 2 * 3
        infer_gf = med["infer"] * p.gmacs * 2
        results.append(BenchResult(
            model=p.spec.name, label=p.spec.display, args=_plain(p.args), gmacs=p.gmacs,
            params=p.params, budget_gmacs=budget, batch_size=batch_size, device=str(device),
            dtype=str(dtype).removeprefix("torch."), channels_last=p.channels_last,
            train_img_s=med["train"], e2e_img_s=med["e2e"], infer_img_s=med["infer"],
            train_gflops=train_gf, e2e_gflops=med["e2e"] * p.gmacs * 2 * 3,
            infer_gflops=infer_gf, peak_gflops=peak, train_mfu=train_gf / peak,
            infer_mfu=infer_gf / peak, pipeline_overhead=1 - med["e2e"] / med["train"],
            compiled=compile,
            loader_ms=1e3 / med["loader"] * batch_size,
            loader_share=med["train"] / (med["train"] + med["loader"]),
            steps=steps, repeats=repeats, warmup=warmup, threads=torch.get_num_threads(),
            interleave=interleave,
            train_img_s_all=rate["train"], e2e_img_s_all=rate["e2e"],
            infer_img_s_all=rate["infer"], peak_gflops_all=list(mm.samples) if mm else [peak]))
    return results


def bench_model(name: str, **kwargs) -> BenchResult:
    """:func:`bench_models` for one model (``args=`` for its argument overrides)."""
    args = kwargs.pop("args", None) or {}
    return bench_models([ModelSpec(name, args)], **kwargs)[0]


def _plain(value):
    """JSON-safe copy of builder arguments (tuples -> lists, other objects -> str)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return str(value)


def machine_info(device: str | torch.device = "cpu") -> dict:
    """What the figures were measured on: CPU model, cores, threads, torch, GPU, load."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    try:
        info["load_avg"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(dev)
    return info


def profile_train_step(spec: ModelSpec | str, *, batch_size: int = 128, budget: float | None = None,
                       steps: int = 2, device: str | torch.device = "cpu", num_classes: int = 100,
                       input_size: Sequence[int] = (3, 32, 32), amp: str = "auto",
                       channels_last: str = "auto", top: int = 15) -> str:
    """``torch.profiler`` table (top ops by self time) of ``steps`` model-only training steps,
    after one untimed step."""
    from torch.profiler import ProfilerActivity, profile

    from mpbench.training.device import channels_last_setting, resolve_device

    device = resolve_device(str(device))
    spec = spec if isinstance(spec, ModelSpec) else parse_model_spec(spec)
    spec, opts = _split_options(spec)
    use_cl = channels_last_setting(opts.get("channels_last", channels_last))
    data = _bench_data(batch_size, num_classes, tuple(int(v) for v in input_size))
    p = _prepare(spec, budget=budget, batch_size=batch_size, device=device, data=data,
                 num_classes=num_classes, seed=0, amp=amp, channels_last=use_cl)
    p.step(p.x, p.y)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            p.step(p.x, p.y)
        _sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=top)


# --------------------------------------------------------------------------- a run's own speed

def device_name(device: str | torch.device) -> str:
    """What a speed was measured on, in words: the GPU's name, or the CPU model and threads."""
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    return f"{dev} ({machine_info('cpu')['cpu']}, {torch.get_num_threads()} threads)"


def run_speed(model: nn.Module, data, recipe, device: str | torch.device, *,
              batch_size: int | None = None, step_s: float | None = None,
              budget_s: float = 3.0, repeats: int = 3, warmup: int | None = None) -> dict:
    """A run's wall-clock axis: training and inference img/s of ``model`` on ``device``,
    measured as ``mpbench bench`` measures its model-only figures (:class:`TrainStep`: the
    trainer's step with the recipe's autocast and channels_last, on one fixed batch of the
    run's own training images (a streamed image folder's first files, decoded once with the
    evaluation transform); eval-mode no_grad forward; ``warmup`` untimed calls, then the
    median of ``repeats`` timed blocks).

    ``model`` is trained by the measurement (SGD steps): pass a copy. ``step_s``, the run's
    own seconds per training step, sizes the blocks so that everything takes about
    ``budget_s`` (at least one step per block); unknown, one step per block. The training
    forward is eager even under ``recipe.compile`` (compiling again would cost minutes).
    Returns the ``speed_*`` fields of a run's result.
    """
    from mpbench.data import normalize
    from mpbench.training.device import autocast_for, use_channels_last

    device = torch.device(device)
    t_start = time.perf_counter()
    batch_size = min(int(batch_size or recipe.batch_size), len(data.train_y))
    if warmup is None:
        warmup = 3 if device.type == "cuda" else 1
    blocks = max(1, repeats)
    # one timed block = steps training steps + steps inference passes (~1/3 of a step each)
    steps = 1 if not step_s else int(max(1, min(200, budget_s / (blocks * step_s * 4 / 3))))
    model = model.to(device)
    channels_last = use_channels_last(recipe.channels_last, model, device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if getattr(data, "streaming", False):  # an image folder: decode the first files once
        from mpbench.data.streaming import StreamLoader
        first = StreamLoader(data.train_files[:batch_size], data.train_y[:batch_size],
                             batch_size, train=False, mean=data.mean, std=data.std,
                             size=data.crop_size, crop_pct=getattr(recipe, "crop_pct", 0.875),
                             device=device, num_workers=0)
        x, y = next(iter(first))  # normalised on the device; unreadable files left out
        batch_size = len(y)
    else:
        x = normalize(data.train_x[:batch_size].to(device), data.mean, data.std)
        y = data.train_y[:batch_size].to(device)
    if getattr(recipe, "input_size", None) and x.shape[-1] != recipe.input_size:
        x = torch.nn.functional.interpolate(x, size=(recipe.input_size,) * 2, mode="bilinear",
                                            align_corners=False)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    step = TrainStep(model, device, lambda: autocast_for(device, recipe))

    def train_once():
        model.train()
        step(x, y)

    def infer_once():
        model.eval()
        with torch.no_grad(), step.autocast_factory():
            model(x)

    train_t, infer_t = [], []
    time_steps(train_once, 0, device, warmup)
    time_steps(infer_once, 0, device, warmup)
    for _ in range(blocks):
        train_t.append(time_steps(train_once, steps, device))
        infer_t.append(time_steps(infer_once, steps, device))
    model.train()
    return {"speed_train_img_s": batch_size * steps / _median(train_t),
            "speed_infer_img_s": batch_size * steps / _median(infer_t),
            "speed_device": device_name(device), "speed_batch_size": batch_size,
            "speed_steps": steps, "speed_repeats": blocks,
            "speed_time_s": time.perf_counter() - t_start}
