"""Built-in cost models: multiply-adds and parameters (``flops``), latency from a lookup table measured on the
target (``latency``, its table in ``lut``, its timing backends in ``timing``), peak memory (``memory``). The
family's contract is ``nascore.cost.CostModel``; the loss forms that turn a cost into a search objective are
``nascore.objective``."""
