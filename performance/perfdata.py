"""Performance datasets: archs of one space, each trained on each task of a spec, with what a predictor learns
from (``nascore bench collect`` writes them; ``nascore predictor`` reads them).

A dataset is a folder::

    DIR/dataset.json          the manifest, written first
    DIR/archs/<index>.json    one record per arch (index zero-padded to 5 digits), written atomically when the
                              arch has finished every task

``dataset.json`` (format ``nascore-performance-dataset``, version 1):

- ``seed``: the draw's seed; ``archs``: how many archs the plan holds;
- ``space``: ``{"name", "config"}`` of the space drawn from; ``input_size``, ``in_channels``: the images';
- ``tasks``: task name -> ``{"label": the metric key that is the label (``val/<task>/<primary metric>``),
  "higher_is_better": bool}``;
- ``spec``: the spec as given (its ``train`` block is the training budget);
- ``plan``: the archs to collect, in order: ``{"index", "choices"}`` (drawn stratified over multiply-adds).

``archs/<index>.json`` (format ``nascore-performance-record``, version 1):

- ``index``; ``arch``: an arch file's contents (``space``, ``config``, ``choices``);
- ``macs``, ``params``: of the arch's backbone at ``input_size``; ``latency_ms``: the spec's latency cost model's
  estimate for the arch, or null without one;
- ``proxies``: zero-cost proxies of the untrained backbone (``nascore.performance.proxies``; null where not finite);
- ``graph``: the backbone's computational graph (``ops``, ``features``: rows of
  ``nascore.performance.graph.NUMERIC_FEATURES``, ``edges``: ``[sources, targets]``);
- ``tasks``: task name -> ``{"metrics": every validation metric after training, "label": the manifest's label
  metric (null if not finite), "seconds": training time, "note": why there is no label (training diverged), that
  the label is a pseudo-label (``nascore bench pseudo-label``, ``nascore.performance.pseudolabel``), or null}``.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nascore.errors import NascoreError
from nascore.fileio import MiB, atomic_write_text, load_user_json
from nascore.validation import format_validation_error

from .graph import NUMERIC_FEATURES

DATASET_FORMAT = "nascore-performance-dataset"
RECORD_FORMAT = "nascore-performance-record"
VERSION = 1
MANIFEST = "dataset.json"
RECORDS = "archs"
MANIFEST_MAX_BYTES = 64 * MiB
RECORD_MAX_BYTES = 16 * MiB


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SpaceRef(_Strict):
    name: str = Field(min_length=1)
    config: dict[str, Any]


class TaskLabel(_Strict):
    label: str = Field(min_length=1)
    higher_is_better: bool


class PlanEntry(_Strict):
    index: int = Field(ge=0)
    choices: dict[str, str]


class Manifest(_Strict):
    format: Literal["nascore-performance-dataset"]
    version: Literal[1]
    seed: int
    archs: int = Field(ge=1)
    space: SpaceRef
    input_size: int = Field(ge=1)
    in_channels: int = Field(ge=1)
    tasks: dict[str, TaskLabel] = Field(min_length=1)
    spec: dict[str, Any]
    plan: list[PlanEntry]


class Graph(_Strict):
    ops: list[str] = Field(min_length=1)
    features: list[list[float]]
    edges: list[list[int]] = Field(min_length=2, max_length=2)


class TaskResult(_Strict):
    metrics: dict[str, float | None]
    label: float | None
    seconds: float = Field(ge=0)
    note: str | None = None


class ArchRef(_Strict):
    space: str
    config: dict[str, Any]
    choices: dict[str, str]


class Record(_Strict):
    format: Literal["nascore-performance-record"]
    version: Literal[1]
    index: int = Field(ge=0)
    arch: ArchRef
    macs: int = Field(ge=0)
    params: int = Field(ge=0)
    latency_ms: float | None = None
    proxies: dict[str, float | None]
    graph: Graph
    tasks: dict[str, TaskResult]


def finite(value: float | None) -> float | None:
    """``value``, or None where it is not a finite number (JSON has no NaN or infinity)."""
    return value if value is not None and math.isfinite(value) else None


def _validated(model: type[BaseModel], data: Any, path: Path, what: str, expected_format: str) -> Any:
    if isinstance(data, dict) and data.get("format") != expected_format:
        raise NascoreError(f"{path} is not a {what}: its 'format' is {data.get('format')!r}, expected "
                           f"{expected_format!r}")
    if isinstance(data, dict) and data.get("version") != VERSION:
        raise NascoreError(f"{path}: {what} version {data.get('version')!r} is not supported (this nascore reads "
                           f"version {VERSION})")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise NascoreError(f"{path} is not a valid {what}:\n"
                           + "\n".join(f"  {line}" for line in format_validation_error(exc, model=model))) from None


def _check_graph(graph: Graph, path: Path) -> None:

    n = len(graph.ops)
    if len(graph.features) != n or any(len(row) != len(NUMERIC_FEATURES) for row in graph.features):
        raise NascoreError(f"{path}: graph.features must hold {n} rows of {len(NUMERIC_FEATURES)} numbers "
                           f"({', '.join(NUMERIC_FEATURES)})")
    sources, targets = graph.edges
    if len(sources) != len(targets) or any(not 0 <= i < n for i in (*sources, *targets)):
        raise NascoreError(f"{path}: graph.edges must be two lists of equal length of node indices below {n}")


def write_manifest(out_dir: Path, manifest: Manifest) -> None:
    atomic_write_text(out_dir / MANIFEST, manifest.model_dump_json(indent=1) + "\n")


def record_path(out_dir: Path, index: int) -> Path:
    return out_dir / RECORDS / f"{index:05d}.json"


def write_record(out_dir: Path, record: Record) -> None:
    path = record_path(out_dir, record.index)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, record.model_dump_json() + "\n")


def read_manifest(directory: str | Path) -> Manifest:
    directory = Path(directory)
    if not directory.is_dir():
        raise NascoreError(f"performance dataset {directory} "
                           + ("is not a folder" if os.path.lexists(directory) else "does not exist")
                           + f"; expected a folder holding {MANIFEST} (written by nascore bench collect)")
    path = directory / MANIFEST
    manifest = _validated(Manifest, load_user_json(path, "performance dataset manifest", MANIFEST_MAX_BYTES, finite=True),
                          path, "performance dataset manifest", DATASET_FORMAT)
    if [e.index for e in manifest.plan] != list(range(len(manifest.plan))) or len(manifest.plan) != manifest.archs:
        raise NascoreError(f"{path}: plan must list archs 0..{manifest.archs - 1} in order")
    return manifest


def read_record(path: Path, manifest: Manifest) -> Record:
    record = _validated(Record, load_user_json(path, "performance record", RECORD_MAX_BYTES, finite=True), path,
                        "performance record", RECORD_FORMAT)
    if record.index >= manifest.archs or path.name != f"{record.index:05d}.json":
        raise NascoreError(f"{path}: record index {record.index} does not match its file name or the plan "
                           f"({manifest.archs} archs)")
    if record.arch.choices != manifest.plan[record.index].choices:
        raise NascoreError(f"{path}: its arch is not arch {record.index} of the plan in {MANIFEST}")
    unknown = sorted(set(record.tasks) - set(manifest.tasks))
    if unknown:
        raise NascoreError(f"{path}: tasks {', '.join(unknown)} are not tasks of the dataset "
                           f"({', '.join(manifest.tasks)})")
    _check_graph(record.graph, path)
    return record


@dataclass
class PerfDataset:
    """A performance dataset read from ``directory``: its manifest and every finished record, in plan order."""
    directory: Path
    manifest: Manifest
    records: list[Record]

    @classmethod
    def read(cls, directory: str | Path) -> PerfDataset:
        directory = Path(directory)
        manifest = read_manifest(directory)
        records = []
        for entry in manifest.plan:
            path = record_path(directory, entry.index)
            if path.exists() or path.is_symlink():
                records.append(read_record(path, manifest))
        return cls(directory, manifest, records)
