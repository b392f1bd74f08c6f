"""Data parallelism under torchrun (``torchrun --nproc_per_node=N -m nascore run SPEC``), on torch.distributed: its
process group (NCCL on CUDA, one GPU per local rank; gloo on the CPU), DDP for network weights, DistributedSampler
for data and its collectives for the rest. Outside torchrun (no WORLD_SIZE > 1) every function is the one-process
case: nothing is wrapped, sharded or communicated."""
from __future__ import annotations

import atexit
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from . import lifeline
from .errors import NascoreError

if TYPE_CHECKING:
    from .spec_model import RunSpec

T = TypeVar("T")


def launched() -> bool:
    """Whether torchrun started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    """Whether this process is in a process group (``setup`` ran under torchrun)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Whether this process is rank 0, the one that writes the run directory and prints."""
    return rank() == 0


def setup(device: torch.device) -> torch.device:
    """Under torchrun, join the process group (once) and return this rank's device: ``cuda:LOCAL_RANK`` with NCCL
    for a CUDA spec (whatever CUDA index the spec names), the CPU with gloo otherwise; else ``device``."""
    if not launched():
        return device
    # torchrun starts each rank in a session of its own and cannot tie it to itself: a rank stops when its launcher
    # dies, however it dies. (One that died before this ran left the rank a new parent, and joining the process group
    # fails: torchrun's agent serves its store.)
    lifeline.die_with_parent()
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    if not active():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                device_id=device if device.type == "cuda" else None)
        atexit.register(dist.destroy_process_group)
    return device


def barrier() -> None:
    if active():
        dist.barrier()


def on_main(fn: Callable[[], T]) -> T | None:
    """``fn()`` on rank 0 alone (None on the other ranks). Under torchrun the ranks wait for it, and a user error it
    raises (NascoreError, OSError) is raised on every rank: no rank is left waiting at a collective for rank 0."""
    if not active():
        return fn()
    result, failure = None, None
    if is_main():
        try:
            result = fn()
        except (NascoreError, OSError) as exc:
            failure = exc
    message = [None if failure is None else str(failure)]
    dist.broadcast_object_list(message, src=0, device=_collective_device())
    if failure is not None:
        raise failure
    if message[0] is not None:
        raise NascoreError(message[0])
    return result


def wrap(module: nn.Module, find_unused_parameters: bool) -> nn.Module:
    """``module`` in DDP under torchrun (its weights' gradients averaged over the ranks in backward; rank 0's
    buffers broadcast before each forward), else ``module``. ``find_unused_parameters`` where a forward may leave
    weights out (a sampled path of a supernet)."""
    if not active():
        return module
    device = next(module.parameters()).device
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=find_unused_parameters)


def average_gradients(optimizer: torch.optim.Optimizer) -> None:
    """Under torchrun, have ``optimizer`` average its parameters' gradients over the ranks before every step: for
    parameters outside DDP (architecture parameters), so that every rank takes the same step."""
    if not active():
        return

    def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        grads = [p.grad for group in opt.param_groups for p in group["params"] if p.grad is not None]
        if grads:
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            flat /= world_size()
            for g, part in zip(grads, flat.split([g.numel() for g in grads])):
                g.copy_(part.view_as(g))

    optimizer.register_step_pre_hook(hook)


def mean(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` averaged over the ranks (a copy)."""
    out = tensor.detach().clone()
    if active():
        dist.all_reduce(out)
        out /= world_size()
    return out


def mean_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A metrics row with its float values averaged over the ranks: a rank's training losses (means over its shard)
    become the global means; values every rank has alike (validation metrics, costs, the learning rate) are left
    exactly as they are. Every rank's row has the same keys."""
    keys = [k for k, v in row.items() if isinstance(v, float)]
    if not active() or not keys:
        return dict(row)
    values = mean(torch.tensor([row[k] for k in keys], dtype=torch.float64, device=_collective_device()))
    return {**row, **dict(zip(keys, values.tolist()))}


def sync_batchnorm(module: nn.Module, spec: RunSpec) -> nn.Module:
    """``module``, its BatchNorm layers made SyncBatchNorm (statistics of the global batch) when the spec asks for it
    (``distributed: {sync_batchnorm: true}``) under torchrun; the state dict keeps its keys."""
    if spec.distributed is None or not spec.distributed.sync_batchnorm or not active():
        return module
    return nn.SyncBatchNorm.convert_sync_batchnorm(module)


def sync_buffers(module: nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm statistics, which each rank updates on its own shard)."""
    if active():
        for buffer in module.buffers():
            dist.broadcast(buffer, 0)


def check_same(value: Any, what: str) -> None:
    """Under torchrun, refuse a ``value`` (picklable, comparable) that is not the same on every rank."""
    if not active():
        return
    values: list[Any] = [None] * world_size()
    dist.all_gather_object(values, value)
    differ = [r for r, v in enumerate(values) if v != values[0]]
    if differ:
        raise NascoreError(f"{what} differs between the ranks of this torchrun job: rank 0 has {values[0]}, "
                           + ", ".join(f"rank {r} has {values[r]}" for r in differ))


def sampler(dataset: torch.utils.data.Dataset, shuffle: bool, seed: int, epoch: int) -> DistributedSampler:
    """This rank's share of ``dataset``: disjoint from the other ranks' (the tail that does not split evenly is
    left out), in an order drawn from ``seed`` and ``epoch``."""
    out = DistributedSampler(dataset, num_replicas=world_size(), rank=rank(), shuffle=shuffle, seed=seed,
                             drop_last=True)
    out.set_epoch(epoch)
    return out


def _collective_device() -> torch.device:
    """Where tensors for a collective live: NCCL's are on this rank's GPU."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
