"""The Pareto step after a search: the derived arch and archs sampled from the strategy's final distribution,
each priced (the cost table's estimate, and the built standalone backbone measured directly) and evaluated
on the supernet's shared weights; ``pareto.csv`` and ``pareto.png`` show the cost / metric front."""
from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nascore.costs.flops import FlopsCost

from . import checks, distributed
from .arch import Arch
from .cost import CostModel
from .data import epoch_seed, loader
from .fileio import atomic_write_bytes, atomic_write_text
from .protocols import CostEstimate, Evaluating, Sampling
from .space import SearchSpace
from .spec_model import ParetoConfig
from .strategy import SearchContext, SearchStrategy, evaluate_arch, owner_name, owner_tasks
from .task import Task

CSV_FILE, PLOT_FILE = "pareto.csv", "pareto.png"
_STREAM = 100  # the step's random stream (samples, BatchNorm batches), see data.epoch_seed

Choices = dict[str, str]


@dataclass
class ParetoRow:
    owner: str | None
    name: str  # "derived" or "sample_<i>", i the draw the arch came from
    choices: Choices
    cost: float  # the cost table's estimate: what the search optimised
    measured: float  # the cost model on the built standalone backbone
    unit: str
    metrics: dict[str, float]  # "val/<task>/<metric>"
    on_front: bool = False


def pareto_front(points: Sequence[tuple[float, float]], higher_is_better: bool = True) -> list[bool]:
    """Which (cost, metric) points no other point dominates: no higher cost and no worse metric, and strictly
    better in one of them. Equal points do not dominate each other."""
    sign = 1.0 if higher_is_better else -1.0
    scored = [(c, sign * m) for c, m in points]
    return [not any(c <= c0 and m >= m0 and (c < c0 or m > m0) for c, m in scored) for c0, m0 in scored]


def candidates(derived: dict[str | None, Choices], sampled: dict[str | None, list[Choices]]
               ) -> dict[str | None, list[tuple[str, Choices]]]:
    """Per owner: the derived arch, then each sampled arch not already listed, in draw order."""
    out: dict[str | None, list[tuple[str, Choices]]] = {}
    for owner, choices in derived.items():
        listed = [("derived", choices)]
        for i, sample in enumerate(sampled.get(owner, []), 1):
            if all(sample != c for _, c in listed):
                listed.append((f"sample_{i}", sample))
        out[owner] = listed
    return out


def primary(tasks: list[Task], owner: str | None) -> tuple[str, bool]:
    """The metric column an owner's front ranks by (its first task's primary metric) and its direction."""
    task = owner_tasks(tasks, owner)[0]
    return f"val/{task.name}/{task.primary_metric}", task.higher_is_better


def _pricing(ctx: SearchContext, space: SearchSpace, in_channels: int) -> tuple[CostModel, CostEstimate]:
    """The spec's cost model and table; without a cost model in the spec, multiply-adds."""
    if ctx.cost_model is None or ctx.cost_table is None:
        return FlopsCost(), ctx.supernet.price(FlopsCost(), space.input_size, in_channels)
    return ctx.cost_model, ctx.cost_table


def measure(ctx: SearchContext, space: SearchSpace, in_channels: int, derived: dict[str | None, Choices],
            sampled: dict[str | None, list[Choices]], config: ParetoConfig) -> list[ParetoRow]:
    """Price and evaluate every candidate on the supernet's shared weights."""
    cost_model, table = _pricing(ctx, space, in_channels)
    background = {k: v for choices in derived.values() for k, v in choices.items()}  # other owners' decisions
    shape = (1, in_channels, space.input_size, space.input_size)
    space_config = space.arch_config()
    todo = candidates(derived, sampled)
    rows = []
    with ctx.progress(sum(len(archs) for archs in todo.values()), "pareto") as advance:
        for owner, archs in todo.items():
            for name, choices in archs:
                full = {**background, **choices}
                bn_batches = itertools.islice(loader(ctx.parts.train_set, config.batch_size, ctx.parts.collate,
                                                     shuffle=True, seed=ctx.parts.seed, stream=_STREAM),
                                              config.bn_batches)
                metrics = evaluate_arch(ctx, full, owner, bn_batches, config.batch_size)
                model = space.build(Arch(space=space.name, config=space_config, choices=choices, task=owner))
                rows.append(ParetoRow(owner, name, choices, table.of_choices(full),
                                      checks.price(cost_model.measure_model(model, shape), cost_model, "measure_model"),
                                      table.unit, {f"val/{k}": v for k, v in metrics.items()}))
                advance()
    return rows


def trained_rows(ctx: SearchContext, space: SearchSpace, in_channels: int, derived: dict[str | None, Choices],
                 evaluated: dict[str | None, list[tuple[str, Choices, dict[str, float]]]]) -> list[ParetoRow]:
    """Price the archs an :class:`~nascore.protocols.Evaluating` strategy trained (``evaluated``); their metrics are
    its own. Per owner the derived arch comes first, named "derived"."""
    cost_model, table = _pricing(ctx, space, in_channels)
    background = {k: v for choices in derived.values() for k, v in choices.items()}
    shape = (1, in_channels, space.input_size, space.input_size)
    space_config = space.arch_config()
    rows = []
    for owner, archs in evaluated.items():
        listed = sorted(archs, key=lambda a: a[1] != derived.get(owner))  # stable: the derived arch first
        for i, (name, choices, metrics) in enumerate(listed):
            model = space.build(Arch(space=space.name, config=space_config, choices=choices, task=owner))
            rows.append(ParetoRow(owner, "derived" if i == 0 and choices == derived.get(owner) else name, choices,
                                  table.of_choices({**background, **choices}),
                                  checks.price(cost_model.measure_model(model, shape), cost_model, "measure_model"),
                                  table.unit, {f"val/{k}": v for k, v in metrics.items()}))
    return rows


