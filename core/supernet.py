"""The search seam: decisions, weighted choices, and the supernet base class.

A supernet lists its :class:`Decision`s. A strategy owns the architecture parameters and, before each
forward, sets a weight vector per decision (soft Gumbel-softmax weights or one-hot samples); a
:class:`Choice` computes only the options whose weight is non-zero (:class:`ActiveOptions`, which spaces that
override ``apply_weights`` use too).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from .errors import NascoreError
from .features import PreLogits
from .protocols import CostEstimate


@dataclass(frozen=True)
class Decision:
    """One architecture decision: a name, its option labels, and the task that owns it (None = shared).

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
    """One decision's weights with the options they compute worked out once, so a forward needs no device sync."""

    weight: Tensor
    indices: tuple[int, ...]  # the options with a non-zero weight
    plain: bool  # a sampled path (one option at weight 1, no gradient): computed without a multiply

    @classmethod
    def of(cls, weight: Tensor) -> ActiveOptions:
        values = weight.detach().tolist()
        indices = tuple(i for i, v in enumerate(values) if v != 0.0)
        return cls(weight, indices, len(indices) == 1 and not weight.requires_grad and values[indices[0]] == 1.0)

    def mix(self, run: Callable[[int], Tensor]) -> Tensor:
        """``sum_i w_i * run(i)`` over the active options; on a plain path ``run(i)`` itself, exactly the
        standalone child's computation."""
        first, *rest = self.indices
        if self.plain:
            return run(first)
        out = self.weight[first] * run(first)
        for i in rest:
            out = out + self.weight[i] * run(i)
        return out


class Choice(nn.Module):
    """Weighted sum of candidate operations for one decision (several Choices may share a decision)."""

    def __init__(self, decision: str, candidates: Mapping[str, nn.Module]):
        super().__init__()
        self.decision = decision
        self.candidates = nn.ModuleDict(candidates)
        self._ops = list(self.candidates.values())
        self.weight = None

    @property
    def weight(self) -> Tensor | None:
        return None if self._active is None else self._active.weight

    @weight.setter
    def weight(self, w: Tensor | None) -> None:
        self._active = None if w is None else ActiveOptions.of(w)

    def forward(self, x: Tensor) -> Tensor:
        if self._active is None:
            raise RuntimeError(f"no weights set for decision '{self.decision}'")
        return self._active.mix(lambda i: self._ops[i](x))


@dataclass
class CostTable(CostEstimate):
    """Prices of every option of every decision and of the fixed parts, in one cost model's unit.

    ``reduce="sum"`` (MACs, params, latency): a network costs the sum of its parts; ``options`` holds the
    per-option price of each decision summed over the Choices that share it. ``reduce="max"`` (peak memory):
    a network costs its most expensive part; ``positions`` keeps each Choice's row and ``fixed`` is the
    largest fixed part, and the expected cost is the max of the per-position expectations (exact for one-hot
    weights, a differentiable surrogate otherwise).
    """

    unit: str
    decisions: list[Decision]
    fixed: float
    options: dict[str, Tensor]  # decision name -> cost per option
    reduce: Literal["sum", "max"] = "sum"
    positions: list[tuple[str, Tensor]] = field(default_factory=list)  # (decision, row) per Choice

    def expected(self, weights: Mapping[str, Tensor]) -> Tensor:
        """Differentiable expected cost: ``fixed + sum_d sum_i w_di * c_di`` (or the max, see above)."""
        device = next(iter(weights.values())).device
        total = torch.tensor(self.fixed, device=device)
        if self.reduce == "max":
            parts = [(weights[name] * costs.to(device)).sum() for name, costs in self.positions]
            return torch.stack([total, *parts]).max()
        for name, costs in self.options.items():
            total = total + (weights[name] * costs.to(device)).sum()
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
    """One module of a supernet at the input shape it sees: a Choice's candidate or a fixed part."""

    module: nn.Module
    input_shape: tuple[int, ...]
    decision: str | None = None  # None for fixed parts
    option: str | None = None
    position: int = -1  # index of the Choice in ``Supernet.choices()``


