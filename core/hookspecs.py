"""The plugin contract. A nascore plugin is a module registered under the ``nascore`` entry-point group
that implements some of these hooks (decorate with ``nascore.hookimpl``).

Component hooks return a list of component classes; lifecycle hooks are called on every plugin that
implements them and return nothing.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .costs.base import CostModel
    from .dataset import Dataset
    from .run import RunContext
    from .space import SearchSpace
    from .strategy import SearchStrategy
    from .task import Task

PROJECT = "nascore"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# Component families: each returns the component classes the plugin contributes.
@hookspec
def nascore_search_spaces() -> list[type[SearchSpace]]:
    """Search spaces (subclasses of ``nascore.SearchSpace``)."""


@hookspec
def nascore_search_strategies() -> list[type[SearchStrategy]]:
    """Search strategies (subclasses of ``nascore.SearchStrategy``)."""


@hookspec
def nascore_cost_models() -> list[type[CostModel]]:
    """Cost models (subclasses of ``nascore.CostModel``)."""


@hookspec
def nascore_tasks() -> list[type[Task]]:
    """Tasks: head + loss + metrics (subclasses of ``nascore.Task``)."""


@hookspec
def nascore_datasets() -> list[type[Dataset]]:
    """Datasets (subclasses of ``nascore.Dataset``)."""


# Lifecycle: observers such as loggers, reporters, early stopping.
@hookspec
def nascore_run_start(run: RunContext) -> None:
    """A run (search or training) is about to start its first epoch; ``run.out_dir`` exists."""


@hookspec
def nascore_epoch_end(run: RunContext, epoch: int, metrics: dict[str, Any]) -> None:
    """An epoch ended; ``metrics`` is the row just appended to ``metrics.jsonl``."""


@hookspec
def nascore_run_end(run: RunContext, summary: dict[str, Any]) -> None:
    """A run finished; ``summary`` holds the found arch(s) and final metrics."""
