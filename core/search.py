"""The search of a run: the spec's strategy searches the run's space (its epochs checkpointed), the derived
arch(s) are saved, then the Pareto step."""
from __future__ import annotations

from typing import Any

import torch

from . import checks, distributed
from .arch import Arch
from .errors import NascoreError
from .pareto import ParetoRow, run_pareto
from .protocols import Distributing
from .rundir import PhaseLoop, Run, arch_file_name
from .strategy import SearchContext, owner_name
from .task import build_network


def search(run: Run) -> tuple[dict[str | None, Arch], list[ParetoRow] | None, dict[str, Any]]:
    """Search, save the derived arch(s), then (unless ``pareto.samples`` is 0) the Pareto step; returns the
    archs by owner, the Pareto rows (None when the step did not run) and the last search epoch's metrics row."""
    parts = run.parts
    spec, space = run.spec, parts.space
    torch.manual_seed(spec.seed)
    supernet = space.supernet()
    cost_model = spec.cost.cls(spec.cost.config, progress=run.reporter.progress) if spec.cost else None
    table = None
    if cost_model is not None:
        table = supernet.price(cost_model, space.input_size, parts.info.in_channels)
        problem = spec.objective.check_bounds(*table.bounds(), table.unit)
        if problem:
            raise NascoreError(problem)
    precision = parts.precision()
    network = precision.network(distributed.sync_batchnorm(
        build_network(supernet, parts.tasks, parts.info).to(parts.device), spec))
    strategy = spec.strategy.create()
    ctx = SearchContext(parts, network, supernet, cost_model, table, spec.objective if table is not None else None,
                        run.reporter.progress, run.executor, precision, run.out_dir)
    strategy.setup(ctx)
    decisions, task_names = supernet.decisions(), [t.name for t in parts.tasks]
    # the strategy's state after the last epoch, checked before that epoch's row and checkpoint are written
    state: dict[str, Any] = {}
    # a Distributing strategy's distribution after every epoch, kept in the checkpoint (so a resumed run has the
    # epochs before it) for nascore report
    history: list[dict[str, Any]] = []

    def run_epoch(epoch: int) -> dict[str, Any]:
        row = checks.metrics_row(strategy.run_epoch(epoch), strategy, "run_epoch")
        state["strategy"] = checks.checkpoint_state(strategy.state_dict(), strategy)
        if isinstance(strategy, Distributing):
            groups = checks.checkpoint_state(strategy.distributions(), strategy, "distributions")
            history.append({"epoch": epoch, "groups": groups})
        return row

    def set_state(s: dict[str, Any]) -> None:
        network.load_state_dict(s["network"])
        strategy.load_state_dict(s["strategy"])
        history[:] = s.get("decisions", [])
        precision.load_state_dict(s.get("precision", {}))

    loop = PhaseLoop(run, "search", strategy.epochs,
                     lambda: {"network": network.state_dict(), "strategy": state["strategy"],
                              "decisions": history, "precision": precision.state_dict()}, set_state)
    last = loop(run_epoch)[-1]
    config = space.arch_config()
    derived = checks.derived(strategy.derive(), decisions, task_names, strategy)
    archs = {owner: Arch(space=space.name, config=config, choices=choices, task=owner)
             for owner, choices in derived.items()}
    distributed.check_same({owner_name(owner): arch.choices for owner, arch in archs.items()}, "the derived arch")
    for owner, arch in archs.items():
        if distributed.is_main():
            arch.save(run.out_dir / arch_file_name(owner, space))
    rows = None
    if spec.pareto.samples:
        rows = run_pareto(ctx, space, parts.info.in_channels, strategy, derived, spec.pareto, run.out_dir,
                          run.reporter.log)
    return archs, rows, last
