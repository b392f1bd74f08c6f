"""Contracts between component families, beside the hooks that contribute the components (``hookspecs.py``).

Each family's base class says what every component of it implements: ``SearchSpace`` and ``Supernet``
(``space.py``, ``supernet.py``), ``SearchStrategy`` (``strategy.py``), ``CostModel`` (``costs/base.py``),
``Task`` (``task.py``), ``Dataset`` (``dataset.py``). The classes here are what one family relies on in another
family's objects. A component takes one on by subclassing it, and nascore checks ``isinstance``; it never
looks for attributes to learn what a component can do.

- :class:`CostEstimate`: the cost of a space's archs under one cost model (what a supernet's ``price`` makes
  and strategies optimise);
- :class:`MultiTaskBackbone`: a backbone that computes features per task (a branched network);
- :class:`Sampling`: a strategy that can draw archs from its search distribution;
- :class:`Evaluating`: a strategy that trains the archs it considers on their own (``random``, ``predictor``);
- :class:`Exporting`: a dataset that can write itself to files;
- :class:`PricedOperation`: a module a space's blocks mark as one priced unit (what cost models cache by);
- :class:`GraphOperation`: a module a space marks as one node of the computational graph
  (``nascore.performance.graph``).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # annotations only: importing the contracts costs no torch
    import torch
    from torch import Tensor

Choices = dict[str, str]  # decision name -> option label: one discrete arch


class CostEstimate(ABC):
    """The cost of a space's architectures, priced by one cost model. A table holds the decisions it prices.

    Made by ``Supernet.price(cost_model, input_size, in_channels)``: by default a :class:`nascore.CostTable`
    (a sum, or max, of per-option prices); a space whose cost is not one overrides ``price`` and returns its
    own subclass (FBNetV2: ``nascore.spaces.shape_cost.ShapeCostTable``; ``branched``:
    ``nascore.spaces.branching.BranchCostTable``). The runner hands it to the strategy as ``SearchContext.cost_table``.
    """

    #: the cost model's unit, e.g. "MACs", "ms", "bytes"
    unit: str

    @abstractmethod
    def expected(self, mix: Mapping[str, Tensor]) -> Tensor:
        """The differentiable expected cost under a mix of every decision's options.

        :param mix: decision name -> that decision's mix, a vector over its options (soft probabilities, or
            one-hot), for every decision of the table.
        :return: a scalar tensor on the mix's device, differentiable in it.

        Called by gradient strategies in each architecture step (``dnas``, ``bmtas``: the cost term of the
        loss) and for the ``expected_cost`` metric.
        """

    @abstractmethod
    def of_choices(self, choices: Mapping[str, str]) -> float:
        """The cost of one discrete arch: ``expected`` under its one-hot mix.

        :param choices: decision name -> option label, for every decision of the table (extra keys are ignored).
        :return: the cost, in ``unit``.

        Called by strategies (the derived arch's ``derived_cost``, ``reinforce``'s reward), the Pareto step and
        latency calibration.
        """

    @abstractmethod
    def bounds(self) -> tuple[float, float]:
        """The cheapest and the dearest cost an arch of the space can have.

        Called by the runner before a search, to check that a ``cost.loss`` budget is reachable.
        """


class MultiTaskBackbone:
    """A backbone (a supernet or a built model) that computes features per task: ``forward(x)`` returns
    ``{task name: feature levels}``, each list as ``feature_info`` describes it (a branched multi-task network).

    ``nascore.Network`` hands each task's head its own levels; ``build_network`` checks that the spec's tasks
    are ``tasks``; ``nascore info`` counts such a backbone without heads; ``bmtas`` searches a supernet that is
    one, whose decisions each route one task's stream (``Decision.stream``).
    """

    #: the tasks it computes features for, in order
    tasks: list[str]


class Sampling(ABC):
    """A search strategy that can draw archs from its final search distribution; declared by subclassing,
    ``class MyStrategy(SearchStrategy, Sampling)``. Strategies that are not one skip the Pareto step with a
    note."""

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator) -> dict[str | None, list[Choices]]:
        """``n`` archs per owner, drawn from the final search distribution.

        :param n: archs to draw per owner (repeats allowed; the Pareto step drops them).
        :param generator: the only source of randomness, so the draw is deterministic given it.
        :return: per owner (the owners of ``derive()``: a task name, or ``nascore.SHARED``), a list of
            choices, each naming an option of every decision the owner's arch has.

        Called by the Pareto step after the search (``pareto.samples`` archs), besides the derived arch.
        """


class Distributing(ABC):
    """A search strategy that learns a distribution over the options of every decision (DNAS's and BMTAS's
    architecture parameters, REINFORCE's policies); declared by subclassing, ``class MyStrategy(SearchStrategy,
    Distributing)``. The search records it after every epoch, and ``nascore report`` draws how it evolved."""

    @abstractmethod
    def distributions(self) -> dict[str, dict[str, list[float]]]:
        """The current distribution, in groups drawn together.

        :return: per group (e.g. ``"shared"`` or a task's name: whose arch the decisions make), per decision, the
            probability of each of its options, in the order of ``Decision.options``.

        Called after every search epoch (and so must be cheap and leave the strategy's state as it is).
        """


class Evaluating(ABC):
    """A search strategy that trains each arch it considers on its own, from scratch, and so knows their validation
    metrics without a supernet (``random``, ``predictor``); declared by subclassing,
    ``class MyStrategy(SearchStrategy, Evaluating)``. The Pareto step then reports these archs as they were
    trained, instead of sampling archs and evaluating them on the supernet's shared weights."""

    @abstractmethod
    def evaluated(self) -> dict[str | None, list[tuple[str, Choices, dict[str, float]]]]:
        """The archs trained so far, per owner (the owners of ``derive()``).

        :return: per owner, ``(name, choices, metrics)`` for each arch trained, in the order they were trained:
            a name for the Pareto table (e.g. ``"arch_3"``), the arch's choices, and its validation metrics keyed
            ``"<task>/<metric>"`` (as ``nascore.evaluate_arch`` returns them). An arch whose training diverged is
            left out.

        Called by the Pareto step after the search.
        """


class Exporting(ABC):
    """A dataset that can write itself to files (``nascore data export``); declared by subclassing,
    ``class MyDataset(Dataset, Exporting)``."""

    @abstractmethod
    def export(self, out_dir: str | Path) -> dict[str, Path]:
        """Write every split under ``out_dir``.

        :param out_dir: the folder to write into (created if missing).
        :return: split name -> the file or folder written for it (printed by ``nascore data``).
        """


@runtime_checkable
class PricedOperation(Protocol):
    """A module a space marks as one priced unit: ``op_key`` names its configuration, and two modules with one key
    cost the same at one input shape (cost models cache by key and shape, latency tables store it). A Protocol,
    not a base class: spaces mark the plain torch modules they build (``block.op_key = "fbnet:k3_e6:..."``), and
    the mark travels with copies of the module. Cost models price an unmarked module by its ``repr``."""

    op_key: str


@runtime_checkable
class GraphOperation(Protocol):
    """A module a space marks as one node of the computational graph (``nascore graph``, AIO-P's predictor input):
    the tracer keeps it whole instead of tracing its forward, for a module whose forward ``torch.fx`` cannot trace
    (it iterates over a shape) or whose meaning its primitive ops hide (a strided slice that subsamples).
    A Protocol, like :class:`PricedOperation`: the module only needs the method."""

    def graph_node(self) -> tuple[str, dict]:
        """``(op, attrs)``: an op of ``nascore.performance.graph.VOCAB`` and any of the attrs ``kernel`` and
        ``stride`` (pairs of ints), ``groups`` (int), ``bias`` (bool) that describe it."""
