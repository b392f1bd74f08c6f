"""Pricing the FBNetV2 space by effective shape propagation: every operation of every block is priced by the
cost model at each width it can have (the exact modules a built model runs, so a latency table holds real
timings shared with built models), and the grids go into a :class:`~nascore.spaces.shape_cost.ShapeCostTable`."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import product

import torch
from torch import nn

from nascore.errors import NascoreError
from nascore.protocols import PricedOperation
from nascore.spaces.shape_cost import ShapeCostTable, Term
from nascore.supernet import Decision, Operation, input_shapes

from .fbnetv2_blocks import TYPES, out_size, se_channels, unit, unit_key
from .fbnetv2_plan import BlockPlan, FBNetV2Config, plan

#: operations built and priced at once (the paper's space has about 11,000, some with 0.3 M weights)
CHUNK = 1024
#: variable groups a block's operations depend on, in a fixed order
GROUPS = (("cin", "mid"), ("mid",), ("mid", "cout"), ("cin", "cout"), ("cin",), ("cout",))


@dataclass(frozen=True)
class BlockOp:
    """One operation of a block's (type, resolution): the widths it depends on, and its unit's kind, params and
    input shape as functions of the widths ``(cin, mid, cout)`` (those outside ``group`` are None)."""

    group: tuple[str, ...]  # one of GROUPS
    kind: str  # a ``unit`` kind
    params: Callable[[int | None, int | None, int | None], dict]
    shape: Callable[[int | None, int | None, int | None], tuple[int, ...]]


def _ops(p: BlockPlan, label: str, factor: int, divisor: int, placement: str) -> list[BlockOp]:
    """The operations of one (type, resolution) of a block."""
    full_in = p.size
    sub_in = out_size(full_in, factor)
    branch_out, full_out = out_size(sub_in, p.stride), out_size(full_in, p.stride)
    spec = TYPES[label]
    ops = []
    if spec is None:
        if p.residual:
            return ops  # an identity: free
        ops.append(BlockOp(("cin", "cout"), "skip", lambda c, m, o: dict(cin=c, cout=o, stride=p.stride),
                           lambda c, m, o: (1, c, *sub_in)))
    else:
        kernel, se, act = spec
        if p.has_pw:
            ops.append(BlockOp(("cin", "mid"), "pw", lambda c, m, o: dict(cin=c, cout=m, act=act),
                               lambda c, m, o: (1, c, *sub_in)))
        ops.append(BlockOp(("mid",), "dw", lambda c, m, o: dict(cin=m, kernel=kernel, stride=p.stride, act=act),
                           lambda c, m, o: (1, m, *sub_in)))
        if se:
            ops.append(BlockOp(("mid",), "se", lambda c, m, o: dict(cin=m, hidden=se_channels(m, divisor), act=act),
                               lambda c, m, o: (1, m, *branch_out)))
        ops.append(BlockOp(("mid", "cout"), "pwl", lambda c, m, o: dict(cin=m, cout=o),
                           lambda c, m, o: (1, m, *branch_out)))
        if p.residual:
            ops.append(BlockOp(("cout",), "add", lambda c, m, o: {}, lambda c, m, o: (1, o, *full_out)))
    if factor > 1:
        ops.append(BlockOp(("cin",), "sub", lambda c, m, o: dict(factor=factor), lambda c, m, o: (1, c, *full_in)))
        ops.append(BlockOp(("cout",), "place", lambda c, m, o: dict(factor=factor, size=full_out, mode=placement),
                           lambda c, m, o: (1, o, *branch_out)))
    return ops


def price(cfg: FBNetV2Config, decisions: list[Decision], cost_model, input_size: int, in_channels: int = 3
          ) -> ShapeCostTable:
    if cost_model.reduce != "sum":
        raise NascoreError(f"space 'fbnetv2' prices by effective shape propagation, which needs a cost that adds "
                           f"up over operations (flops, latency); cost '{cost_model.name}' takes a maximum")
    stem, plans, head_mid = plan(cfg, input_size)
    variables: dict[str, object] = {}
    requests: dict[tuple[str, tuple[int, ...]], tuple[str, dict]] = {}  # (op_key, shape) -> (kind, params)
    # (term, grid, (r, t, *grid index), request key) per priced operation
    cells: list[tuple[int, int, tuple[int, ...], tuple[str, tuple[int, ...]]]] = []

    def request(kind: str, params: dict, shape: tuple[int, ...]) -> tuple[str, tuple[int, ...]]:
        key = (unit_key(kind, **params), shape)
        requests.setdefault(key, (kind, params))  # many grid cells share an operation (a 1x1 conv across types)
        return key

    terms: list[Term] = []
    for p in plans:
        names = {"cin": p.cin.decision or f"{p.name}.in", "mid": f"{p.name}.mid",
                 "cout": p.cout.decision or f"{p.name}.out"}
        variables[names["cin"]], variables[names["mid"]], variables[names["cout"]] = p.cin, p.mid, p.cout
        axes = {"cin": p.cin.axis, "mid": p.mid.axis, "cout": p.cout.axis}
        term = Term(p.resolution, p.type)
        for r, factor in enumerate(p.resolutions):
            for t, label in enumerate(p.types):
                for op in _ops(p, label, factor, cfg.divisor, cfg.placement):
                    for index in product(*(range(len(axes[v])) for v in op.group)):
                        widths = dict(zip(op.group, (axes[v][i] for v, i in zip(op.group, index))))
                        c, m, o = widths.get("cin"), widths.get("mid"), widths.get("cout")
                        cells.append((len(terms), GROUPS.index(op.group), (r, t, *index),
                                      request(op.kind, op.params(c, m, o), op.shape(c, m, o))))
        term.grids = [(tuple(names[v] for v in group),
                       torch.zeros(len(p.resolutions), len(p.types), *(len(axes[v]) for v in group)))
                      for group in GROUPS]
        terms.append(term)
    # the head conv: its input width is the last stage's
    last = plans[-1].cout
    head_var = last.decision or f"{plans[-1].name}.out"
    head_size = out_size(plans[-1].size, plans[-1].stride)
    head = Term(None, None, [((head_var,), torch.zeros(1, 1, len(last.axis)))])
    for i, c in enumerate(last.axis):
        cells.append((len(terms), 0, (0, 0, i),
                      request("head", dict(cin=c, cout=head_mid, act="hswish"), (1, c, *head_size))))
    terms.append(head)

    stem_key = request("stem", dict(cin=in_channels, cout=stem.values[0], kernel=3, stride=2, act="hswish"),
                       (1, in_channels, input_size, input_size))
    keys, prices = list(requests), {}
    for start in range(0, len(keys), CHUNK):  # modules built a chunk at a time: memory stays small
        chunk = keys[start:start + CHUNK]
        items = [(unit(requests[k][0], **requests[k][1]), k[1]) for k in chunk]
        prices.update(zip(chunk, cost_model.price_all(items)))
    for term, grid, index, key in cells:
        terms[term].grids[grid][1][index] += prices[key]
    for term in terms:  # groups no operation of the block falls into
        term.grids = [(names, grid) for names, grid in term.grids if grid.abs().sum() > 0] or term.grids[:1]
    fixed = prices[stem_key] + cost_model.overhead()
    return ShapeCostTable(cost_model.unit, decisions, fixed, {**variables, head_var: last}, terms)


def built_operations(model: nn.Module, input_size: int, in_channels: int = 3) -> list[Operation]:
    """The priced operations a built FBNetV2 model runs (the innermost modules with an ``op_key``: the units a
    block is made of, not the block) at their input shapes, recorded by forward pre-hooks during one forward at
    batch 1."""
    units = [m for m in model.modules() if isinstance(m, PricedOperation)
             and not any(isinstance(c, PricedOperation) for c in m.modules() if c is not m)]
    shapes = input_shapes(model, units, input_size, in_channels)
    return [Operation(m, shapes[m]) for m in units if m in shapes]

