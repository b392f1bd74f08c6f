"""The ``semantic-segmentation`` task: any segmentation-models-pytorch decoder (Unet, FPN, DeepLabV3+, ...)
over the feature levels of a nascore backbone or supernet, SMP's losses, mean IoU."""
from __future__ import annotations

from typing import Any, ClassVar, Literal

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from timm.models import register_model
from torch import Tensor, nn

from nascore.component import ComponentConfig
from nascore.dataset import DataInfo
from nascore.features import PreLogits
from nascore.tasks.segmentation import Segmentation

DECODERS = ("Unet", "UnetPlusPlus", "FPN", "PSPNet", "DeepLabV3", "DeepLabV3Plus", "Linknet", "MAnet", "PAN",
            "UPerNet")
LOSSES = ("ce", "dice", "focal", "jaccard", "lovasz", "tversky")


class _LevelsStub(nn.Module):
    """A weightless timm ``features_only`` model with given levels: lets SMP size a decoder for them."""

    def __init__(self, levels: list[tuple[int, int]]):
        super().__init__()
        from timm.models import FeatureInfo

        self.feature_info = FeatureInfo([{"num_chs": c, "reduction": r, "module": f"level{i}"}
                                         for i, (c, r) in enumerate(levels)], tuple(range(len(levels))))

    def forward(self, x: Tensor) -> list[Tensor]:  # pragma: no cover - never run
        raise RuntimeError("shape stub")


def _stub_name(levels: list[tuple[int, int]]) -> str:
    """Register (once) a timm name for a stub with these levels, for SMP's ``tu-`` encoders."""
    import timm

    name = "nascore_levels_" + "_".join(f"{c}x{r}" for c, r in levels)
    if not timm.is_model(name):
        def create(pretrained: bool = False, **kwargs: Any) -> nn.Module:
            return _LevelsStub(levels)

        create.__name__ = create.__qualname__ = name
        create.__module__ = __name__
        register_model(create)
    return name


class SMPHead(nn.Module):
    """An SMP model's decoder and segmentation head fed with the backbone's levels at strides 2..32.

    SMP decoders take ``[input, stride 2, 4, 8, 16, 32]``; none reads the input's values (Segformer only its
    size), so a zero tensor stands in. DeepLabV3+ expects an encoder at output stride 16 (dilated): its ASPP
    gets the stride-32 level upsampled x2. Logits are resized to the input size where a decoder stops short.
    """

    def __init__(self, feature_info: list[dict], num_classes: int, decoder: str, decoder_args: dict[str, Any],
                 in_channels: int = 3):
        super().__init__()
        by_stride = {f["reduction"]: i for i, f in enumerate(feature_info)}  # deepest level per stride
        missing = [r for r in (2, 4, 8, 16, 32) if r not in by_stride]
        if missing:
            raise ValueError(f"decoder {decoder}: the backbone has no feature level at stride(s) {missing}; SMP "
                             "decoders need strides 2, 4, 8, 16, 32")
        self.index = [by_stride[r] for r in (2, 4, 8, 16, 32)]
        levels = [(feature_info[i]["num_chs"], r) for i, r in zip(self.index, (2, 4, 8, 16, 32))]
        self.in_channels, self.dilated = in_channels, decoder == "DeepLabV3Plus"
        extra = {"encoder_output_stride": 16} if self.dilated else {}
        model = smp.create_model(decoder, encoder_name="tu-" + _stub_name(levels), encoder_weights=None,
                                 in_channels=in_channels, classes=num_classes, **extra, **decoder_args)
        self.decoder, self.segmentation_head = model.decoder, model.segmentation_head

    def forward(self, features: list[Tensor]) -> Tensor:
        levels = [features[i] for i in self.index]
        n, _, h, w = levels[0].shape
        size = (h * 2, w * 2)
        if self.dilated:
            levels[-1] = F.interpolate(levels[-1], scale_factor=2, mode="bilinear", align_corners=False)
        logits = self.segmentation_head(self.decoder([levels[0].new_zeros(n, self.in_channels, *size), *levels]))
        if logits.shape[-2:] != size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits


class LossTerm(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Literal[LOSSES]  # type: ignore[valid-type]
    weight: float = Field(1.0, gt=0)


def make_loss(term: LossTerm, ignore_index: int | None) -> nn.Module:
    kwargs = {"ignore_index": ignore_index} if ignore_index is not None else {}
    if term.name == "ce":
        return nn.CrossEntropyLoss(ignore_index=-100 if ignore_index is None else ignore_index)
    cls = {"dice": smp.losses.DiceLoss, "focal": smp.losses.FocalLoss, "jaccard": smp.losses.JaccardLoss,
           "lovasz": smp.losses.LovaszLoss, "tversky": smp.losses.TverskyLoss}[term.name]
    if term.name == "jaccard":  # SMP's Jaccard loss has no ignore_index
        kwargs = {}
    return cls(smp.losses.MULTICLASS_MODE, **kwargs)


class SemanticSegmentation(Segmentation):
    """Semantic segmentation with a segmentation-models-pytorch decoder over any nascore backbone (built arch
    or supernet); a weighted sum of SMP losses; mean IoU (torchmetrics)."""

    name: ClassVar[str] = "semantic-segmentation"

    class Config(ComponentConfig):
        num_classes: int | None = Field(None, ge=2, description="default: the dataset's semantic classes")
        decoder: str = Field("Unet", description=f"an SMP architecture: {', '.join(DECODERS)}")
        decoder_args: dict[str, Any] = Field(default_factory=dict,
                                             description="keyword arguments of the SMP model, e.g. "
                                                         "decoder_channels")
        loss: list[LossTerm] = Field(default_factory=lambda: [LossTerm(name="ce")], min_length=1)
        ignore_index: int | None = Field(None, description="a mask value excluded from losses and mIoU")
        loss_weight: float = Field(1.0, gt=0, description="fixed weight of this task's loss among the tasks")

        @field_validator("decoder")
        @classmethod
        def _known(cls, decoder: str) -> str:
            if decoder not in DECODERS:
                raise ValueError(f"expected one of {', '.join(DECODERS)}, got {decoder!r}")
            return decoder

    def build_head(self, feature_info: list[dict], pre_logits: PreLogits | None, data: DataInfo | None
                   ) -> nn.Module:
        self._num_classes = self.num_classes(data)
        self._losses = [(t.weight, make_loss(t, self.config.ignore_index)) for t in self.config.loss]
        return SMPHead(feature_info, self._num_classes, self.config.decoder, self.config.decoder_args,
                       data.in_channels if data is not None else 3)

    def criterion(self, logits: Tensor, mask: Tensor) -> Tensor:
        return sum(w * fn(logits, mask) for w, fn in self._losses)

    def metrics(self, device: torch.device):
        from torchmetrics.classification import MulticlassJaccardIndex

        return MulticlassJaccardIndex(num_classes=self._num_classes, average="macro",
                                      ignore_index=self.config.ignore_index).to(device)
