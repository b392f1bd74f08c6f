"""Built-in cost models and the loss forms that turn a cost into a search objective."""
from .base import CostModel, op_key
from .objective import Additive, Budget, Multiplicative, Objective

__all__ = ["CostModel", "op_key", "Objective", "Multiplicative", "Additive", "Budget"]
