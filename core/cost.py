"""Cost models price one operation at its real input shape; spaces turn prices into expected costs."""
from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import ClassVar, Literal

from torch import nn

from . import checks
from .component import Component
from .progress import Progress, no_progress
from .protocols import PricedOperation


def op_key(module: nn.Module) -> str:
    """Identifies an operation's configuration: its ``op_key`` if a space marked it (:class:`PricedOperation`),
    else the module's repr on one line."""
    return module.op_key if isinstance(module, PricedOperation) and module.op_key else " ".join(repr(module).split())


class CostModel(Component):
    kind: ClassVar[str] = "cost"
    #: unit of the prices, e.g. "MACs", "params", "ms"
    unit: ClassVar[str] = ""
    #: how parts combine into a network's cost: "sum" (MACs, latency) or "max" (peak memory)
    reduce: ClassVar[Literal["sum", "max"]] = "sum"

    def __init__(self, config=None, progress: Progress = no_progress):
        super().__init__(config)
        self._cache: dict[tuple[str, tuple[int, ...]], float] = {}
        #: shows long measurements (e.g. timing every operation); runs give their reporter's
        self.progress = progress

    def price(self, module: nn.Module, input_shape: tuple[int, ...]) -> float:
        """The cost of ``module`` on an input of ``input_shape`` (cached per op configuration and shape)."""
        key = (op_key(module), tuple(input_shape))
        if key not in self._cache:
            self._cache[key] = checks.price(self.measure(module, tuple(input_shape)), self, "measure")
        return self._cache[key]

    def price_all(self, items: Sequence[tuple[nn.Module, tuple[int, ...]]]) -> list[float]:
        """Prices of many operations; models backed by a file override this to read and write it once."""
        return [self.price(module, shape) for module, shape in items]

    def overhead(self) -> float:
        """A cost paid once per network rather than per operation (e.g. a runtime's per-call latency)."""
        return 0.0

    @abstractmethod
    def measure(self, module: nn.Module, input_shape: tuple[int, ...]) -> float:
        """The cost of running ``module`` once on an input of ``input_shape``, in ``unit``."""

    def measure_model(self, model: nn.Module, input_shape: tuple[int, ...]) -> float:
        """The cost of a whole built network, measured directly (not summed from a table)."""
        return checks.price(self.measure(model, tuple(input_shape)), self, "measure")
