"""The run spec: YAML -> pydantic. Each component block is validated by that component's ``Config``."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (
    BaseModel,
    Discriminator,
    TypeAdapter,
    ValidationError,
    create_model,
)

from .component import Component, ComponentConfig
from .errors import NascoreError, SpecError
from .fileio import MAX_DEPTH, SPEC_MAX_BYTES, load_user_yaml, parse_user_yaml
from .objective import Multiplicative, Objective
from .registry import Registry, get_registry
from .spec_model import BLOCKS, ComponentSpec, RunSpec, SpecModel, _Block, _CostBlock
from .validation import format_validation_error


def read_spec_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    data = load_user_yaml(path, "spec file", SPEC_MAX_BYTES)
    if data is None:
        raise NascoreError(f"spec file {path} is empty; expected a mapping of keys (seed, dataset, tasks, space, "
                           "strategy, ...)")
    if not isinstance(data, dict):
        raise NascoreError(f"spec file {path} must hold a mapping of keys (seed, dataset, tasks, space, "
                           f"strategy, ...), not a {type(data).__name__}")
    return data


def spec_changes(before: Any, after: Any, limit: int = 4) -> list[str]:
    """What differs between two resolved specs (``RunSpec.dump()``), one line per changed field (at most ``limit``,
    then how many more): ``strategy.epochs: 2, now 3``."""
    found: list[str] = []

    def short(value: Any) -> str:
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in dict.fromkeys([*a, *b]):
                where = f"{path}.{key}" if path else str(key)
                if key not in b:
                    found.append(f"{where}: {short(a[key])}, now not set")
                elif key not in a:
                    found.append(f"{where}: not set, now {short(b[key])}")
                else:
                    walk(a[key], b[key], where)
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b)):
                walk(x, y, f"{path}[{i}]")
        elif a != b:
            found.append(f"{path or '<root>'}: {short(a)}, now {short(b)}")

    walk(before, after, "")
    return found[:limit] + ([f"{len(found) - limit} more"] if len(found) > limit else [])


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML; list items by index: ``tasks.0.x=1``)."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key or "" in key.split("."):
            raise NascoreError(f"--set {item!r}: expected KEY=VALUE, e.g. strategy.epochs=3")
        parts = key.split(".")
        if len(parts) > MAX_DEPTH:
            raise NascoreError(f"--set {item[:60]!r}...: the key is {len(parts)} levels deep; expected at most "
                               f"{MAX_DEPTH}")
        parsed = parse_user_yaml(value, f"--set {item!r}: value")
        node: Any = data
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdecimal() or len(part) > 18 or int(part) >= len(node):
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
        raise SpecError(path, format_validation_error(exc, path, model=cls.Config)) from None


def validate_options(cls: type[Component], options: dict[str, Any]) -> ComponentConfig:
    """A component's Config from options given on the command line (``--set``); a NascoreError lists every problem
    and names the component."""
    try:
        return validate_component(cls, options, "")
    except SpecError as exc:
        raise NascoreError(f"options of {cls.kind} '{cls.name}' (--set) are not valid:\n"
                           + "\n".join(f"  {line}" for line in exc.errors)) from None


def validate_spec(data: dict[str, Any], registry: Registry | None = None, source: str = "<spec>") -> RunSpec:
    """Validate a spec mapping; raises SpecError listing every problem with its field path.

    Structural errors (unknown keys, wrong types) and the errors of every component block are reported
    together, so one ``nascore validate`` shows everything there is to fix.
    """
    registry = registry or get_registry()
    if not isinstance(data, dict):
        raise SpecError(source, [f"<root>: expected a mapping of keys (seed, dataset, tasks, space, strategy, ...), "
                                 f"got a {type(data).__name__}"])
    errors: list[str] = []
    model: SpecModel | None = None
    try:
        model = SpecModel.model_validate(data)
    except ValidationError as exc:
        errors.extend(format_validation_error(exc, model=SpecModel))

    def resolve(kind: str, block: Any, path: str) -> ComponentSpec | None:
        # blocks that are not a mapping with a str name were reported by the structural check above
        if not isinstance(block, dict) or not isinstance(block.get("name"), str):
            return None
        name = block["name"]
        options = {k: v for k, v in block.items() if k != "name" and not (kind == "cost" and k == "loss")}
        try:
            cls = registry.get(kind, name)
        except NascoreError as exc:
            errors.append(f"{path}.name: {exc}")
            return None
        try:
            config = validate_component(cls, options, path)
        except SpecError as exc:
            errors.extend(exc.errors)
            return None
        return ComponentSpec(kind, name, cls, config)

    dataset = resolve("dataset", data.get("dataset"), "dataset")
    raw_tasks = data.get("tasks")
    raw_tasks = raw_tasks if isinstance(raw_tasks, list) else []
    tasks = [resolve("task", t, f"tasks[{i}]") for i, t in enumerate(raw_tasks)]
    space = resolve("space", data.get("space"), "space")
    strategy = resolve("strategy", data.get("strategy"), "strategy")
    cost = resolve("cost", data.get("cost"), "cost") if data.get("cost") is not None else None
    names = [t["name"] for t in raw_tasks if isinstance(t, dict) and isinstance(t.get("name"), str)]
    for name in sorted({n for n in names if names.count(n) > 1}):
        errors.append(f"tasks: task '{name}' is listed twice")
    if model is not None:  # top-level keys that plugins serve, e.g. timm_models (nascore.deploy.timm_models)
        for problems in registry.hook.nascore_spec_loaded(spec=model, registry=registry):
            errors.extend(problems)
    if errors or model is None:
        raise SpecError(source, _in_spec_order(errors))
    _fill_space_tasks(space, names, errors)
    if errors:
        raise SpecError(source, _in_spec_order(errors))
    settings = {key: getattr(model, key) for key in SpecModel.model_fields if key not in BLOCKS}
    spec = RunSpec(dataset=dataset, tasks=tasks, space=space, strategy=strategy, cost=cost,
                   objective=model.cost.loss if model.cost else Multiplicative(), source=source, raw=data, **settings)
    _check_compatibility(spec, errors)
    if errors:
        raise SpecError(source, errors)
    return spec


def _fill_space_tasks(space: ComponentSpec | None, names: list[str], errors: list[str]) -> None:
    """A space whose Config has a ``tasks`` field (one built per task set, e.g. ``branched``) gets the spec's task
    names when it leaves the field out; when it sets them, they must be the spec's."""
    if space is None or "tasks" not in type(space.config).model_fields:
        return
    given = space.config.tasks
    if given is None:
        try:
            space.config = validate_component(space.cls, {**space.config.model_dump(mode="json", by_alias=True),
                                                          "tasks": names}, "space")
        except SpecError as exc:
            errors.extend(exc.errors)
    elif sorted(given) != sorted(names):
        errors.append(f"space.tasks: {given} are not the spec's tasks {names}; list the same tasks or leave "
                      "space.tasks out")


