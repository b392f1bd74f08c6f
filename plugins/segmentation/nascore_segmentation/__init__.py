"""nascore-segmentation: segmentation-models-pytorch decoders over nascore encoders, as a nascore task."""
from __future__ import annotations

try:
    import segmentation_models_pytorch  # noqa: F401
except ImportError as exc:
    raise ImportError("nascore-segmentation needs segmentation-models-pytorch: pip install "
                      "segmentation-models-pytorch") from exc

from .data import MaskFolder
from .task import SemanticSegmentation, SMPHead

__all__ = ["MaskFolder", "SMPHead", "SemanticSegmentation"]
