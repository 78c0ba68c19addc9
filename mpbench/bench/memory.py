"""Peak training and inference memory of a model at a batch size, measured apart from timing.

Equal MACs are not equal memory, and memory decides the batch a device can hold. One
measurement builds the model (seeded, normally initialised) and a synthetic batch of the
given shape, then runs, in this order:

* an inference batch (eval mode, ``no_grad``, the recipe's autocast) as warm-up, then the
  **measured inference batch**;
* a training step (forward, the model's loss, backward, SGD with momentum, exactly
  :class:`mpbench.bench.throughput.TrainStep`) as warm-up (it allocates the momentum
  buffers and the backends' workspaces), then the **measured training step**.

A peak is the memory in use at the highest point of its measured call, above what was in use
before the model was built: weights, gradients, optimizer state, the batch, the activations
autograd keeps, workspaces. In MiB (2**20 bytes). ``mem_method`` says how it was read:

* ``cuda-max-allocated`` (CUDA, in this process): ``torch.cuda.reset_peak_memory_stats``
  before the measured call, ``max_memory_allocated`` (tensors) after it; the allocator's
  ``max_memory_reserved`` goes to ``*_peak_reserved_mb``.
* ``cpu-rss-hwm`` (CPU, Linux): the resident-set high-water mark ``VmHWM`` of a **fresh
  child process**, reset before the measured call by writing ``5`` to
  ``/proc/self/clear_refs``, after ``malloc_trim`` has handed freed heap pages back, so that
  pages the warm-up freed count again when reused; file-backed pages mapped in meanwhile
  (library code, ``RssFile``) are left out. The child is forked from a
  ``multiprocessing`` fork server that imported mpbench once and never ran a model, so no
  earlier model's memory (or allocator state) is in it, and each measurement costs only the
  model's own steps. RSS also counts the thread pools' stacks and glibc's slack: it is what
  the operating system must give the process, and it grows with the batch as activations do.
* ``cpu-ru-maxrss``: the same child where ``clear_refs`` cannot be written: ``ru_maxrss``,
  which cannot be reset, so the warm-up's peak counts too.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
import time
import types
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
import torch

__all__ = ["MemoryJob", "MeasurementError", "measure_memory", "MEMORY_FIELDS",
           "memory_enabled", "measure_in_process", "format_mb", "bench_memory", "memory_row"]

#: the result fields a measurement fills (results.csv columns; ``None`` = not measured)
MEMORY_FIELDS = ("train_peak_mem_mb", "infer_peak_mem_mb", "mem_method", "mem_device")
MIB = 2 ** 20


class MeasurementError(RuntimeError):
    """The measurement could not finish (out of memory, killed, timed out, failed)."""


@dataclass(frozen=True)
class MemoryJob:
    """What a measurement builds: a registered model with its full arguments, the batch, the
    recipe's ``amp``/``channels_last``, and the plugin modules that register the model (for
    the child process)."""

    model: str
    args: dict = field(default_factory=dict)
    batch_size: int = 128
    input_size: tuple[int, ...] = (3, 32, 32)
    num_classes: int = 100
    amp: str = "auto"
    channels_last: str = "auto"
    plugins: tuple[str, ...] = ()
    source: str | None = None


def memory_enabled() -> bool:
    """``MPBENCH_MEMORY=off`` (or ``0``) turns the per-run measurement off (the test suite
    does, for its many short runs); ``mpbench bench`` measures unless told ``--no-memory``."""
    return os.environ.get("MPBENCH_MEMORY", "on").strip().lower() not in ("off", "0", "no",
                                                                          "false")


# --------------------------------------------------------------------------- probes

def _status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _malloc_trim() -> None:
    """Return freed heap pages to the kernel (glibc), so reusing them shows in the RSS."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _clear_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _maxrss_kib() -> int:
    import resource
    import sys
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value // 1024 if sys.platform == "darwin" else value  # macOS: bytes


