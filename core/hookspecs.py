"""The plugin contract. A nascore plugin is a module registered under the ``nascore`` entry-point group
that implements some of these hooks (decorate with ``nascore.hookimpl``).

Component hooks return a list of component classes; lifecycle hooks are called on every plugin that
implements them and return nothing; integration hooks let a plugin publish the components to another library or
act on a spec (nascore's timm integration, ``nascore.deploy.timm_models``, does both). What components of different
families rely on in each other (a cost estimate, a multi-task backbone, optional capabilities such as sampling) is
declared in ``protocols.py``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:  # annotations only; the hooks name protocols and the spec's structure, so no module here imports
    # the registry or the runner that call the hooks
    import torch

    from .component import Component
    from .dataset import DataInfo, Dataset
    from .progress import Reporter
    from .spec_model import RunSpec, SpecModel
    from .task import Task

PROJECT = "nascore"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class PartsView(Protocol):
    """A run's parts, built once from its spec, as the lifecycle hooks get them: ``nascore.Parts`` is one."""

    device: torch.device
    dataset: Dataset
    info: DataInfo
    train_set: torch.utils.data.Dataset
    val_set: torch.utils.data.Dataset
    tasks: list[Task]
    seed: int


class RunView(Protocol):
    """A run (search or training) as the lifecycle hooks get it: ``nascore.rundir.Run`` is one."""

    #: the validated spec
    spec: RunSpec
    #: the parts built once from the spec
    parts: PartsView
    #: the run directory: exists, holds the resolved spec
    out_dir: Path
    reporter: Reporter
    #: whether the run continues an interrupted one
    resume: bool


class RegistryView(Protocol):
    """The loaded registry as the integration hooks get it: ``nascore.registry.Registry`` is one."""

    def names(self, kind: str) -> list[str]:
        """The names of the components of ``kind`` (``space``, ``strategy``, ...)."""

    def get(self, kind: str, name: str) -> type[Component]:
        """The component class of ``kind`` named ``name``; a NascoreError naming what there is when none is."""


@dataclass
class Int8Result:
    """What an int8 export measured: the calibration, the metrics and latency of the float32 and int8 files."""

    calibration_images: int
    metrics: dict[str, tuple[float, float, float]]  # key -> (eager, onnx float32, onnx int8), validation split
    latency_ms: tuple[float, float]  # (float32, int8) median, ONNX Runtime, batch 1, one thread
    max_abs_diff: float  # int8 file against eager PyTorch on the check batch
    #: groups of nodes (kinds, blocks) kept in float32 because int8 was slower for them on this machine: -> nodes
    kept_float: dict[str, int] = field(default_factory=dict)
    #: the latency of every node quantized (the recipe the search started from), ms
    all_int8_ms: float | None = None


@dataclass
class ExportResult:
    """What ``nascore export`` wrote and checked (``nascore.deploy.export.export``, a ``nascore_exporter``'s
    function)."""

    out: Path
    #: the file's output names
    outputs: list[str]
    #: the batch sizes the file was run at and compared with eager PyTorch
    batches: list[int]
    #: the largest absolute difference from eager PyTorch, and relative: over ``max(1, |eager|)``
    max_abs_diff: float
    relative: float
    #: what was exported, for the user (e.g. ``runs/x/train_model.pt (trained weights, heads: ...)``)
    described: str
    #: what the file takes, in words (e.g. ``3x32x32``)
    input: str
    #: the int8 file's measurements when the export quantized (``--int8``)
    int8: Int8Result | None = None


# Component families: each returns the component classes the plugin contributes. The registry calls each once
# per plugin when it loads the plugins (the first ``get_registry()``); a class is found by its ``name``
# (``space: {name: ...}`` in a spec) and configured by its ``Config``. A hook that raises or returns anything
# else is reported as a broken plugin (``nascore plugins``).
@hookspec
def nascore_search_spaces() -> list[type[Component]]:
    """Search spaces.

    :return: subclasses of ``nascore.SearchSpace``; their ``supernet()`` is a ``nascore.Supernet`` whose
        ``price`` returns a ``nascore.CostEstimate``.
    """


@hookspec
def nascore_search_strategies() -> list[type[Component]]:
    """Search strategies.

    :return: subclasses of ``nascore.SearchStrategy``, and of ``nascore.Sampling`` for those that can draw archs
        for the Pareto step (or of ``nascore.Evaluating`` for those that train the archs they consider).
    """


@hookspec
def nascore_cost_models() -> list[type[Component]]:
    """Cost models.

    :return: subclasses of ``nascore.CostModel``.
    """