class Supernet(nn.Module):
    """Base class of search-space supernets: ``forward(x)`` returns multi-scale features.

    Subclasses set ``feature_info`` (timm convention) and build their searchable layers from
    :class:`Choice` modules; :meth:`fixed_modules` names the parts that every architecture has.
    """

    feature_info: list[dict]
    #: how a classifier widens the last level (as ``Backbone.pre_logits``), or None for pool + linear
    pre_logits: PreLogits | None = None

    def decisions(self) -> list[Decision]:
        raise NotImplementedError

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

    def choices(self) -> list[Choice]:
        """The Choice modules, found once (a supernet's structure is fixed once it is built)."""
        if "_choices" not in self.__dict__:
            self.__dict__["_choices"] = [m for m in self.modules() if isinstance(m, Choice)]
        return self.__dict__["_choices"]

    def set_weights(self, weights: Mapping[str, Tensor]) -> None:
        sizes = {d.name: len(d.options) for d in self.decisions()}
        missing = set(sizes) - set(weights)
        if missing:
            raise ValueError(f"no weights for decisions {sorted(missing)}")
        unknown = set(weights) - set(sizes)
        if unknown:
            raise ValueError(f"weights for unknown decisions {sorted(unknown)}; decisions: {sorted(sizes)}")
        for name, w in weights.items():
            if w.shape != (sizes[name],):
                raise ValueError(f"weights of '{name}' have shape {tuple(w.shape)}, expected ({sizes[name]},)")
        self.apply_weights(dict(weights))

    def apply_weights(self, weights: dict[str, Tensor]) -> None:
        """Hand checked weights to the searchable modules (here: the Choices; masked spaces override it)."""
        for choice in self.choices():
            choice.weight = weights[choice.decision]

    def set_choices(self, choices: Mapping[str, str]) -> None:
        """One-hot weights for a discrete architecture."""
        self.set_weights(one_hot(self.decisions(), choices, device=_device_of(self)))

    def operations(self, input_size: int, in_channels: int = 3) -> list[Operation]:
        """Every candidate of every Choice and every fixed part, with the input shape it sees (batch 1).

        Shapes are recorded by forward pre-hooks during one forward with uniform weights, so they are the
        real ones whatever the space's wiring (strides, resolutions, channel counts).
        """
        previous = {c: c.weight for c in self.choices()}
        device = _device_of(self)
        try:
            self.set_weights({d.name: torch.full((len(d.options),), 1.0 / len(d.options), device=device)
                              for d in self.decisions()})
            shapes = input_shapes(self, self.choices() + list(self.fixed_modules().values()), input_size,
                                  in_channels)
        finally:
            for c, w in previous.items():
                c.weight = w
        ops = [Operation(m, shapes[m]) for m in self.fixed_modules().values()]
        for position, choice in enumerate(self.choices()):
            ops.extend(Operation(op, shapes[choice], choice.decision, label, position)
                       for label, op in choice.candidates.items())
        return ops

    def price(self, cost_model, input_size: int, in_channels: int = 3) -> CostEstimate:
        """Price every option of every decision at its real input shape, and the fixed parts.

        Strategies use the result through the :class:`~nascore.protocols.CostEstimate` contract; a space whose
        costs are not a sum of per-option prices returns its own table (FBNetV2's effective-shape table,
        ``nascore.costs.shape``).
        """
        ops = self.operations(input_size, in_channels)
        prices = cost_model.price_all([(op.module, op.input_shape) for op in ops])
        fixed = [p for op, p in zip(ops, prices) if op.decision is None]
        rows: dict[int, list[float]] = {}
        for op, p in zip(ops, prices):
            if op.decision is not None:
                rows.setdefault(op.position, []).append(p)
        choices = self.choices()
        positions = [(choices[i].decision, torch.tensor(row)) for i, row in sorted(rows.items())]
        if cost_model.reduce == "max":
            return CostTable(cost_model.unit, self.decisions(), max(fixed, default=0.0), {}, "max", positions)
        options: dict[str, Tensor] = {}
        for name, row in positions:
            options[name] = options.get(name, 0) + row
        return CostTable(cost_model.unit, self.decisions(), float(sum(fixed)) + cost_model.overhead(), options)


def one_hot(decisions: list[Decision], choices: Mapping[str, str], device: torch.device | str = "cpu"
            ) -> dict[str, Tensor]:
    weights = {}
    for d in decisions:
        label = choices.get(d.name)
        if label not in d.options:
            raise NascoreError(f"decision '{d.name}': option {label!r} is not one of {list(d.options)}")
        w = torch.zeros(len(d.options), device=device)
        w[d.options.index(label)] = 1.0
        weights[d.name] = w
    return weights


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
