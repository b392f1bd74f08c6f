"""The spec's structure: its top-level keys (``SpecModel``), their blocks, and a validated spec (``RunSpec``). Reading
and validating a spec file, which needs the registry of components, is ``nascore.spec``'s."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import to_jsonable_python

from .component import Component, ComponentConfig, TorchDevice
from .objective import Multiplicative, Objective


class TrainBudget(BaseModel):
    """How one arch is trained from scratch: the ``train:`` block, and the archs that ``random`` and ``predictor``
    searches train."""

    model_config = ConfigDict(extra="forbid")
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(4e-5, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"


class TrainConfig(TrainBudget):
    """Final training of a found arch from scratch (``train:`` block, ``nascore train``)."""

    #: also train the space's reference archs with the same budget (branched: fully shared, fully task-specific)
    references: bool = True


class ParetoConfig(BaseModel):
    """The Pareto step after the search (``pareto:`` block): the derived arch and ``samples`` archs drawn
    from the strategy's final distribution, priced and evaluated on the supernet's shared weights."""

    model_config = ConfigDict(extra="forbid")
    samples: int = Field(8, ge=0, description="archs drawn per owner besides the derived one; 0 disables the step")
    bn_batches: int = Field(4, ge=1, description="training batches that re-estimate BatchNorm statistics for "
                                                 "each arch before it is evaluated")
    batch_size: int = Field(64, ge=1)


class DistributedConfig(BaseModel):
    """Options of a run launched by torchrun (``distributed:`` block); ignored in one process."""

    model_config = ConfigDict(extra="forbid")
    sync_batchnorm: bool = Field(False, description="BatchNorm statistics over the global batch (SyncBatchNorm) "
                                                    "instead of each rank's share; CUDA (NCCL) only")


class AmpConfig(BaseModel):
    """``amp:`` block: mixed precision of every training step of the run (search and training)."""

    model_config = ConfigDict(extra="forbid")
    dtype: Literal["bf16", "fp16"] = Field(description="autocast dtype: bf16 (no loss scaling) or fp16 (with a "
                                                       "GradScaler; one process only)")


class _Block(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str


class _CostBlock(_Block):
    loss: Objective = Field(default_factory=Multiplicative)

    @field_validator("loss", mode="before")
    @classmethod
    def _default_form(cls, value: Any) -> Any:
        """``form`` defaults to multiplicative (FBNet's), as when ``loss`` is left out altogether."""
        if isinstance(value, dict) and "form" not in value:
            return {"form": "multiplicative", **value}
        return value


class SpecModel(BaseModel):
    """The spec: its top-level keys, their types and defaults. The one description of a spec: ``RunSpec`` is this with
    the component blocks resolved, and ``nascore schema`` this with each block's components' Configs. Component
    blocks (``BLOCKS``) are checked against their own Config afterwards."""

    model_config = ConfigDict(extra="forbid")
    seed: int = 0
    device: TorchDevice = "cpu"
    dataset: _Block
    tasks: list[_Block] = Field(min_length=1)
    space: _Block
    strategy: _Block
    cost: _CostBlock | None = None
    train: TrainConfig | None = None
    pareto: ParetoConfig = Field(default_factory=ParetoConfig)
    #: timm model name -> arch file or named arch, registered with timm when the spec is loaded (so that e.g.
    #: a segmentation-models-pytorch encoder "tu-<name>" can use a found arch)
    timm_models: dict[str, str] = Field(default_factory=dict)
    #: observers that log the run as it goes (``nascore.observers``): ``tensorboard`` writes TensorBoard event files
    #: into RUN/tensorboard/ (needs the ``tensorboard`` package: ``pip install 'nascore[tensorboard]'``)
    log: list[Literal["tensorboard"]] = Field(default_factory=list)
    #: torchrun options (``distributed.sync_batchnorm``); see the README's "Running on several GPUs or machines"
    distributed: DistributedConfig | None = None
    #: mixed precision of the training steps (``torch.autocast``, and a GradScaler for fp16); see nascore.precision
    amp: AmpConfig | None = None
    #: NHWC memory format for the networks and image batches of training steps
    channels_last: bool = False


#: the component blocks of a spec: top-level key -> component kind
BLOCKS = {"dataset": "dataset", "tasks": "task", "space": "space", "strategy": "strategy", "cost": "cost"}


@dataclass
class ComponentSpec:
    kind: str
    name: str
    cls: type[Component]
    config: ComponentConfig

    def create(self) -> Any:
        return self.cls(self.config)

    def dump(self) -> dict[str, Any]:
        return {"name": self.name, **self.config.model_dump(mode="json", by_alias=True)}


@dataclass
class RunSpec:
    """A validated spec: ``SpecModel``'s values, each component block resolved to its class and Config."""

    seed: int
    device: str
    dataset: ComponentSpec
    tasks: list[ComponentSpec]
    space: ComponentSpec
    strategy: ComponentSpec
    cost: ComponentSpec | None
    objective: Any  # one of the Objective forms
    train: TrainConfig | None
    pareto: ParetoConfig = field(default_factory=ParetoConfig)
    source: str = "<spec>"
    raw: dict[str, Any] = field(default_factory=dict)
    timm_models: dict[str, str] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    distributed: DistributedConfig | None = None
    amp: AmpConfig | None = None
    channels_last: bool = False

    def dump(self) -> dict[str, Any]:
        """The resolved spec: every default filled in, reloadable with ``load_spec``; keys in ``SpecModel``'s order,
        those left unset (cost, train, distributed, amp: None; timm_models, log: empty; channels_last: false) left
        out."""
        cost = None if self.cost is None else {**self.cost.dump(),
                                               "loss": self.objective.model_dump(mode="json", by_alias=True)}
        blocks = {"dataset": self.dataset.dump(), "tasks": [t.dump() for t in self.tasks], "space": self.space.dump(),
                  "strategy": self.strategy.dump(), "cost": cost}
        out = {key: blocks[key] if key in BLOCKS else to_jsonable_python(getattr(self, key))
               for key in SpecModel.model_fields}
        return {key: value for key, value in out.items() if value not in (None, {}, []) and value is not False}