@hookspec
def nascore_tasks() -> list[type[Component]]:
    """Tasks: head + loss + metrics.

    :return: subclasses of ``nascore.Task``.
    """


@hookspec
def nascore_datasets() -> list[type[Component]]:
    """Datasets.

    :return: subclasses of ``nascore.Dataset``, and of ``nascore.Exporting`` for those ``nascore data export``
        can write to files.
    """


@hookspec
def nascore_predictors() -> list[type[Component]]:
    """Performance predictors (``nascore predictor fit --predictor NAME``).

    :return: subclasses of ``nascore.Predictor``: fitted on a performance dataset's samples of one task
        (``nascore.Sample``: graph, multiply-adds, params, zero-cost proxies, label), they predict the label of
        archs they have not seen.
    """


# Lifecycle: observers such as loggers, reporters, early stopping. Called by the runner (``nascore run``,
# ``nascore train``) on every plugin that implements them; under torchrun on every rank, alike (an observer that
# writes files checks ``nascore.distributed.is_main()``).
@hookspec
def nascore_run_start(run: RunView) -> None:
    """A run (search or training) is about to start its first epoch.

    :param run: the run (:class:`RunView`): its validated ``spec``, ``out_dir``, ``device``, ``reporter``,
        ``resume``, and the parts built once from the spec: ``dataset``, ``info``, ``train_set``, ``val_set``,
        ``tasks``.
    """


@hookspec
def nascore_epoch_end(run: RunView, epoch: int, metrics: dict[str, Any]) -> None:
    """An epoch of a search or a training ended, after its checkpoint was written.

    :param run: the run, as for ``nascore_run_start``.
    :param epoch: the epoch's index, from 0 in each phase.
    :param metrics: the row just appended to ``metrics.jsonl`` (its ``phase``, ``epoch`` and the strategy's or
        trainer's metrics).
    """


@hookspec
def nascore_run_end(run: RunView, summary: dict[str, Any]) -> None:
    """A run finished, after ``summary.json`` was written.

    :param run: the run, as for ``nascore_run_start``.
    :param summary: the contents of ``summary.json``: the found arch(s) with their metrics, and the Pareto
        step's and trainings' results when they ran.
    """


# Integrations: a plugin that publishes the components to another library, or acts on a spec's top-level values.
@hookspec
def nascore_registry_loaded(registry: RegistryView) -> None:
    """The registry has loaded every plugin and indexed their components.

    Called once per registry, by ``Registry.from_entry_points`` (the first ``get_registry()``), after the
    component hooks. A plugin that publishes components to another library does it here, or once that library
    is imported (``wrapt.register_post_import_hook``): loading the plugins must stay cheap, ``nascore
    validate`` does it. A hook that raises is reported as a broken plugin; the others still run.

    :param registry: the loaded registry (:class:`RegistryView`; ``nascore.registry.Registry``, whose ``problems``
        takes what fails later).
    """


@hookspec
def nascore_spec_loaded(spec: SpecModel, registry: RegistryView) -> list[str]:
    """A spec's structure was validated: the plugin acts on its top-level values (e.g. ``timm_models``).

    Called by ``validate_spec`` (``nascore validate``, ``run``, ``train``, ...) on every plugin that implements
    it; the problems it returns are reported with the spec's other errors, and the spec is refused.

    :param spec: the spec's top-level values (``nascore.spec_model.SpecModel``); component blocks are not resolved yet.
    :param registry: the registry the spec is validated with.
    :return: the problems, each ``"<field path>: <message>"`` (e.g. ``"timm_models.my_net: ..."``); [] if none.
    """


@hookspec(firstresult=True)
def nascore_exporter(source: str) -> Callable[..., ExportResult] | None:
    """``nascore export SOURCE`` for a source this plugin owns (e.g. a run directory whose task is the plugin's),
    whose model nascore's own exporter cannot write. Called before nascore loads SOURCE; the first plugin that
    answers exports it. Decide cheaply (look at paths and the run's spec.yaml), load nothing yet.

    :param source: the SOURCE argument as given: a run directory, a file, or an arch name.
    :return: None for a source the plugin does not own; else a function
        ``export(fmt: str, out: str | Path, input_size: int | None, batch: int, dynamic_batch: bool,
        calibration_batches: int | None) -> ExportResult`` (``calibration_batches``: int8 with that many
        calibration batches, None for float32) that writes the file, runs it back and compares it with eager
        PyTorch (a NascoreError and nothing written on any failure, an unsupported ``fmt`` or option included),
        and returns what it wrote and checked (:class:`ExportResult`).
    """
