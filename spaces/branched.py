"""Branched multi-task networks (BMTAS, Bruggemann et al., BMVC 2020) over any backbone arch that is a chain of
layers (fbnet, fbnetv2 archs; MobileNetV2 is the fbnet space's named arch ``mobilenet_v2``).

The supergraph holds ``T`` copies of every layer after the stem (``T`` = number of tasks). Decision
``<layer>.<task>`` picks the copy task ``task`` runs at that layer. Every task follows its own stream through the
copies (a soft Gumbel-softmax mix of them while searching); two tasks share a layer's computation only when
they picked the same copy and already shared the previous layer, so a discrete arch is a tree: a shared trunk
that splits into branches. The built network keeps one module per group of tasks per layer. Arch files of this
space are written as ``branch_config.json``.
"""
# no `from __future__ import annotations`: the built model's forward must fx-trace and script (features.Backbone)

import copy
from collections.abc import Mapping
from functools import cached_property
from typing import Any, ClassVar

import torch
from pydantic import Field, field_validator, model_validator
from torch import Tensor, nn

from nascore.arch import Arch, resolve_arch
from nascore.errors import NascoreError
from nascore.features import Backbone, Chain
from nascore.hookspecs import hookimpl
from nascore.protocols import MultiTaskBackbone
from nascore.registry import get_registry
from nascore.space import SearchSpace, SpaceConfig
from nascore.spaces.branching import MAX_TASKS, BranchCostTable, canonical, choices_of, config_of, decision, groups_of
from nascore.supernet import ActiveOptions, Decision, Operation, Supernet, input_shapes


