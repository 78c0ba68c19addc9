"""The largest training batch that fits a device (``mpbench bench --max-batch``).

The figure a user needs to size a cluster job: doubling the batch from ``start`` while a
training step fits, then bisecting between the last batch that fitted and the first that did
not. A batch *fits* when :func:`mpbench.bench.memory.measure_memory` finishes it (on CUDA an
out-of-memory error is caught and counts as "does not fit") and, where a ``mem_limit_mb`` is
given, its peak training memory is at most that. On CPU no allocator runs out, so a limit is
required there: the resident-set peak of a fresh child process (``cpu-rss-hwm``) against it.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch

from mpbench.bench.memory import MeasurementError, MemoryJob, measure_memory

__all__ = ["largest_fitting", "max_batch"]


def largest_fitting(fits: Callable[[int], bool], start: int = 1, cap: int = 4096
                    ) -> int | None:
    """The largest batch ``b`` in ``[start, cap]`` with ``fits(b)``, assuming that fitting is
    monotone (a batch that fits means every smaller one does); None when ``start`` does not
    fit. Doubling, then bisection: about ``2 log2(answer / start)`` calls."""
    if start < 1 or cap < start:
        raise ValueError(f"need 1 <= start <= cap, got start={start}, cap={cap}")
    if not fits(start):
        return None
    good = start
    bad = None
    while bad is None:
        trial = min(good * 2, cap)
        if trial == good:
            return good  # at the cap
        if fits(trial):
            good = trial
        else:
            bad = trial
    while bad - good > 1:
        mid = (good + bad) // 2
        if fits(mid):
            good = mid
        else:
            bad = mid
    return good


def max_batch(job: MemoryJob, device: str | torch.device = "cpu", *,
              mem_limit_mb: float | None = None, start: int = 1, cap: int = 4096,
              timeout_s: float = 300.0, progress: Callable[[str], None] | None = None) -> dict:
    """The largest training batch of ``job``'s model that fits ``device`` (see the module
    docstring): ``{"max_batch", "mem_limit_mb", "mem_method", "peak_at_max_mb", "probes"}``,
    ``probes`` being every tried batch with its peak (None: did not finish, and why)."""
    device = torch.device(device)
    if device.type != "cuda" and mem_limit_mb is None:
        raise ValueError("on CPU a memory limit is needed (--mem-limit MB): nothing runs out")
    say = progress or (lambda _msg: None)
    probes: list[dict] = []
    method = None

    def fits(b: int) -> bool:
        nonlocal method
        try:
            m = measure_memory(replace(job, batch_size=b), device, timeout_s=timeout_s)
        except MeasurementError as exc:
            probes.append({"batch_size": b, "train_peak_mem_mb": None, "error": str(exc)})
            say(f"{job.model} batch {b}: does not fit ({exc})")
            return False
        method = m["mem_method"]
        peak = m["train_peak_mem_mb"]
        ok = mem_limit_mb is None or peak <= mem_limit_mb
        probes.append({"batch_size": b, "train_peak_mem_mb": peak, "fits": ok})
        say(f"{job.model} batch {b}: {peak:.0f} MiB, {'fits' if ok else 'over the limit'}")
        return ok

    best = largest_fitting(fits, start, cap)
    at = [p["train_peak_mem_mb"] for p in probes if p["batch_size"] == best]
    return {"max_batch": best, "mem_limit_mb": mem_limit_mb, "mem_method": method,
            "peak_at_max_mb": at[0] if at else None, "cap": cap, "probes": probes}
