"""The run spec: YAML -> pydantic. Each component block is validated by that component's ``Config``."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model

from .component import Component, ComponentConfig
from .costs.objective import Multiplicative, Objective
from .errors import NascoreError, SpecError
from .registry import Registry, get_registry, unknown_name_message
from .validation import format_validation_error

#: spec key -> component kind, in spec order
BLOCKS = {"dataset": "dataset", "tasks": "task", "space": "space", "strategy": "strategy", "cost": "cost"}


class TrainConfig(BaseModel):
    """Final training of a found arch from scratch (``train:`` block, ``nascore train``)."""

    model_config = ConfigDict(extra="forbid")
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(4e-5, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"


class _Block(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str


class _CostBlock(_Block):
    loss: Objective = Field(default_factory=Multiplicative)


class _SpecModel(BaseModel):
    """Structure of a spec; component blocks are checked against their own Config afterwards."""

    model_config = ConfigDict(extra="forbid")
    seed: int = 0
    device: str = "cpu"
    dataset: _Block
    tasks: list[_Block] = Field(min_length=1)
    space: _Block
    strategy: _Block
    cost: _CostBlock | None = None
    train: TrainConfig | None = None


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
    seed: int
    device: str
    dataset: ComponentSpec
    tasks: list[ComponentSpec]
    space: ComponentSpec
    strategy: ComponentSpec
    cost: ComponentSpec | None
    objective: Any  # one of the Objective forms
    train: TrainConfig | None
    source: str = "<spec>"
    raw: dict[str, Any] = field(default_factory=dict)

    def dump(self) -> dict[str, Any]:
        """The resolved spec: every default filled in, reloadable with ``load_spec``."""
        out: dict[str, Any] = {"seed": self.seed, "device": self.device, "dataset": self.dataset.dump(),
                               "tasks": [t.dump() for t in self.tasks], "space": self.space.dump(),
                               "strategy": self.strategy.dump()}
        if self.cost is not None:
            out["cost"] = {**self.cost.dump(), "loss": self.objective.model_dump(mode="json", by_alias=True)}
        if self.train is not None:
            out["train"] = self.train.model_dump(mode="json")
        return out


def read_spec_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise NascoreError(f"spec file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise NascoreError(f"spec file {path} cannot be read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise NascoreError(f"spec file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise NascoreError(f"spec file {path} must hold a mapping of keys (seed, dataset, tasks, space, "
                           f"strategy, ...), not a {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML; list items by index: ``tasks.0.x=1``)."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise NascoreError(f"--set {item!r}: expected KEY=VALUE, e.g. strategy.epochs=3")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise NascoreError(f"--set {item!r}: value is not valid YAML: {exc}") from None
        node: Any = data
        parts = key.split(".")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise NascoreError(f"--set {item!r}: '{'.'.join(parts[:i])}' is a list of {len(node)}; "
                                       f"'{part}' is not an index in it")
                part = int(part)
            elif not isinstance(node, dict):
                raise NascoreError(f"--set {item!r}: '{'.'.join(parts[:i])}' is not a mapping")
            if last:
                node[part] = parsed
            else:
                if isinstance(node, dict) and not isinstance(node.get(part), (dict, list)):
                    node[part] = {}
                node = node[part]
    return data


def validate_component(cls: type[Component], options: dict[str, Any], path: str) -> ComponentConfig:
    """A component's Config from a spec block's options; SpecError lines are prefixed with ``path``."""
    try:
        return cls.Config.model_validate(options)
    except ValidationError as exc:
        raise SpecError(path, format_validation_error(exc, path)) from None


def validate_spec(data: dict[str, Any], registry: Registry | None = None, source: str = "<spec>") -> RunSpec:
    """Validate a spec mapping; raises SpecError listing every problem with its field path."""
    registry = registry or get_registry()
    try:
        model = _SpecModel.model_validate(data)
    except ValidationError as exc:
        raise SpecError(source, format_validation_error(exc)) from None
    errors: list[str] = []

    def resolve(kind: str, block: _Block, path: str) -> ComponentSpec | None:
        options = dict(block.model_extra or {})
        try:
            cls = registry.get(kind, block.name)
        except NascoreError as exc:
            errors.append(f"{path}.name: {exc}")
            return None
        try:
            config = validate_component(cls, options, path)
        except SpecError as exc:
            errors.extend(exc.errors)
            return None
        return ComponentSpec(kind, block.name, cls, config)

    dataset = resolve("dataset", model.dataset, "dataset")
    tasks = [resolve("task", t, f"tasks[{i}]") for i, t in enumerate(model.tasks)]
    space = resolve("space", model.space, "space")
    strategy = resolve("strategy", model.strategy, "strategy")
    cost = resolve("cost", model.cost, "cost") if model.cost else None
    names = [t.name for t in model.tasks]
    for name in {n for n in names if names.count(n) > 1}:
        errors.append(f"tasks: task '{name}' is listed twice")
    if errors:
        raise SpecError(source, errors)
    spec = RunSpec(model.seed, model.device, dataset, tasks, space, strategy, cost,
                   model.cost.loss if model.cost else Multiplicative(), model.train, source, data)
    _check_compatibility(spec, errors)
    if errors:
        raise SpecError(source, errors)
    return spec


def _check_compatibility(spec: RunSpec, errors: list[str]) -> None:
    """Cross-block checks: every task's target must be in the dataset."""
    info = spec.dataset.create().info()
    for i, task in enumerate(spec.tasks):
        if task.cls.target not in info.targets:
            errors.append(f"tasks[{i}].name: task '{task.name}' needs '{task.cls.target}' targets, which dataset "
                          f"'{spec.dataset.name}' does not have (it has: {', '.join(sorted(info.targets))})")


def load_spec(path: str | Path, overrides: list[str] = (), registry: Registry | None = None) -> RunSpec:
    data = apply_overrides(read_spec_file(path), list(overrides))
    return validate_spec(data, registry, source=str(path))


def spec_json_schema(registry: Registry | None = None) -> dict[str, Any]:
    """JSON Schema of the spec with every installed component's Config as a tagged alternative."""
    registry = registry or get_registry()

    def union(kind: str) -> Any:
        models = []
        for name in registry.names(kind):
            cls = registry.get(kind, name)
            extra = {"loss": (Objective, Field(default_factory=Multiplicative))} if kind == "cost" else {}
            models.append(create_model(f"{kind}_{name}".replace("-", "_"), __base__=cls.Config,
                                       __doc__=(cls.__doc__ or "").strip() or None,
                                       name=(Literal[name], ...), **extra))
        if not models:
            return _Block
        return models[0] if len(models) == 1 else Annotated[Union[tuple(models)], Field(discriminator="name")]

    spec_model = create_model(
        "RunSpec", __config__=ConfigDict(extra="forbid"),
        seed=(int, 0), device=(str, "cpu"),
        dataset=(union("dataset"), ...), tasks=(list[union("task")], ...), space=(union("space"), ...),
        strategy=(union("strategy"), ...), cost=(Optional[union("cost")], None), train=(TrainConfig | None, None))
    return TypeAdapter(spec_model).json_schema()
