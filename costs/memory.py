"""Peak activation memory cost model: the most bytes of activations alive at once during one forward.

A ``TorchDispatchMode`` sees every tensor each aten op creates and counts its storage once (views, reshapes
and in-place ops share storage); ``weakref.finalize`` on the storage notices when it is freed. Parameters
and buffers are not activations and are not counted. Why not a library: torch keeps allocator statistics
for CUDA only (``torch.cuda.max_memory_allocated``), none on CPU, and its memory trackers
(``torch.distributed._tools``) are private and aimed at training (parameters, gradients, optimizer states).
"""
from __future__ import annotations

import itertools
import weakref
from collections.abc import Collection
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from nascore.component import ComponentConfig
from nascore.cost import CostModel
from nascore.hookspecs import hookimpl


class PeakTracker(TorchDispatchMode):
    """Bytes of the live tensor storages created while active (plus those passed to :meth:`track`), and
    their maximum after each op. Storages in ``excluded`` (by ``id``: parameters, buffers) are never counted."""

    def __init__(self, excluded: Collection[int] = ()):
        super().__init__()
        self.excluded = excluded
        self.live = 0
        self.peak = 0
        # id of each tracked storage (its Python object lives exactly as long as the storage) -> finalizer
        self._tracked: dict[int, weakref.finalize] = {}

    def track(self, tensor: Tensor) -> None:
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self._tracked or key in self.excluded:
            return
        nbytes = storage.nbytes()
        self.live += nbytes
        self.peak = max(self.peak, self.live)
        self._tracked[key] = weakref.finalize(storage, self._free, key, nbytes)

    def _free(self, key: int, nbytes: int) -> None:
        self.live -= nbytes
        del self._tracked[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, Tensor):
                self.track(t)
        return out

    def __exit__(self, *exc):
        # tensors that outlive the forward (its outputs) must not call back into a finished tracker
        for finalizer in list(self._tracked.values()):
            finalizer.detach()
        self._tracked.clear()
        return super().__exit__(*exc)


def peak_activation_bytes(module: nn.Module, inputs: Tensor) -> int:
    """Peak bytes of live activations (``inputs`` included) during one inference forward of ``module``."""
    excluded = {id(t.untyped_storage()) for t in itertools.chain(module.parameters(), module.buffers())}
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), PeakTracker(excluded) as tracker:
            tracker.track(inputs)
            module(inputs)
    finally:
        module.train(was_training)
    return tracker.peak


class MemoryCost(CostModel):
    """Prices operations by their peak activation memory in bytes; a network costs its dearest part."""

    name: ClassVar[str] = "memory"
    unit: ClassVar[str] = "bytes"
    reduce: ClassVar[Literal["sum", "max"]] = "max"

    class Config(ComponentConfig):
        batch_size: int = Field(1, ge=1, description="batch the peak is reported for (replaces the input's)")

    def measure(self, module: nn.Module, input_shape: tuple[int, ...]) -> float:
        shape = (self.config.batch_size, *input_shape[1:])
        tensors = itertools.chain(module.parameters(), module.buffers())
        device = next((t.device for t in tensors), torch.device("cpu"))
        return peak_activation_bytes(module, torch.zeros(shape, device=device))


@hookimpl
def nascore_cost_models():
    return [MemoryCost]