class _RssProbe:
    """Resident-set peak of this process above its RSS when :meth:`start` ran, less the
    file-backed pages mapped in since (shared-library code that the first calls touch: about
    20 MiB for a first convolution, the same for every model)."""

    def start(self) -> None:
        _malloc_trim()
        self.resettable = _clear_peak() and _status_kib("VmHWM") is not None
        self.method = "cpu-rss-hwm" if self.resettable else "cpu-ru-maxrss"
        self.base = _status_kib("VmRSS") if self.resettable else _maxrss_kib()
        self.base_file = _status_kib("RssFile")

    def reset(self) -> None:
        _malloc_trim()
        if self.resettable:
            _clear_peak()

    def peak(self) -> dict:
        top = _status_kib("VmHWM") if self.resettable else _maxrss_kib()
        now_file = _status_kib("RssFile")
        code = (now_file - self.base_file) if None not in (now_file, self.base_file) else 0
        return {"mb": max(0, top - self.base - max(code, 0)) / 1024}


class _CudaProbe:
    """Caching-allocator peaks on one CUDA device above their values when :meth:`start` ran."""

    method = "cuda-max-allocated"

    def __init__(self, device: torch.device):
        self.device = device

    def start(self) -> None:
        torch.cuda.synchronize(self.device)
        torch.cuda.empty_cache()
        self.base = torch.cuda.memory_allocated(self.device)
        self.base_reserved = torch.cuda.memory_reserved(self.device)

    def reset(self) -> None:
        torch.cuda.synchronize(self.device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(self.device)

    def peak(self) -> dict:
        torch.cuda.synchronize(self.device)
        return {"mb": (torch.cuda.max_memory_allocated(self.device) - self.base) / MIB,
                "reserved_mb": (torch.cuda.max_memory_reserved(self.device)
                                - self.base_reserved) / MIB}


# --------------------------------------------------------------------------- the measurement

def measure_in_process(job: MemoryJob, device: torch.device, probe) -> dict:
    """Build ``job``'s model and batch on ``device`` and read ``probe`` around one measured
    inference batch and one measured training step (each after a warm-up one)."""
    from mpbench.bench.throughput import TrainStep
    from mpbench.config import Recipe
    from mpbench.plugins import load_plugins
    from mpbench.registry import create_model
    from mpbench.training.device import autocast_for, use_channels_last

    load_plugins(list(job.plugins), job.source or "<memory job>")
    recipe = Recipe(amp=job.amp, channels_last=job.channels_last)
    probe.start()
    torch.manual_seed(0)
    model = create_model(job.model, **job.args).to(device)
    channels_last = use_channels_last(recipe.channels_last, model, device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    x = torch.randn((job.batch_size, *job.input_size), device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, job.num_classes, (job.batch_size,), device=device)
    step = TrainStep(model, device, lambda: autocast_for(device, recipe))

    def infer():
        model.eval()
        with torch.no_grad(), step.autocast_factory():
            model(x)

    try:
        infer()
        probe.reset()
        infer()
        infer_peak = probe.peak()
        model.train()
        step(x, y)
        probe.reset()
        step(x, y)
        train_peak = probe.peak()
    finally:
        del model, step, x, y
    out = {"train_peak_mem_mb": train_peak["mb"], "infer_peak_mem_mb": infer_peak["mb"],
           "mem_method": probe.method}
    if "reserved_mb" in train_peak:
        out.update(train_peak_reserved_mb=train_peak["reserved_mb"],
                   infer_peak_reserved_mb=infer_peak["reserved_mb"])
    return out


def _child(job: MemoryJob, threads: int, conn) -> None:
    """Entry point of the child process: measure on the CPU, send the result back."""
    try:
        torch.set_num_threads(threads)
        conn.send(("ok", measure_in_process(job, torch.device("cpu"), _RssProbe())))
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}".split("\n")[0]))
    finally:
        conn.close()


_CONTEXT: list = []


def _context():
    """A fork-server context whose server has imported mpbench (and so torch and timm) once:
    each child is then forked from a process that never built a model."""
    if not _CONTEXT:
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        if "forkserver" in methods:
            ctx.set_forkserver_preload(["mpbench"])
        _CONTEXT.append(ctx)
    return _CONTEXT[0]


@contextmanager
def _main_hidden():
    """Start a child without multiprocessing re-running the caller's ``__main__`` in it (it
    does that for spawn and forkserver children): the child needs mpbench only, and a
    script without an ``if __name__ == "__main__"`` guard would run again."""
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


def _measure_child(job: MemoryJob, timeout_s: float) -> dict:
    ctx = _context()
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(job, torch.get_num_threads(), send), daemon=True,
                       name=f"mpbench-memory-{job.model}")
    with _main_hidden():
        proc.start()
    send.close()
    try:
        if not receive.poll(timeout_s):
            raise MeasurementError(f"timed out after {timeout_s:.0f}s")
        status, payload = receive.recv()
    except EOFError:
        proc.join(5)
        code = proc.exitcode
        why = ("killed (SIGKILL: out of memory?)" if code == -9
               else f"child exited with code {code}")
        raise MeasurementError(why) from None
    finally:
        receive.close()
        if proc.is_alive():
            proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join()
    if status != "ok":
        raise MeasurementError(payload)
    return payload