def mark_front(rows: list[ParetoRow], tasks: list[Task]) -> None:
    """Set ``on_front`` of every row, each owner's archs ranked by cost and that owner's primary metric."""
    for owner in dict.fromkeys(r.owner for r in rows):
        mine = [r for r in rows if r.owner == owner]
        key, higher_is_better = primary(tasks, owner)
        for row, front in zip(mine, pareto_front([(r.cost, r.metrics[key]) for r in mine], higher_is_better)):
            row.on_front = front


def write_csv(path: Path, rows: list[ParetoRow]) -> None:
    metric_keys = list(dict.fromkeys(k for r in rows for k in r.metrics))
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["owner", "arch", "cost", "measured", "unit", *metric_keys, "on_front", "choices"])
    for r in rows:
        writer.writerow([owner_name(r.owner), r.name, r.cost, r.measured, r.unit,
                         *(r.metrics.get(k, "") for k in metric_keys), int(r.on_front),
                         json.dumps(r.choices, separators=(",", ":"))])
    atomic_write_text(path, text.getvalue())


def write_plot(path: Path, rows: list[ParetoRow], tasks: list[Task]) -> None:
    """One subplot per owner: every arch, the front as a step line, the derived arch marked."""
    owners = list(dict.fromkeys(r.owner for r in rows))
    fig = Figure(figsize=(5.5 * len(owners), 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    for ax, owner in zip(fig.subplots(1, len(owners), squeeze=False)[0], owners):
        mine = [r for r in rows if r.owner == owner]
        key, _ = primary(tasks, owner)
        front = sorted((r for r in mine if r.on_front), key=lambda r: r.cost)
        ax.scatter([r.cost for r in mine], [r.metrics[key] for r in mine], color="tab:blue", label="archs")
        ax.step([r.cost for r in front], [r.metrics[key] for r in front], where="post", color="tab:orange",
                marker="o", label="Pareto front")
        derived = mine[0]
        ax.scatter([derived.cost], [derived.metrics[key]], marker="*", s=220, color="tab:red", zorder=3,
                   label="derived")
        ax.set(title=owner_name(owner), xlabel=f"estimated cost ({derived.unit})", ylabel=key)
        ax.grid(alpha=0.3)
        ax.legend()
    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=100)
    atomic_write_bytes(path, image.getvalue())


def run_pareto(ctx: SearchContext, space: SearchSpace, in_channels: int, strategy: SearchStrategy,
               derived: dict[str | None, Choices], config: ParetoConfig, out_dir: Path, log: Callable[[str], None]
               ) -> list[ParetoRow] | None:
    """The whole step: sample, measure (or, for an :class:`~nascore.protocols.Evaluating` strategy, price the
    archs it trained) beside the strategy's ``derived`` archs (checked), mark the front, write both files; None (logged) when the strategy is neither that nor
    :class:`~nascore.protocols.Sampling`. A pure function of the search's final state and the seed, so a resumed
    run redoes it."""
    torch.manual_seed(epoch_seed(ctx.parts.seed, 1, _STREAM))  # building archs and train-mode forwards draw from it
    decisions, tasks = ctx.supernet.decisions(), [t.name for t in ctx.parts.tasks]
    if isinstance(strategy, Evaluating):
        rows = trained_rows(ctx, space, in_channels, derived,
                            checks.evaluated(strategy.evaluated(), decisions, tasks, strategy))
    elif isinstance(strategy, Sampling):
        sampled = checks.sampled(strategy.sample(config.samples,
                                                 torch.Generator().manual_seed(epoch_seed(ctx.parts.seed, 0, _STREAM))),
                                 decisions, tasks, strategy)
        rows = measure(ctx, space, in_channels, derived, sampled, config)
    else:
        log(f"pareto: skipped: strategy '{strategy.name}' neither samples archs from a search distribution nor "
            "trains them (it is not a nascore.Sampling or nascore.Evaluating)")
        return None
    mark_front(rows, ctx.parts.tasks)
    if distributed.is_main():  # every rank evaluated the same archs alike
        write_plot(out_dir / PLOT_FILE, rows, ctx.parts.tasks)
        write_csv(out_dir / CSV_FILE, rows)
    log(f"pareto: {len(rows)} archs, {sum(r.on_front for r in rows)} on the front -> {CSV_FILE}, {PLOT_FILE}")
    return rows


def summarize(rows: list[ParetoRow]) -> dict[str, Any]:
    """The ``pareto`` entry of summary.json."""
    return {"archs": len(rows), "on_front": sum(r.on_front for r in rows), "files": [CSV_FILE, PLOT_FILE]}
