"""The search seam: decisions, mixed operations, and the supernet base class.

A supernet lists its :class:`Decision`s. A strategy owns the architecture parameters and, before each
forward, sets every decision's mix: a vector over its options (a soft Gumbel-softmax sample, or one-hot for a
sampled path); a :class:`MixedOp` computes only the options with a non-zero share of the mix
(:class:`ActiveOptions`, which spaces that override ``apply_mix`` use too).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from . import checks
from .errors import NascoreError
from .features import PreLogits
from .protocols import CostEstimate


@dataclass(frozen=True)
class Decision:
    """One architecture decision: a name, its option labels, and its owner ``task`` (a task name, or
    ``nascore.SHARED``, None, when all tasks share the decision).

    ``stream``: in a :class:`~nascore.protocols.MultiTaskBackbone`, the task whose stream of features this
    decision routes (``branched``: which copy of a layer that task runs). Unlike ``task`` it does not make the
    decision that task's own: the arch stays one for all tasks.
    """

    name: str
    options: tuple[str, ...]
    task: str | None = None
    stream: str | None = None


@dataclass(frozen=True)
class ActiveOptions:
    """One decision's mix with the options it computes worked out once, so a forward needs no device sync."""

    mix: Tensor
    indices: tuple[int, ...]  # the options with a non-zero share of the mix
    plain: bool  # a sampled path (one option at 1, no gradient): computed without a multiply

    @classmethod
    def of(cls, mix: Tensor) -> ActiveOptions:
        values = mix.detach().tolist()
        indices = tuple(i for i, v in enumerate(values) if v != 0.0)
        return cls(mix, indices, len(indices) == 1 and not mix.requires_grad and values[indices[0]] == 1.0)

    def combine(self, run: Callable[[int], Tensor]) -> Tensor:
        """``sum_i mix_i * run(i)`` over the active options; on a plain path ``run(i)`` itself, exactly the
        standalone child's computation."""
        first, *rest = self.indices
        if self.plain:
            return run(first)
        out = self.mix[first] * run(first)
        for i in rest:
            out = out + self.mix[i] * run(i)
        return out


class MixedOp(nn.Module):
    """One decision's candidate operations, summed by the decision's mix (several MixedOps may share a
    decision)."""

    def __init__(self, decision: str, candidates: Mapping[str, nn.Module]):
        super().__init__()
        self.decision = decision
        self.candidates = nn.ModuleDict(candidates)
        self._ops = list(self.candidates.values())
        self.mix = None

    @property
    def mix(self) -> Tensor | None:
        return None if self._active is None else self._active.mix

    @mix.setter
    def mix(self, mix: Tensor | None) -> None:
        self._active = None if mix is None else ActiveOptions.of(mix)

    def forward(self, x: Tensor) -> Tensor:
        if self._active is None:
            raise RuntimeError(f"no mix set for decision '{self.decision}'")
        return self._active.combine(lambda i: self._ops[i](x))


@dataclass
class CostTable(CostEstimate):
    """Prices of every option of every decision and of the fixed parts, in one cost model's unit.

    ``reduce="sum"`` (MACs, params, latency): a network costs the sum of its parts; ``options`` holds the
    per-option price of each decision summed over the MixedOps that share it. ``reduce="max"`` (peak memory):
    a network costs its most expensive part; ``positions`` keeps each MixedOp's row and ``fixed`` is the
    largest fixed part, and the expected cost is the max of the per-position expectations (exact for a one-hot
    mix, a differentiable surrogate otherwise).
    """

    unit: str
    decisions: list[Decision]
    fixed: float
    options: dict[str, Tensor]  # decision name -> cost per option
    reduce: Literal["sum", "max"] = "sum"
    positions: list[tuple[str, Tensor]] = field(default_factory=list)  # (decision, row) per MixedOp

    def expected(self, mix: Mapping[str, Tensor]) -> Tensor:
        """Differentiable expected cost: ``fixed + sum_d sum_i mix_di * c_di`` (or the max, see above)."""
        device = next(iter(mix.values())).device
        total = torch.tensor(self.fixed, device=device)
        if self.reduce == "max":
            parts = [(mix[name] * costs.to(device)).sum() for name, costs in self.positions]
            return torch.stack([total, *parts]).max()
        for name, costs in self.options.items():
            total = total + (mix[name] * costs.to(device)).sum()
        return total

    def of_choices(self, choices: Mapping[str, str]) -> float:
        """Cost of one discrete architecture."""
        index = {d.name: d.options.index(choices[d.name]) for d in self.decisions}
        if self.reduce == "max":
            return max([self.fixed] + [float(c[index[n]]) for n, c in self.positions])
        return self.fixed + sum(float(c[index[n]]) for n, c in self.options.items())

    def bounds(self) -> tuple[float, float]:
        """The cheapest and the dearest cost any architecture of the space can have."""
        if self.reduce == "max":
            return (max([self.fixed] + [float(c.min()) for _, c in self.positions]),
                    max([self.fixed] + [float(c.max()) for _, c in self.positions]))
        return (self.fixed + sum(float(c.min()) for c in self.options.values()),
                self.fixed + sum(float(c.max()) for c in self.options.values()))