def _in_spec_order(errors: list[str]) -> list[str]:
    """Errors sorted by their top-level key in spec order (stable within one key)."""
    order = list(SpecModel.model_fields)

    def key(line: str) -> int:
        head = re.split(r"[.\[:]", line, maxsplit=1)[0]
        return order.index(head) if head in order else len(order)

    return sorted(errors, key=key)


def _check_compatibility(spec: RunSpec, errors: list[str]) -> None:
    """Cross-block checks: every task's target must be in the dataset."""
    try:
        info = spec.dataset.create().info()
    except NascoreError as exc:
        errors.append(f"dataset: {exc}")
        return
    except Exception as exc:  # a dataset plugin that cannot read its data
        errors.append(f"dataset: dataset '{spec.dataset.name}' cannot be opened: {type(exc).__name__}: {exc}")
        return
    for i, task in enumerate(spec.tasks):
        if task.cls.target not in info.targets:
            errors.append(f"tasks[{i}].name: task '{task.name}' needs '{task.cls.target}' targets, which dataset "
                          f"'{spec.dataset.name}' does not have (it has: {', '.join(sorted(info.targets))})")


def load_spec(path: str | Path, overrides: list[str] = (), registry: Registry | None = None) -> RunSpec:
    data = apply_overrides(read_spec_file(path), list(overrides))
    return validate_spec(data, registry, source=str(path))


def spec_json_schema(registry: Registry | None = None, problems: list[str] | None = None) -> dict[str, Any]:
    """JSON Schema of the spec: ``SpecModel`` with every installed component's Config as a tagged alternative of
    its block.

    A component whose Config cannot be expressed as JSON Schema is left out and described in ``problems``.
    """
    registry = registry or get_registry()
    problems = problems if problems is not None else []

    def models(kind: str) -> list[type[BaseModel]]:
        out = []
        for name in registry.names(kind):
            cls = registry.get(kind, name)
            extra = {"loss": (Objective, _CostBlock.model_fields["loss"])} if kind == "cost" else {}
            try:
                model = create_model(f"{kind}_{name}".replace("-", "_"), __base__=cls.Config,
                                     __doc__=(cls.__doc__ or "").strip() or None,
                                     name=(Literal[name], ...), **extra)
                TypeAdapter(model).json_schema()
            except Exception as exc:  # a plugin's Config must not take the whole schema down
                source = registry.entries[kind][name].source
                problems.append(f"{kind} '{name}' ({source}) left out: its Config has no JSON Schema: "
                                f"{type(exc).__name__}: {exc}")
                continue
            out.append(model)
        return out

    def union(kind: str) -> Any:
        found = models(kind)
        if not found:
            return _Block
        return found[0] if len(found) == 1 else Annotated[Union[tuple(found)], Discriminator("name")]

    # each of BLOCKS's types becomes its components' union; the field keeps the rest (default, min_length, ...)
    blocks = {"dataset": union("dataset"), "tasks": list[union("task")], "space": union("space"),
              "strategy": union("strategy"), "cost": Optional[union("cost")]}
    spec_model = create_model("RunSpec", __base__=SpecModel,
                              **{key: (annotation, SpecModel.model_fields[key]) for key, annotation in blocks.items()})
    schema = TypeAdapter(spec_model).json_schema()
    # predictors are configured by `nascore predictor fit --predictor NAME --set KEY=VALUE`, not by a spec block:
    # their Configs are listed as definitions (predictor_<name>) that the spec's own schema does not reference
    defs = schema.setdefault("$defs", {})
    for model in models("predictor"):
        one = TypeAdapter(model).json_schema(ref_template="#/$defs/{model}")
        defs.update(one.pop("$defs", {}))
        defs[model.__name__] = one
    return schema
