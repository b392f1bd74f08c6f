"""The ``tensorboard`` observer (``log: [tensorboard]`` in a spec): TensorBoard event files in RUN/tensorboard/.

Every numeric value of each ``metrics.jsonl`` row becomes a scalar ``<phase>/<key>`` at step ``epoch`` (e.g.
``search/entropy``, ``train/val/classification/top1``); the run's summary adds ``summary/<owner>/<result>/<key>``
scalars at step 0. A plugin of lifecycle hooks only, registered like any other (the ``nascore`` entry
point ``tensorboard``); runs whose spec does not list it are left alone. Each epoch opens, writes and closes its
own event file, so a killed run leaves complete files and a resumed one adds to them (TensorBoard shows the last
value written for a step). Needs the ``tensorboard`` package (``pip install 'nascore[tensorboard]'``); a spec that
asks for it without the package is refused when it is validated.
"""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nascore import distributed
from nascore.hookspecs import hookimpl

if TYPE_CHECKING:
    from nascore.hookspecs import RegistryView, RunView
    from nascore.spec_model import SpecModel

NAME = "tensorboard"
LOG_DIR = "tensorboard"


def available() -> bool:
    """Whether the tensorboard package (which ``torch.utils.tensorboard`` writes through) is installed."""
    return importlib.util.find_spec("tensorboard") is not None


def _wanted(run: RunView) -> bool:
    return NAME in run.spec.log and distributed.is_main()  # under torchrun rank 0 alone writes


def scalars(row: dict[str, Any], prefix: str) -> dict[str, float]:
    """``prefix/key`` -> value for every finite number in ``row`` (booleans, text and nested values skipped)."""
    return {f"{prefix}/{k}": float(v) for k, v in row.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            and k not in ("phase", "epoch")}


def _write(out_dir: Path, values: dict[str, float], step: int) -> None:
    from torch.utils.tensorboard import SummaryWriter  # TensorBoard: only with log: [tensorboard]

    with SummaryWriter(log_dir=str(out_dir / LOG_DIR)) as writer:
        for tag, value in values.items():
            writer.add_scalar(tag, value, global_step=step)


@hookimpl
def nascore_spec_loaded(spec: SpecModel, registry: RegistryView) -> list[str]:
    if NAME in spec.log and not available():
        return [f"log: '{NAME}' needs the tensorboard package, which is not installed; install it with "
                "pip install 'nascore[tensorboard]' (or pip install tensorboard), or remove it from log"]
    return []


@hookimpl
def nascore_run_start(run: RunView) -> None:
    if _wanted(run):
        (run.out_dir / LOG_DIR).mkdir(exist_ok=True)


@hookimpl
def nascore_epoch_end(run: RunView, epoch: int, metrics: dict[str, Any]) -> None:
    if _wanted(run):
        _write(run.out_dir, scalars(metrics, str(metrics.get("phase", "run"))), epoch)


@hookimpl
def nascore_run_end(run: RunView, summary: dict[str, Any]) -> None:
    if not _wanted(run):
        return
    values: dict[str, float] = {}
    for owner, entry in (summary.get("archs") or {}).items():
        for result in ("search", "train"):
            if isinstance(entry, dict) and isinstance(entry.get(result), dict):
                values.update(scalars(entry[result], f"summary/{owner}/{result}"))
    if values:
        _write(run.out_dir, values, 0)