@dataclass(frozen=True, eq=False)
class Operation:
    """One module of a supernet at the input shape it sees: a MixedOp's candidate or a fixed part."""

    module: nn.Module
    input_shape: tuple[int, ...]
    decision: str | None = None  # None for fixed parts
    option: str | None = None
    position: int = -1  # index of the MixedOp in ``Supernet.mixed_ops()``


class Supernet(nn.Module, ABC):
    """Base class of search-space supernets: ``forward(x)`` returns multi-scale features.

    Subclasses set ``feature_info`` (timm convention) and build their searchable layers from
    :class:`MixedOp` modules; :meth:`fixed_modules` names the parts that every architecture has.
    """

    feature_info: list[dict]
    #: how a classifier widens the last level (as ``Backbone.pre_logits``), or None for pool + linear
    pre_logits: PreLogits | None = None

    @abstractmethod
    def decisions(self) -> list[Decision]:
        """Every decision of the supernet, in a fixed order."""

    def canonical(self, choices: Mapping[str, str]) -> dict[str, str]:
        """The one spelling of an arch that several choices build (``branched``: copies renumbered so that equal
        numbers mean shared); by default every arch has one, and this returns ``choices``.

        :param choices: an option label for every decision.
        :return: choices that build the same model, equal for every spelling of it.

        Called by strategies on the archs they derive and sample (``bmtas``), so equal models get equal arch
        files.
        """
        return dict(choices)

    def fixed_modules(self) -> dict[str, nn.Module]:
        return {}

    def mixed_ops(self) -> list[MixedOp]:
        """The MixedOp modules, found once (a supernet's structure is fixed once it is built)."""
        if "_mixed_ops" not in self.__dict__:
            self.__dict__["_mixed_ops"] = [m for m in self.modules() if isinstance(m, MixedOp)]
        return self.__dict__["_mixed_ops"]

    def set_mix(self, mix: Mapping[str, Tensor]) -> None:
        """Mix every decision's options for the next forwards: ``mix`` maps each decision's name to a tensor of
        ``len(options)`` (soft probabilities, or one-hot); checked, then handed to :meth:`apply_mix`."""
        sizes = {d.name: len(d.options) for d in self.decisions()}
        missing = set(sizes) - set(mix)
        if missing:
            raise ValueError(f"no mix for decisions {sorted(missing)}")
        unknown = set(mix) - set(sizes)
        if unknown:
            raise ValueError(f"mix for unknown decisions {sorted(unknown)}; decisions: {sorted(sizes)}")
        for name, m in mix.items():
            if m.shape != (sizes[name],):
                raise ValueError(f"the mix of '{name}' has shape {tuple(m.shape)}, expected ({sizes[name]},)")
        self.apply_mix(dict(mix))

    def apply_mix(self, mix: dict[str, Tensor]) -> None:
        """Hand a checked mix to the searchable modules (here: the MixedOps; masked spaces override it)."""
        for op in self.mixed_ops():
            op.mix = mix[op.decision]

    def set_choices(self, choices: Mapping[str, str]) -> None:
        """The one-hot mix of a discrete architecture (``choices``: decision name -> option label)."""
        self.set_mix(one_hot(self.decisions(), choices, device=_device_of(self)))

    def operations(self, input_size: int, in_channels: int = 3) -> list[Operation]:
        """Every candidate of every MixedOp and every fixed part, with the input shape it sees (batch 1).

        Shapes are recorded by forward pre-hooks during one forward under a uniform mix, so they are the
        real ones whatever the space's wiring (strides, resolutions, channel counts).
        """
        previous = {op: op.mix for op in self.mixed_ops()}
        device = _device_of(self)
        try:
            self.set_mix({d.name: torch.full((len(d.options),), 1.0 / len(d.options), device=device)
                          for d in self.decisions()})
            shapes = input_shapes(self, self.mixed_ops() + list(self.fixed_modules().values()), input_size,
                                  in_channels)
        finally:
            for op, mix in previous.items():
                op.mix = mix
        ops = [Operation(m, shapes[m]) for m in self.fixed_modules().values()]
        for position, mixed in enumerate(self.mixed_ops()):
            ops.extend(Operation(op, shapes[mixed], mixed.decision, label, position)
                       for label, op in mixed.candidates.items())
        return ops

    def price(self, cost_model, input_size: int, in_channels: int = 3) -> CostEstimate:
        """Price every option of every decision at its real input shape, and the fixed parts.

        Strategies use the result through the :class:`~nascore.protocols.CostEstimate` contract; a space whose
        costs are not a sum of per-option prices returns its own table (FBNetV2's effective-shape table,
        ``nascore.spaces.shape_cost``).
        """
        ops = self.operations(input_size, in_channels)
        listed = cost_model.price_all([(op.module, op.input_shape) for op in ops])
        prices = [checks.price(p, cost_model, "price_all") for p in listed]
        if len(prices) != len(ops):
            raise checks.refuse(cost_model, "price_all", f"returned {len(prices)} prices for {len(ops)} operations")
        fixed = [p for op, p in zip(ops, prices) if op.decision is None]
        rows: dict[int, list[float]] = {}
        for op, p in zip(ops, prices):
            if op.decision is not None:
                rows.setdefault(op.position, []).append(p)
        mixed = self.mixed_ops()
        positions = [(mixed[i].decision, torch.tensor(row)) for i, row in sorted(rows.items())]
        if cost_model.reduce == "max":
            return CostTable(cost_model.unit, self.decisions(), max(fixed, default=0.0), {}, "max", positions)
        options: dict[str, Tensor] = {}
        for name, row in positions:
            options[name] = options.get(name, 0) + row
        return CostTable(cost_model.unit, self.decisions(), float(sum(fixed)) + cost_model.overhead(), options)


