"""How a run's training steps compute: mixed precision (spec ``amp: {dtype: bf16|fp16}``) and memory format (spec
``channels_last: true``), for the search and for training alike.

Mixed precision is ``torch.autocast`` around the forward pass and the losses; fp16 adds a ``torch.amp.GradScaler``
(scaled backward, unscaled step that skips a step whose gradients overflowed, scale updated after each step), bf16
needs none. ``channels_last`` converts the network and every image batch to NHWC, which convolutions on recent GPUs
(and oneDNN on CPUs) run faster.
"""
from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from .spec_model import AmpConfig

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """A run's autocast, loss scaling and memory format; ``Precision()`` is plain float32 and contiguous NCHW."""

    def __init__(self, amp: AmpConfig | None = None, channels_last: bool = False, device: str | torch.device = "cpu"):
        self.amp, self.device, self.channels_last = amp, torch.device(device), channels_last
        self.dtype = DTYPES[amp.dtype] if amp is not None else None
        self.scaler = torch.amp.GradScaler(self.device.type) if self.dtype is torch.float16 else None

    def autocast(self) -> AbstractContextManager[Any]:
        """The forward pass and losses run under this."""
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def network(self, network: nn.Module) -> nn.Module:
        """``network`` in the run's memory format (in place, as ``Module.to``)."""
        return network.to(memory_format=torch.channels_last) if self.channels_last else network

    def images(self, images: Any) -> Any:
        """A batch of images in the run's memory format (4-D tensors only; anything else as it is)."""
        if self.channels_last and isinstance(images, Tensor) and images.dim() == 4:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def step(self, loss: Tensor, optimizer: torch.optim.Optimizer, inputs: Sequence[Tensor] | None = None) -> None:
        """Backward of ``loss`` (into ``inputs`` only, when given) and ``optimizer``'s step, scaled under fp16."""
        optimizer.zero_grad(set_to_none=True)
        self.backward(loss, inputs)
        self.update(optimizer)

    def backward(self, loss: Tensor, inputs: Sequence[Tensor] | None = None) -> None:
        """Backward of ``loss``, scaled under fp16: several calls accumulate gradients for one ``update``."""
        (loss if self.scaler is None else self.scaler.scale(loss)).backward(inputs=inputs)

    def update(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer``'s step on the gradients accumulated by ``backward`` (unscaled, and skipped when they
        overflowed, under fp16)."""
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        """The loss scaler's state (empty without one): checkpointed so a resumed run scales as it would have."""
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)



#: float32, NCHW: what a step does without ``amp`` and ``channels_last`` (stateless, so shared)
FULL = Precision()