class BranchedConfig(SpaceConfig):
    backbone: dict[str, Any] = Field(description="the arch to branch: a named arch (e.g. mobilenet_v2), an arch "
                                                 "file, or the arch itself; stored as the arch")
    tasks: list[str] | None = Field(None, description="the tasks, in order; filled from the spec's tasks")
    input_size: int = Field(224, ge=32, description="input resolution the costs are priced at")

    @field_validator("backbone", mode="before")
    @classmethod
    def _resolve(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return resolve_arch(value).model_dump(mode="json", exclude_none=True)
            except NascoreError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return value
        if not 2 <= len(value) <= MAX_TASKS:
            raise ValueError(f"branching needs 2 to {MAX_TASKS} tasks, got {len(value)}")
        if len(set(value)) != len(value):
            raise ValueError("a task is listed twice")
        return value

    @model_validator(mode="after")
    def _chain(self) -> "BranchedConfig":
        base_chain(self)  # the arch must be valid and build to a chain of layers
        return self


def base_backbone(cfg: BranchedConfig) -> Backbone:
    """The backbone arch built standalone, at the branched space's input size."""
    try:
        arch = Arch.model_validate(cfg.backbone)
    except ValueError as exc:
        raise ValueError(f"not an arch: {exc}") from None
    registry = get_registry()
    try:
        space_cls = registry.get("space", arch.space)
        space = space_cls.for_arch(arch, input_size=cfg.input_size)
        space.check_arch(arch)
    except NascoreError as exc:
        raise ValueError(str(exc)) from None
    return space.build(arch)


def base_chain(cfg: BranchedConfig) -> tuple[Backbone, Chain]:
    backbone = base_backbone(cfg)
    try:
        return backbone, backbone.chain()
    except NotImplementedError as exc:
        raise ValueError(f"space '{cfg.backbone['space']}' cannot be branched: {exc}") from None


def tasks_of(cfg: BranchedConfig) -> list[str]:
    if cfg.tasks is None:
        raise NascoreError("space 'branched' needs its tasks (space.tasks); a spec fills them from its tasks")
    return cfg.tasks


class BranchedSupernet(Supernet, MultiTaskBackbone):
    """Stem, then ``T`` copies of every layer; ``forward`` returns each task's feature levels by task name."""

    def __init__(self, chain: Chain, feature_info: list[dict], tasks: list[str], decisions: list[Decision]):
        super().__init__()
        self.tasks = list(tasks)
        self._decisions = decisions
        self.stem = chain.stem
        self.layer_names = [name for name, _ in chain.layers]
        self.layers = nn.ModuleList(nn.ModuleList(copy.deepcopy(m) for _ in tasks) for _, m in chain.layers)
        self.taps = list(chain.taps)
        self.feature_info = feature_info
        self._active: list[list[ActiveOptions]] | None = None  # per layer, per task

    def decisions(self) -> list[Decision]:
        return self._decisions

    def fixed_modules(self) -> dict[str, nn.Module]:
        return {"stem": self.stem}

    def canonical(self, choices: Mapping[str, str]) -> dict[str, str]:
        """The same tree with copies renumbered so that equal numbers mean shared (``branching.canonical``)."""
        return choices_of(canonical(config_of(choices, self.layer_names, self.tasks)), self.layer_names, self.tasks)

    def apply_mix(self, mix: dict[str, Tensor]) -> None:
        self._active = [[ActiveOptions.of(mix[decision(layer, task)]) for task in self.tasks]
                        for layer in self.layer_names]

    def forward(self, x: Tensor) -> dict[str, list[Tensor]]:
        if self._active is None:
            raise RuntimeError("no mix set for the branched supernet")
        h = self.stem(x)
        streams = [h] * len(self.tasks)
        features: list[list[Tensor]] = [[] for _ in self.tasks]
        for i, (copies, row) in enumerate(zip(self.layers, self._active)):
            # a copy applied to one input is computed once: tasks on a shared stream that pick the same copy
            # share the result, so a one-hot mix computes exactly the branched network's tree
            computed: dict[tuple[int, int], Tensor] = {}

            def run(c: int, inp: Tensor, computed: dict = computed, copies: nn.ModuleList = copies) -> Tensor:
                key = (id(inp), c)  # every input is alive in ``streams`` while this layer runs
                if key not in computed:
                    computed[key] = copies[c](inp)
                return computed[key]

            streams = [active.combine(lambda c, inp=inp: run(c, inp)) for inp, active in zip(streams, row)]
            if i in self.taps:
                for feats, s in zip(features, streams):
                    feats.append(s)
        return dict(zip(self.tasks, features))

    def price(self, cost_model, input_size: int, in_channels: int = 3) -> BranchCostTable:
        """One copy of each layer priced at its input shape (recorded on a fully shared forward) + the stem."""
        if cost_model.reduce != "sum":
            raise NascoreError(f"cost model '{cost_model.name}' combines parts by '{cost_model.reduce}'; branched "
                               "networks are priced as a sum over their branches (flops, latency)")
        ops = {op.module: op.input_shape for op in self.operations(input_size, in_channels)}
        layers = [cost_model.price(copies[0], ops[copies[0]]) for copies in self.layers]
        return BranchCostTable(cost_model.unit, cost_model.price(self.stem, ops[self.stem]) + cost_model.overhead(),
                               torch.tensor(layers, dtype=torch.float64), self.layer_names, self.tasks)

    def operations(self, input_size: int, in_channels: int = 3) -> list[Operation]:
        """The stem and the first copy of every layer at their input shapes (a fully shared forward)."""
        targets, previous = [self.stem] + [copies[0] for copies in self.layers], self._active
        try:
            self.set_choices({d.name: "0" for d in self.decisions()})
            shapes = input_shapes(self, targets, input_size, in_channels)
        finally:
            self._active = previous
        return [Operation(m, shapes[m]) for m in targets]


class BranchedNetwork(Backbone, MultiTaskBackbone):
    """A built branched network: the stem, then per layer one module per task group (a tree)."""

    def __init__(self, chain: Chain, feature_info: list[dict], tasks: list[str], config: list[list[int]]):
        super().__init__()
        self.tasks = list(tasks)
        self.stem = chain.stem
        self.feature_info = feature_info
        self.taps = list(chain.taps)
        groups = groups_of(config, len(tasks))
        self.layers = nn.ModuleList()
        self._parents: list[list[int]] = []
        self._group_of: list[list[int]] = []  # per layer, per task: its group's index
        previous = [tuple(range(len(tasks)))]
        for (_, module), layer_groups in zip(chain.layers, groups):
            self.layers.append(nn.ModuleList(copy.deepcopy(module) for _ in layer_groups))
            self._parents.append([next(i for i, p in enumerate(previous) if g[0] in p) for g in layer_groups])
            self._group_of.append([next(i for i, g in enumerate(layer_groups) if t in g) for t in range(len(tasks))])
            previous = layer_groups
        self.groups = groups

    def forward(self, x: Tensor) -> dict[str, list[Tensor]]:
        outs = [self.stem(x)]
        features: list[list[Tensor]] = [[] for _ in self.tasks]
        for i, (modules, parents) in enumerate(zip(self.layers, self._parents)):
            outs = [m(outs[p]) for m, p in zip(modules, parents)]
            if i in self.taps:
                for t, feats in enumerate(features):
                    feats.append(outs[self._group_of[i][t]])
        return dict(zip(self.tasks, features))


class BranchedSpace(SearchSpace):
    """Where T tasks share and where they branch, layer by layer, over a backbone arch (BMTAS)."""

    name: ClassVar[str] = "branched"
    Config: ClassVar[type[BranchedConfig]] = BranchedConfig
    arch_file: ClassVar[str] = "branch_config.json"

    def _base(self) -> tuple[Backbone, Chain]:
        try:
            return base_chain(self.config)
        except ValueError as exc:
            raise NascoreError(f"space.backbone: {exc}") from None

    @cached_property
    def layer_names(self) -> list[str]:
        return [name for name, _ in self._base()[1].layers]

    def decisions(self) -> list[Decision]:
        tasks = tasks_of(self.config)
        options = tuple(str(c) for c in range(len(tasks)))
        return [Decision(decision(name, task), options, stream=task) for name in self.layer_names for task in tasks]

    def supernet(self) -> BranchedSupernet:
        backbone, chain = self._base()
        return BranchedSupernet(chain, backbone.feature_info, tasks_of(self.config), self.decisions())

    def build(self, arch: Arch) -> BranchedNetwork:
        self.check_arch(arch)
        backbone, chain = self._base()
        tasks = tasks_of(self.config)
        return BranchedNetwork(chain, backbone.feature_info, tasks, config_of(arch.choices, self.layer_names, tasks))

    def reference_archs(self) -> dict[str, dict[str, str]]:
        """Fully task-specific (every task its own copy everywhere) and fully shared choices."""
        tasks, layers = tasks_of(self.config), self.layer_names
        return {"task_specific": {decision(layer, t): str(i) for layer in layers for i, t in enumerate(tasks)},
                "fully_shared": {decision(layer, t): "0" for layer in layers for t in tasks}}

    def describe(self, arch: Arch) -> list[tuple[str, str]]:
        """Per layer, the groups of tasks that share it (``a+b | c``), where the grouping changes."""
        tasks = tasks_of(self.config)
        config = config_of(arch.choices, self.layer_names, tasks)
        rows, previous = [], None
        for name, groups in zip(self.layer_names, groups_of(config, len(tasks))):
            text = " | ".join("+".join(tasks[t] for t in g) for g in groups)
            if text != previous:
                rows.append((f"{name} on", text))
            previous = text
        return rows


@hookimpl
def nascore_search_spaces():
    return [BranchedSpace]
