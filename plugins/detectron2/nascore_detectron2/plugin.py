"""The ``nascore`` entry point of nascore-detectron2: contributes the ``detectron2`` task and, on import,
registers the nascore backbones in detectron2's ``BACKBONE_REGISTRY``; after a run that trained a detector,
writes it as a detectron2 checkpoint + config."""
from __future__ import annotations

from nascore import hookimpl

from .export import nascore_run_end  # noqa: F401  (hook: exports trained detectors for detectron2)
from .task import Detectron2


@hookimpl
def nascore_tasks():
    return [Detectron2]
