"""Predictor files: what ``nascore predictor fit`` writes (``torch.save``; read back with ``weights_only=True``).

Format ``nascore-predictor``, version 1, a dict:

- ``predictor``, ``config``: the predictor's name and its Config;
- ``input_size``, ``in_channels``, ``dataset``: the images the archs were measured at and the spec's dataset block
  (``predict`` draws the NASWOT batch from it);
- ``vocab``: the op vocabulary of the graphs (``nascore.performance.graph.OPS``);
- ``tasks``: task name -> ``{"label", "higher_is_better", "state": the predictor's state,
  "baselines": {baseline name: its state}, "fitted": keys of the archs it was fitted on}``.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nascore.errors import NascoreError, SpecError
from nascore.fileio import load_checkpoint, save_checkpoint
from nascore.performance.graph import OPS
from nascore.predictor import Predictor
from nascore.registry import Registry, get_registry
from nascore.spec import validate_component
from nascore.validation import format_validation_error

FORMAT = "nascore-predictor"
VERSION = 1


def arch_key(space: str, choices: dict[str, str]) -> str:
    """A short stable key of an arch (its space and choices), to tell fitted archs from the others."""
    return hashlib.sha1(json.dumps([space, choices], sort_keys=True).encode()).hexdigest()[:16]


class _TaskEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    label: str
    higher_is_better: bool
    state: dict[str, Any]
    baselines: dict[str, dict[str, Any]]
    fitted: list[str]


class _Content(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: str
    version: int
    predictor: str = Field(min_length=1)
    config: dict[str, Any]
    input_size: int = Field(ge=1)
    in_channels: int = Field(ge=1)
    dataset: dict[str, Any]
    vocab: list[str]
    tasks: dict[str, _TaskEntry] = Field(min_length=1)


@dataclass
class TaskPredictors:
    """One task's fitted predictor and baselines."""

    label: str
    higher_is_better: bool
    predictor: Predictor
    baselines: dict[str, Predictor]
    fitted: set[str]


@dataclass
class PredictorFile:
    name: str
    config: dict[str, Any]
    input_size: int
    in_channels: int
    dataset: dict[str, Any]
    tasks: dict[str, TaskPredictors]

    def save(self, path: str | Path) -> None:
        save_checkpoint({
            "format": FORMAT, "version": VERSION, "predictor": self.name, "config": self.config,
            "input_size": self.input_size, "in_channels": self.in_channels, "dataset": self.dataset,
            "vocab": list(OPS),
            "tasks": {task: {"label": t.label, "higher_is_better": t.higher_is_better, "state": t.predictor.state(),
                             "baselines": {name: b.state() for name, b in t.baselines.items()},
                             "fitted": sorted(t.fitted)}
                      for task, t in self.tasks.items()}}, path)

    @classmethod
    def load(cls, path: str | Path, registry: Registry | None = None) -> PredictorFile:
        path = Path(path)
        what = "predictor file"
        data = load_checkpoint(path, what=what)
        if data.get("format") != FORMAT:
            raise NascoreError(f"{what} {path} is not a nascore predictor: its 'format' is {data.get('format')!r}, "
                               f"expected {FORMAT!r} (nascore predictor fit writes one)")
        if data.get("version") != VERSION:
            raise NascoreError(f"{what} {path}: version {data.get('version')!r} is not supported (this nascore reads "
                               f"version {VERSION})")
        try:
            content = _Content.model_validate(data)
        except ValidationError as exc:
            raise NascoreError(f"{what} {path} is not valid:\n"
                               + "\n".join(f"  {line}" for line in format_validation_error(exc, model=_Content))
                               ) from None
        if content.vocab != list(OPS):
            raise NascoreError(f"{what} {path} was fitted on graphs of another op vocabulary ({len(content.vocab)} "
                               f"ops, this nascore has {len(OPS)}); fit it again with this nascore")
        registry = registry or get_registry()
        dataset = dict(content.dataset)
        try:  # what its config and dataset declare is checked before anything is made of them
            validate_component(registry.get("predictor", content.predictor), content.config, "config")
            validate_component(registry.get("dataset", str(dataset.pop("name", ""))), dataset, "dataset")
        except SpecError as exc:
            raise NascoreError(f"{what} {path}: its {exc.source} block is not valid:\n"
                               + "\n".join(f"  {line}" for line in exc.errors)) from None
        except NascoreError as exc:
            raise NascoreError(f"{what} {path}: {exc}") from None

        def make(name: str, config: dict[str, Any] | None, state: dict[str, Any], where: str) -> Predictor:
            try:
                predictor = registry.get("predictor", name)(config)
                predictor.load_state(state)
            except NascoreError as exc:
                raise NascoreError(f"{what} {path}: {where}: {exc}") from None
            except Exception as exc:  # noqa: BLE001 - a predictor's own checks: a wrong key, shape or value
                raise NascoreError(f"{what} {path}: {where} cannot be loaded by predictor '{name}': "
                                   f"{type(exc).__name__}: {exc}") from None
            return predictor

        tasks = {task: TaskPredictors(t.label, t.higher_is_better,
                                      make(content.predictor, content.config, t.state, f"tasks.{task}.state"),
                                      {b: make(b, None, s, f"tasks.{task}.baselines.{b}") for b, s in t.baselines.items()},
                                      set(t.fitted))
                 for task, t in content.tasks.items()}
        return cls(content.predictor, content.config, content.input_size, content.in_channels, content.dataset,
                   tasks)