def random_choices(decisions: Iterable[Decision], generator: torch.Generator) -> dict[str, str]:
    """One arch with every decision's option drawn uniformly from ``generator`` (one draw per decision, in order)."""
    return {d.name: d.options[int(torch.randint(len(d.options), (1,), generator=generator))] for d in decisions}


def one_hot(decisions: list[Decision], choices: Mapping[str, str], device: torch.device | str = "cpu"
            ) -> dict[str, Tensor]:
    """The one-hot mix that selects ``choices`` (decision name -> option label)."""
    mix = {}
    for d in decisions:
        label = choices.get(d.name)
        if label not in d.options:
            raise NascoreError(f"decision '{d.name}': option {label!r} is not one of {list(d.options)}")
        m = torch.zeros(len(d.options), device=device)
        m[d.options.index(label)] = 1.0
        mix[d.name] = m
    return mix


def input_shapes(model: nn.Module, modules: Iterable[nn.Module], input_size: int, in_channels: int = 3
                 ) -> dict[nn.Module, tuple[int, ...]]:
    """The input shape each of ``modules`` first sees during one forward of ``model`` on a batch of one zero image
    (eval mode, no gradient), recorded by forward pre-hooks; modules the forward does not run are left out."""
    shapes: dict[nn.Module, tuple[int, ...]] = {}

    def record(module: nn.Module, args: tuple) -> None:  # a pre-hook returning a value would replace the args
        shapes.setdefault(module, tuple(args[0].shape))

    hooks = [m.register_forward_pre_hook(record) for m in modules]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, in_channels, input_size, input_size, device=_device_of(model)))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return shapes


def _device_of(module: nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")
