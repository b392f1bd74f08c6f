"""The ``nascore`` entry point of nascore-detectron2: contributes the ``detectron2`` task and, on import,
registers the nascore backbones in detectron2's ``BACKBONE_REGISTRY``; after a run that trained a detector,
writes it as a detectron2 checkpoint + config; ``nascore export`` of such a run goes through detectron2's own
export path (``deploy.py``)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nascore import hookimpl

from .export import nascore_run_end  # noqa: F401  (hook: exports trained detectors for detectron2)
from .task import Detectron2


@hookimpl
def nascore_tasks():
    return [Detectron2]


@hookimpl
def nascore_exporter(source: str) -> Callable[..., dict[str, Any]] | None:
    """A run directory (or ``*_model.pt``) whose spec's task is ``detectron2``, or a ``*_detectron2.yaml``
    config: exported through detectron2's ``TracingAdapter`` (ONNX or TorchScript)."""
    from .deploy import exporter_for

    return exporter_for(source)
