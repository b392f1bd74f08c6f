"""A trained supernet kept as a file that later searches reuse ("one supernet, many budgets"): the ``oneshot``
strategy writes ``<run>/supernet.pt`` once its supernet has trained, and a search with ``strategy.supernet_file``
(``nascore run SPEC --supernet FILE``) starts from it at the evolution, with its own cost model, budget, latency
table, seed and evolution settings.

The file holds the network's state (the supernet and the tasks' heads) and what the weights are valid for: the
spec's ``space`` block (every field, the options that shape only the supernet too), its ``dataset`` block but for
where files are kept (``Dataset.locations``: the BatchNorm statistics of a path are re-estimated on that data, and
the scores are measured on its val split) and its ``tasks``. Another space, data, input size or task list is
refused, the first field that differs named.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import torch

from nascore.dataset import Dataset
from nascore.errors import NascoreError
from nascore.fileio import load_checkpoint, save_checkpoint
from nascore.rundir import SPEC_FILE
from nascore.space import SearchSpace
from nascore.spec import load_spec
from nascore.spec_model import RunSpec
from nascore.task import Task

FORMAT, VERSION = "nascore-supernet", 1


class Blocks(Protocol):
    """The components a supernet's weights are valid for (``nascore.parts.Parts`` has them, built)."""

    space: SearchSpace
    dataset: Dataset
    tasks: Sequence[Task]


class SpecBlocks(NamedTuple):
    space: SearchSpace
    dataset: Dataset
    tasks: list[Task]


def spec_blocks(spec: RunSpec) -> SpecBlocks:
    """The space, dataset and tasks of ``spec``, created but not loaded (no data is read or generated)."""
    return SpecBlocks(spec.space.create(), spec.dataset.create(), [t.create() for t in spec.tasks])


def identity(blocks: Blocks) -> dict[str, Any]:
    """What a supernet's weights are valid for: the space, dataset and tasks blocks, as the spec dumps them."""
    def block(c: Any) -> dict[str, Any]:
        return {"name": c.name, **c.config.model_dump(mode="json", by_alias=True)}

    return {"space": block(blocks.space), "dataset": blocks.dataset.without_locations(block(blocks.dataset)),
            "tasks": [block(t) for t in blocks.tasks]}


def save_supernet(path: Path, parts: Blocks, network: dict[str, torch.Tensor], trained: dict[str, Any]) -> None:
    """Write the supernet file (atomically): ``network``'s state, the identity of ``parts``, and ``trained`` (how the
    supernet was trained, for the reader's log)."""
    save_checkpoint({"format": FORMAT, "version": VERSION, "identity": identity(parts), "trained": trained,
                     "network": network}, path)


def load_supernet(path: Path, parts: Blocks, device: torch.device | str = "cpu"
                  ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The network state (on ``device``) and the training record of the supernet file ``path``, if it was trained
    for the space, data and tasks of ``parts``; a NascoreError names the first field that differs."""
    return checked_file(load_checkpoint(path, map_location=device, what="supernet file"), path, parts)


def checked_file(checkpoint: dict[str, Any], path: Path, parts: Blocks
                 ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """:func:`load_supernet` of a checkpoint already read from ``path``."""
    if checkpoint.get("format") != FORMAT or checkpoint.get("version") != VERSION:
        raise NascoreError(f"supernet file {path} is not a {FORMAT} file of version {VERSION} (expected the "
                           "supernet.pt a oneshot search writes into its run directory)")
    theirs, ours = checkpoint.get("identity"), identity(parts)
    if not isinstance(theirs, dict) or not all(isinstance(theirs.get(k), t) for k, t in
                                               (("space", dict), ("dataset", dict), ("tasks", list))):
        raise NascoreError(f"supernet file {path}: its identity (space, dataset, tasks) is missing or malformed")
    theirs = {**theirs, "dataset": parts.dataset.without_locations(theirs["dataset"])}  # files of before 2026-12-06
    for block in ("space", "dataset"):
        for key in sorted(set(theirs[block]) | set(ours[block]), key=lambda k: (k != "name", k)):  # name first
            if theirs[block].get(key) != ours[block].get(key):
                raise NascoreError(f"supernet file {path} was trained with {block}.{key} = "
                                   f"{theirs[block].get(key)!r}; the spec has {ours[block].get(key)!r} (a supernet "
                                   "is reused only for the space, data and tasks it was trained on)")
    if theirs["tasks"] != ours["tasks"]:
        names = ", ".join(str(t.get("name")) if isinstance(t, dict) else "?" for t in theirs["tasks"])
        raise NascoreError(f"supernet file {path} was trained for tasks [{names}] (with their settings); the spec's "
                           f"tasks are [{', '.join(t['name'] for t in ours['tasks'])}]")
    network, trained = checkpoint.get("network"), checkpoint.get("trained")
    if not isinstance(network, dict) or not all(isinstance(v, torch.Tensor) for v in network.values()):
        raise NascoreError(f"supernet file {path}: 'network' is not a state dict of tensors")
    return network, trained if isinstance(trained, dict) else {}


def from_search_checkpoint(checkpoint: dict[str, Any], path: Path) -> dict[str, Any]:
    """A run's search checkpoint (``RUN/checkpoints/search.pt``, read from ``path``) as a supernet file: its network
    (the supernet and the tasks' heads, as the search left them: DNAS's after its last epoch) and the identity of
    the run's spec (``RUN/spec.yaml``)."""
    run = path.parent.parent
    state = checkpoint.get("state")
    if path.name != "search.pt" or not isinstance(state, dict) or not (run / SPEC_FILE).is_file():
        raise NascoreError(f"{path} is not a supernet: expected the supernet.pt of a bench supernet-rank or "
                           f"pseudo-label folder or of a oneshot run, or a run's checkpoints/search.pt (its "
                           f"{SPEC_FILE} two folders up)")
    return {"format": FORMAT, "version": VERSION, "identity": identity(spec_blocks(load_spec(run / SPEC_FILE))),
            "trained": {"run": str(run), "search_epochs": checkpoint.get("epoch", -1) + 1
                        if isinstance(checkpoint.get("epoch"), int) else None},
            "network": state.get("network")}
