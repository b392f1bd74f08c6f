"""nascore-detectron2: nascore archs as detectron2 backbones, and a ``detectron2`` task for nascore specs."""
from __future__ import annotations

import warnings

try:
    import detectron2  # noqa: F401
except ImportError as exc:  # detectron2 is not on the package index: say how to get it
    raise ImportError("nascore-detectron2 needs detectron2, which is not on the package index: install it from "
                      "source, e.g. `git clone https://github.com/facebookresearch/detectron2 && pip install "
                      "--no-build-isolation -e detectron2` (see the plugin's README)") from exc

with warnings.catch_warnings():  # detectron2's layers call torch.jit.script at import, which torch deprecates
    warnings.filterwarnings("ignore", message=r"`torch.jit.script` is deprecated", category=FutureWarning)
    import detectron2.modeling  # noqa: F401

from .backbone import (
    ConfigError,
    NascoreBackbone,
    add_nascore_config,
    build_features_model,
    build_nascore_backbone,
    build_nascore_features_fpn,
    build_nascore_fpn_backbone,
)
from .config import detection_config
from .task import Detectron2

__all__ = ["ConfigError", "Detectron2", "NascoreBackbone", "add_nascore_config", "build_features_model", "build_nascore_backbone",
           "build_nascore_features_fpn", "build_nascore_fpn_backbone", "detection_config"]