def measure_memory(job: MemoryJob, device: str | torch.device = "cpu", *,
                   timeout_s: float = 300.0) -> dict:
    """Peak training and inference memory of ``job`` on ``device`` (see the module
    docstring): the :data:`MEMORY_FIELDS`, ``mem_batch_size``, ``mem_time_s`` and, on
    CUDA, the allocator's reserved peaks. CPU: in a fresh child process, killed after
    ``timeout_s``; CUDA: in this process (free the caller's cached blocks first). Raises
    :class:`MeasurementError` with the reason when it cannot finish (CUDA out of memory
    included)."""
    from mpbench.bench.throughput import device_name

    device = torch.device(device)
    job = MemoryJob(**{**asdict(job), "input_size": tuple(int(v) for v in job.input_size),
                       "plugins": tuple(job.plugins)})
    t0 = time.perf_counter()
    if device.type == "cuda":
        try:
            out = measure_in_process(job, device, _CudaProbe(device))
        except torch.cuda.OutOfMemoryError as exc:
            raise MeasurementError(f"out of memory at batch {job.batch_size}: "
                               f"{str(exc).splitlines()[0]}") from None
        finally:
            torch.cuda.empty_cache()
    elif device.type == "cpu":
        out = _measure_child(job, timeout_s)
    else:
        raise MeasurementError(f"no memory measurement for device type {device.type}")
    out.update(mem_device=device_name(device), mem_batch_size=job.batch_size,
               mem_time_s=time.perf_counter() - t0)
    return out


def format_mb(value: float | None) -> str:
    """``412`` / ``1.93 GiB`` style, or ``not measured``."""
    if value is None:
        return "not measured"
    return f"{value / 1024:.2f} GiB" if value >= 1024 else f"{value:.0f} MiB"



def memory_row(job: MemoryJob, device: str | torch.device = "cpu", *,
               timeout_s: float = 300.0) -> dict:
    """Activations (millions, batch 1) and the :data:`MEMORY_FIELDS` of ``job``; a failed
    measurement gives ``None`` figures and its reason in ``mem_error``."""
    from mpbench.complexity.activations import activations_model

    item = {"activations_m": activations_model(job.model, job.args, input_size=job.input_size,
                                               num_classes=job.num_classes) / 1e6,
            **dict.fromkeys(MEMORY_FIELDS)}
    try:
        item.update(measure_memory(job, device, timeout_s=timeout_s))
    except MeasurementError as exc:
        item["mem_error"] = str(exc)
    return item


def bench_memory(results, *, device: str | torch.device = "cpu", num_classes: int = 100,
                 input_size=(3, 32, 32), timeout_s: float = 300.0,
                 progress=None) -> list[dict]:
    """:func:`memory_row` of each :class:`~mpbench.bench.throughput.BenchResult`, measured
    after (and apart from) the timing, at its batch size, dtype and memory format."""
    say = progress or (lambda _msg: None)
    out = []
    for r in results:
        say(f"memory of {r.label} at batch {r.batch_size}")
        job = MemoryJob(r.model, dict(r.args), r.batch_size, tuple(input_size), num_classes,
                        "bf16" if r.dtype == "bfloat16" else "off",
                        "on" if r.channels_last else "off")
        out.append(memory_row(job, device, timeout_s=timeout_s))
    return out
