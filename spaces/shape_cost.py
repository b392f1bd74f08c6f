"""Expected costs by effective shape propagation (FBNetV2): when decisions choose channel counts, a layer's
cost depends on its own width and on the width chosen upstream. Each layer is priced by the cost model on a
grid of the widths it can have (exact modules, so a latency table holds real timings), and the expected cost
of the current mix interpolates each grid at the *effective* widths ``sum_i mix_i * c_i``: the expected
channel count of one layer feeds the cost of the next. Multilinear interpolation is exact on the grid, so with
every width on the grid (the default) a one-hot (discrete) architecture costs exactly the sum of its layers'
prices; a coarser grid (``grid``) prices fewer operations and interpolates between them.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from nascore.protocols import CostEstimate
from nascore.supernet import Decision, one_hot


def grid_points(values: set[int], most: int | None) -> tuple[int, ...]:
    """The sorted distinct ``values``, or ``most`` of them evenly picked (both ends kept): a coarser grid prices
    fewer operations, and widths between its points are interpolated."""
    ordered = sorted(values)
    if most is None or len(ordered) <= most:
        return tuple(ordered)
    return tuple(ordered[round(i * (len(ordered) - 1) / (most - 1))] for i in range(most))


@dataclass(frozen=True)
class Width:
    """A channel count: option i of ``decision`` has ``values[i]`` channels (``decision`` None: one value)."""

    decision: str | None
    values: tuple[int, ...]
    grid: int | None = None  # at most this many priced widths (None: every width)

    def effective(self, mix: Mapping[str, Tensor], device: torch.device) -> Tensor:
        values = torch.tensor(self.values, dtype=torch.float32, device=device)
        return values[0] if self.decision is None else mix[self.decision] @ values

    @property
    def axis(self) -> tuple[int, ...]:
        return grid_points(set(self.values), self.grid)


@dataclass(frozen=True)
class ProductWidth:
    """A width set by two decisions, e.g. a hidden width ``table[j][k]`` for input width option j and
    expansion option k; its expectation is ``g @ table @ h`` (the two decisions are independent)."""

    first: str | None
    second: str | None
    table: tuple[tuple[int, ...], ...]
    grid: int | None = None

    def effective(self, mix: Mapping[str, Tensor], device: torch.device) -> Tensor:
        t = torch.tensor(self.table, dtype=torch.float32, device=device)
        g = mix[self.first] if self.first is not None else torch.ones(1, device=device)
        h = mix[self.second] if self.second is not None else torch.ones(1, device=device)
        return g @ t @ h

    @property
    def axis(self) -> tuple[int, ...]:
        return grid_points({v for row in self.table for v in row}, self.grid)


@dataclass
class Term:
    """The cost of one block: for each group of variables, a grid of prices per (resolution, type) option,
    shape ``(R, T, *len(axis) per variable)``; the block's expected cost mixes the grids by the two
    decisions' mixes (None: one option) and interpolates them at the effective widths."""

    resolution: str | None
    type: str | None
    grids: list[tuple[tuple[str, ...], Tensor]] = field(default_factory=list)


def interpolate(grid: Tensor, axes: list[Tensor], point: list[Tensor]) -> Tensor:
    """Multilinear interpolation of ``grid`` (one dimension per axis, axis values ascending) at ``point``,
    differentiable in the point; points outside an axis are clamped to it."""
    out = grid
    for axis, p in zip(axes, point):
        if len(axis) == 1:
            out = out[0]
            continue
        p = p.clamp(axis[0], axis[-1])
        i = (torch.searchsorted(axis, p.detach().reshape(1), right=True) - 1).clamp(0, len(axis) - 2)[0]
        t = (p - axis[i]) / (axis[i + 1] - axis[i])
        out = (1 - t) * out[i] + t * out[i + 1]
    return out


@dataclass
class ShapeCostTable(CostEstimate):
    """A space's cost by effective shape propagation: ``fixed`` plus one :class:`Term` per block."""

    unit: str
    decisions: list[Decision]
    fixed: float
    variables: dict[str, Width | ProductWidth]
    terms: list[Term]

    def expected(self, mix: Mapping[str, Tensor]) -> Tensor:
        device = next(iter(mix.values())).device if mix else torch.device("cpu")
        eff = {name: v.effective(mix, device) for name, v in self.variables.items()}
        axes = {name: torch.tensor(v.axis, dtype=torch.float32, device=device) for name, v in self.variables.items()}
        one = torch.ones(1, device=device)
        total = torch.tensor(self.fixed, device=device)
        for term in self.terms:
            wr = mix[term.resolution] if term.resolution is not None else one
            wt = mix[term.type] if term.type is not None else one
            for names, grid in term.grids:
                mixed = torch.tensordot(wr, torch.tensordot(wt, grid.to(device), dims=([0], [1])), dims=([0], [0]))
                total = total + interpolate(mixed, [axes[n] for n in names], [eff[n] for n in names])
        return total

    def of_choices(self, choices: Mapping[str, str]) -> float:
        with torch.no_grad():
            return float(self.expected(one_hot(self.decisions, choices)))

    def bounds(self) -> tuple[float, float]:
        """Bounds on any architecture's cost: per block, the cheapest (dearest) resolution and type with every
        grid at its minimum (maximum); exact when prices grow with width, as MACs and latency do."""
        low = high = self.fixed
        for term in self.terms:
            per_option = [sum(g[r, t].min().item() for _, g in term.grids) for r, t in self._options(term)]
            low += min(per_option)
            high += max(sum(g[r, t].max().item() for _, g in term.grids) for r, t in self._options(term))
        return low, high

    @staticmethod
    def _options(term: Term) -> list[tuple[int, int]]:
        r, t = term.grids[0][1].shape[:2]
        return [(i, j) for i in range(r) for j in range(t)]
