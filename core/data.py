"""Deterministic data plumbing: fixed splits and loaders whose order depends only on (seed, epoch)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset

from . import distributed
from .errors import NascoreError


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A seed for one epoch (and one random stream) of a run; resuming at an epoch reproduces it."""
    return (seed * 1_000_003 + epoch * 7919 + stream) % (2**63)


def split(dataset: torch.utils.data.Dataset, fraction: float, seed: int) -> tuple[Subset, Subset]:
    """Deterministically split off ``fraction`` of a dataset: returns (rest, fraction part)."""
    n = len(dataset)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    k = max(1, round(n * fraction))
    return Subset(dataset, sorted(perm[k:])), Subset(dataset, sorted(perm[:k]))


def loader(dataset: torch.utils.data.Dataset, batch_size: int, collate: Callable[[list], Any], *,
           shuffle: bool, seed: int = 0, epoch: int = 0, stream: int = 0, shard: bool = False) -> DataLoader:
    """Batches of ``dataset`` in an order drawn from (seed, epoch, stream). With ``shard`` under torchrun, this
    rank's disjoint share of them: ``batch_size`` is the global batch, split evenly over the ranks."""
    generator = torch.Generator().manual_seed(epoch_seed(seed, epoch, stream))
    ranks = distributed.world_size()
    if shard and ranks > 1:
        if batch_size % ranks:
            raise NascoreError(f"batch_size: {batch_size} does not split evenly over the {ranks} processes of this "
                               f"torchrun job (batch_size is the global batch); give a multiple of {ranks}")
        share = distributed.sampler(dataset, shuffle, epoch_seed(seed, 0, stream), epoch)
        per_rank = batch_size // ranks
        return DataLoader(dataset, batch_size=min(per_rank, len(share)), sampler=share, generator=generator,
                          collate_fn=collate, drop_last=shuffle and len(share) >= per_rank)
    return DataLoader(dataset, batch_size=min(batch_size, len(dataset)), shuffle=shuffle, generator=generator,
                      collate_fn=collate, drop_last=shuffle and len(dataset) >= batch_size)


def to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj
