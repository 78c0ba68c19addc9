"""Data-parallel training across processes with PyTorch's own engine (``torchrun`` / DDP).

mpbench does not schedule anything itself: ``torchrun`` (or SLURM through submitit, see
:mod:`mpbench.suite.launch`) starts the processes and sets the usual ``env://`` variables
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). Here:

- :func:`setup` joins the process group (NCCL on CUDA, gloo on CPU) and picks this rank's
  device (``cuda:LOCAL_RANK``);
- :func:`rank`, :func:`world_size`, :func:`is_main` answer "who am I" whether or not a process
  group exists (a plain ``mpbench run`` is rank 0 of a world of 1);
- :func:`all_reduce_sum` makes metrics global, :func:`agree` makes every rank follow rank 0's
  decision (claim a run or skip it; resume from this checkpoint);
- :func:`wrap_ddp` wraps a model in ``DistributedDataParallel`` (with synchronised batch norm on
  CUDA, so the maths is the single-process maths at the same global batch).

Semantics (documented in docs/scaling-out.md): ``recipe.batch_size`` is the *global* batch,
split evenly over the ranks; every rank builds the same global batch from the same
(seed, epoch) permutation and augmentation draws and keeps its strided share, so with
synchronised batch norm a run on N processes follows the single-process trajectory up to
floating-point reduction order. Only rank 0 writes files.
"""
from __future__ import annotations

import os
from datetime import timedelta
from typing import Any, Callable, TypeVar

import torch
import torch.distributed as dist
import torch.nn as nn

T = TypeVar("T")


def env_world_size() -> int:
    """``WORLD_SIZE`` set by the launcher (1 when started plainly)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def is_main() -> bool:
    """Rank 0: the only process that takes locks and writes files."""
    return rank() == 0


def setup(device: str = "auto") -> torch.device:
    """This process's device, joining the launcher's process group first if there is one.

    Outside ``torchrun`` (``WORLD_SIZE`` unset or 1) this is :func:`mpbench.training.device.resolve_device`.
    Under it, ``auto``/``cuda`` become ``cuda:LOCAL_RANK`` (NCCL) and ``cpu`` uses gloo; an
    explicit ``cuda:N`` is refused since each rank must own a different GPU.
    """
    from mpbench.training.device import resolve_device

    dev = resolve_device(device)
    if env_world_size() <= 1:
        return dev
    if dev.type == "cuda":
        if device not in ("auto", "cuda"):
            from mpbench.errors import UserError
            raise UserError(f"--device {device}: under torchrun use --device cuda (each rank "
                            f"takes cuda:LOCAL_RANK) or --device cpu")
        dev = torch.device("cuda", local_rank() % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        timeout = timedelta(seconds=int(os.environ.get("MPBENCH_DIST_TIMEOUT_S", "1800")))
        dist.init_process_group(backend=backend, timeout=timeout,
                                **({"device_id": dev} if dev.type == "cuda" else {}))
    return dev


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """Sums of each tensor over all ranks (the tensors themselves when not distributed).

    The tensors are stacked into one float64 collective (exact for counts below 2**53).
    """
    if not is_distributed():
        return list(tensors)
    flat = torch.stack([t.detach().to(_comm_device(), torch.float64).reshape(()) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    return [flat[i].to(t.device, t.dtype) for i, t in enumerate(tensors)]


def agree(value: T) -> T:
    """Rank 0's ``value`` on every rank (a picklable object; identity when not distributed)."""
    if not is_distributed():
        return value
    box = [value if is_main() else None]
    dist.broadcast_object_list(box, src=0, device=_comm_device())
    return box[0]


def gather_lists(items: list) -> list:
    """Every rank's ``items`` (picklable), concatenated in rank order, on every rank."""
    if not is_distributed():
        return list(items)
    boxes: list = [None] * world_size()
    dist.all_gather_object(boxes, list(items))
    return [x for box in boxes for x in box]


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def main_first(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0, then on the others (e.g. a download into a shared cache)."""
    if not is_distributed():
        return fn()
    if is_main():
        out = fn()
        barrier()
        return out
    barrier()
    return fn()


def sync_batchnorm_enabled(device: torch.device) -> bool:
    """Synchronised BN on CUDA unless ``MPBENCH_SYNC_BN=0``; CPU has no SyncBatchNorm kernel."""
    return device.type == "cuda" and os.environ.get("MPBENCH_SYNC_BN", "1") != "0"


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in DDP when distributed (itself otherwise). Parameters are shared, so an
    optimizer built on ``model`` trains the wrapper, and ``unwrap`` gives back ``model``.

    DDP broadcasts rank 0's parameters and buffers at construction: every rank starts from
    the same weights whatever its RNG did.
    """
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    if sync_batchnorm_enabled(device):
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return DDP(model, device_ids=ids, output_device=device.index if ids else None)


def broadcast_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers (batch-norm running statistics) to every rank.

    Without synchronised BN each rank's running statistics drift apart during an epoch; this
    makes evaluation and the saved checkpoint use rank 0's, on every rank.
    """
    if not is_distributed():
        return
    for buf in model.buffers():
        dist.broadcast(buf.data, src=0)


def shard_batch_size(batch_size: int) -> int:
    """Per-rank share of the global ``recipe.batch_size`` (which must divide evenly)."""
    world = world_size()
    if batch_size % world:
        from mpbench.errors import UserError
        raise UserError(f"recipe.batch_size: {batch_size} (the global batch) does not split "
                        f"evenly over {world} processes")
    return batch_size // world


def describe() -> dict[str, Any]:
    """What a result should record about how it was trained."""
    return {"world_size": world_size()}


def end_of_epoch(model: nn.Module, loss_sum: torch.Tensor, correct: torch.Tensor,
                 seen: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Agree on BN buffers (rank 0's) and sum an epoch's training statistics over the ranks."""
    broadcast_buffers(model)
    loss_sum, correct, total = all_reduce_sum(loss_sum, correct, torch.tensor(seen))
    return loss_sum, correct, int(total)


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DDP / compile wrappers: checkpoints carry no ``module.`` prefix."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model
