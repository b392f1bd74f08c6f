"""The search seam: decisions, weighted choices, and the supernet base class.

A supernet lists its :class:`Decision`s. A strategy owns the architecture parameters and, before each
forward, sets a weight vector per decision (soft Gumbel-softmax weights or one-hot samples); a
:class:`Choice` computes only the options whose weight is non-zero.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .errors import NascoreError


@dataclass(frozen=True)
class Decision:
    """One architecture decision: a name, its option labels, and the task that owns it (None = shared)."""

    name: str
    options: tuple[str, ...]
    task: str | None = None


class Choice(nn.Module):
    """Weighted sum of candidate operations for one decision (several Choices may share a decision).

    Setting ``weight`` works out once which options are active, so a forward needs no device sync.
    """

    def __init__(self, decision: str, candidates: Mapping[str, nn.Module]):
        super().__init__()
        self.decision = decision
        self.candidates = nn.ModuleDict(candidates)
        self._ops = list(self.candidates.values())
        self.weight = None

    @property
    def weight(self) -> Tensor | None:
        return self._weight

    @weight.setter
    def weight(self, w: Tensor | None) -> None:
        self._weight = w
        values = [] if w is None else w.detach().tolist()
        self._active = [i for i, v in enumerate(values) if v != 0.0]
        # a plain sampled path: no multiply, exactly the standalone child's computation
        self._plain = len(self._active) == 1 and not w.requires_grad and values[self._active[0]] == 1.0

    def forward(self, x: Tensor) -> Tensor:
        w, active = self._weight, self._active
        if w is None:
            raise RuntimeError(f"no weights set for decision '{self.decision}'")
        if self._plain:
            return self._ops[active[0]](x)
        out = w[active[0]] * self._ops[active[0]](x)
        for i in active[1:]:
            out = out + w[i] * self._ops[i](x)
        return out


@dataclass
class CostTable:
    """Prices of every option of every decision and of the fixed parts, in one cost model's unit."""

    unit: str
    fixed: float
    options: dict[str, Tensor]  # decision name -> cost per option

    def expected(self, weights: Mapping[str, Tensor]) -> Tensor:
        """Differentiable expected cost ``fixed + sum_d sum_i w_di * c_di``."""
        device = next(iter(weights.values())).device
        total = torch.tensor(self.fixed, device=device)
        for name, costs in self.options.items():
            total = total + (weights[name] * costs.to(device)).sum()
        return total

    def of_choices(self, choices: Mapping[str, str], decisions: list[Decision]) -> float:
        """Cost of one discrete architecture."""
        index = {d.name: d.options.index(choices[d.name]) for d in decisions}
        return self.fixed + sum(float(c[index[n]]) for n, c in self.options.items())


class Supernet(nn.Module):
    """Base class of search-space supernets: ``forward(x)`` returns multi-scale features.

    Subclasses set ``feature_info`` (timm convention) and build their searchable layers from
    :class:`Choice` modules; :meth:`fixed_modules` names the parts that every architecture has.
    """

    feature_info: list[dict]

    def decisions(self) -> list[Decision]:
        raise NotImplementedError

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
        for choice in self.choices():
            choice.weight = weights[choice.decision]

    def set_choices(self, choices: Mapping[str, str]) -> None:
        """One-hot weights for a discrete architecture."""
        self.set_weights(one_hot(self.decisions(), choices, device=_device_of(self)))

    def price(self, cost_model, input_size: int, in_channels: int = 3) -> CostTable:
        """Price every option of every decision at its real input shape, and the fixed parts."""
        shapes: dict[nn.Module, tuple[int, ...]] = {}

        def record(module: nn.Module, args: tuple) -> None:
            shapes.setdefault(module, tuple(args[0].shape))

        targets = self.choices() + list(self.fixed_modules().values())
        hooks = [m.register_forward_pre_hook(record) for m in targets]
        previous = {c: c.weight for c in self.choices()}
        was_training, device = self.training, _device_of(self)
        try:
            self.set_weights({d.name: torch.full((len(d.options),), 1.0 / len(d.options), device=device)
                              for d in self.decisions()})
            with torch.no_grad():
                self.eval()(torch.zeros(1, in_channels, input_size, input_size, device=device))
        finally:
            self.train(was_training)
            for h in hooks:
                h.remove()
            for c, w in previous.items():
                c.weight = w
        fixed = sum(cost_model.price(m, shapes[m]) for m in self.fixed_modules().values())
        options: dict[str, Tensor] = {}
        for choice in self.choices():
            row = torch.tensor([cost_model.price(op, shapes[choice]) for op in choice.candidates.values()])
            options[choice.decision] = options.get(choice.decision, 0) + row
        return CostTable(cost_model.unit, float(fixed), options)


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


def _device_of(module: nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")
