"""The ``nascore`` entry point of nascore-segmentation: the ``semantic-segmentation`` task and the
``mask-folder`` dataset."""
from __future__ import annotations

from nascore import hookimpl

from .data import MaskFolder
from .task import SemanticSegmentation


@hookimpl
def nascore_tasks():
    return [SemanticSegmentation]


@hookimpl
def nascore_datasets():
    return [MaskFolder]
