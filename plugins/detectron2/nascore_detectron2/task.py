"""The ``detectron2`` task: Faster R-CNN, RetinaNet or Mask R-CNN (detectron2's own meta-architectures,
proposal generators, ROI heads and losses, with an FPN) over a nascore backbone or supernet, scored with
detectron2's ``COCOEvaluator`` (box AP, and mask AP for Mask R-CNN)."""
from __future__ import annotations

import contextlib
import io
import itertools
import tempfile
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import COCOEvaluator
from detectron2.modeling import GeneralizedRCNN, build_model
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import BitMasks, Boxes, BoxMode, ImageList, Instances
from detectron2.utils.events import _CURRENT_STORAGE_STACK, EventStorage
from pycocotools import mask as mask_util
from pydantic import Field
from torch import Tensor, nn

from nascore import ComponentConfig, Task
from nascore.dataset import DataInfo
from nascore.features import PreLogits
from nascore.tasks.digit_scenes import instance_mask

from .config import Model, detection_config

_names = itertools.count()


@dataclass
class Output:
    """What the head returns: the backbone's feature levels and, in eval mode, detectron2's predictions."""

    features: list[Tensor]
    head: Detectron2Head
    instances: list[Instances] | None = None


class Detectron2Head(nn.Module):
    """A detectron2 detector built by ``build_model`` whose bottom-up features come from the nascore
    network's backbone (``build_nascore_features_fpn``): FPN, then RPN + ROI heads or the RetinaNet head."""

    def __init__(self, cfg):
        super().__init__()
        self.model = build_model(cfg)
        self.mask_on = bool(cfg.MODEL.MASK_ON) and isinstance(self.model, GeneralizedRCNN)
        self.stride = cfg.MODEL.NASCORE.FEATURES[0][1]

    def forward(self, features: list[Tensor]) -> Output:
        return Output(features, self, None if self.training else self.predict(features))

    def image_list(self, features: list[Tensor]) -> ImageList:
        """detectron2's heads only read the image sizes: those the finest feature level covers."""
        n, _, h, w = features[0].shape
        size = (h * self.stride, w * self.stride)
        return ImageList(features[0].new_zeros(n, 0, *size), [size] * n)

    def losses(self, features: list[Tensor], gt: list[Instances]) -> dict[str, Tensor]:
        # detectron2's heads log to the current EventStorage: inside a detectron2 trainer there is one
        with contextlib.nullcontext() if _CURRENT_STORAGE_STACK else EventStorage():
            return self._losses(features, gt)

    def _losses(self, features: list[Tensor], gt: list[Instances]) -> dict[str, Tensor]:
        m, images = self.model, self.image_list(features)
        fpn = m.backbone(features)
        if isinstance(m, GeneralizedRCNN):
            proposals, rpn_losses = m.proposal_generator(images, fpn, gt)
            _, roi_losses = m.roi_heads(images, fpn, proposals, gt)
            return {**rpn_losses, **roi_losses}
        levels = [fpn[f] for f in m.head_in_features]
        return m.forward_training(images, levels, m.head(levels), gt)

    def predict(self, features: list[Tensor]) -> list[Instances]:
        m, images = self.model, self.image_list(features)
        fpn = m.backbone(features)
        if isinstance(m, GeneralizedRCNN):
            proposals, _ = m.proposal_generator(images, fpn, None)
            results, _ = m.roi_heads(images, fpn, proposals, None)
        else:
            levels = [fpn[f] for f in m.head_in_features]
            results = m.forward_inference(images, levels, m.head(levels))
        # as the meta-architectures' own inference: masks pasted into the image, boxes clipped
        return [detector_postprocess(r, *size) for r, size in zip(results, images.image_sizes)]


def instance_masks(semantic: Tensor, boxes: Tensor, classes: Tensor) -> Tensor:
    """Per-instance masks cut from a semantic map, as digit-scenes' COCO export writes them: (K, H, W) bool."""
    sem = semantic.cpu().numpy()
    masks = [instance_mask(sem, box, c) for box, c in zip(boxes.cpu().tolist(), classes.cpu().tolist())]
    out = torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, *semantic.shape, dtype=torch.uint8)
    return out.bool().to(semantic.device)


def gt_instances(targets: dict[str, Any], size: tuple[int, int], with_masks: bool) -> list[Instances]:
    out = []
    for i, (boxes, classes) in enumerate(zip(targets["boxes"], targets["classes"])):
        inst = Instances(size, gt_boxes=Boxes(boxes.float()), gt_classes=classes.long())
        if with_masks:
            inst.gt_masks = BitMasks(instance_masks(targets["semantic"][i], boxes, classes))
        out.append(inst)
    return out


@dataclass
class COCOMetric:
    """Ground truth and predictions gathered batch by batch, scored at the end by detectron2's
    ``COCOEvaluator`` on a dataset registered for the occasion (and removed after)."""

    num_classes: int
    segm: bool
    records: list[dict] = field(default_factory=list)
    predictions: list[Instances] = field(default_factory=list)

    def update(self, instances: list[Instances], targets: dict[str, Any], size: tuple[int, int]) -> None:
        for i, (pred, boxes, classes) in enumerate(zip(instances, targets["boxes"], targets["classes"])):
            masks = instance_masks(targets["semantic"][i], boxes, classes).cpu() if self.segm else None
            annotations = []
            for k, (box, c) in enumerate(zip(boxes.cpu().tolist(), classes.cpu().tolist())):
                ann = {"bbox": box, "bbox_mode": BoxMode.XYXY_ABS, "category_id": c, "iscrowd": 0}
                if masks is not None:
                    rle = mask_util.encode(masks[k].numpy().astype("uint8", order="F"))
                    ann["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode()}
                annotations.append(ann)
            image_id = len(self.records)
            self.records.append({"file_name": f"{image_id}.png", "image_id": image_id, "height": size[0],
                                 "width": size[1], "annotations": annotations})
            self.predictions.append(pred.to("cpu"))

    def compute(self) -> dict[str, float]:
        name = f"nascore_detectron2_eval_{next(_names)}"
        records = self.records
        DatasetCatalog.register(name, lambda: records)
        MetadataCatalog.get(name).set(thing_classes=[str(c) for c in range(self.num_classes)])
        try:
            with tempfile.TemporaryDirectory() as tmp:
                evaluator = COCOEvaluator(name, tasks=("bbox", "segm") if self.segm else ("bbox",),
                                          distributed=False, output_dir=tmp)
                evaluator.reset()
                for record, pred in zip(records, self.predictions):
                    evaluator.process([{"image_id": record["image_id"]}], [{"instances": pred}])
                with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its summary tables
                    results = evaluator.evaluate() if records else {}
        finally:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        out = {k: float(v) for k, v in results.get("bbox", {}).items() if "-" not in k}
        out.update({f"mask_{k}": float(v) for k, v in results.get("segm", {}).items() if "-" not in k})
        return {k: (0.0 if v != v else v) for k, v in out.items()}  # NaN (no detections of any class) -> 0


class Detectron2(Task):
    """Detection / instance segmentation with detectron2's own models (Faster R-CNN, RetinaNet, Mask R-CNN
    with FPN) over any nascore backbone or supernet; boxes and classes from the dataset (masks cut from its
    semantic map for Mask R-CNN); box AP (and mask AP) from detectron2's ``COCOEvaluator``, in percent."""

    name: ClassVar[str] = "detectron2"
    target: ClassVar[str] = "classes"
    primary_metric: ClassVar[str] = "AP"

    class Config(ComponentConfig):
        model: Model = "faster_rcnn"
        num_classes: int | None = Field(None, ge=1, description="default: the dataset's detection classes")
        fpn_channels: int = Field(64, ge=8, description="FPN output channels (detectron2's default is 256)")
        anchor_scale: float = Field(4.0, gt=0, description="anchor size per FPN level = scale x stride "
                                                           "(detectron2's default 8 is for ~800 px images)")
        proposals: int = Field(100, ge=1, description="RPN proposals kept after NMS (detectron2: 1000)")
        box_head_dim: int = Field(256, ge=8, description="ROI box head FC width (detectron2: 1024)")
        mask_head_dim: int = Field(64, ge=8, description="Mask R-CNN mask head conv width (detectron2: 256)")
        opts: list[str] = Field(default_factory=list,
                                description="detectron2 config overrides, KEY VALUE pairs, applied last")

    def configured_classes(self) -> int | None:
        return self.config.num_classes

    def detectron2_config(self, feature_info: list[dict], data: DataInfo | None, num_classes: int | None = None):
        """The detectron2 config of this task's detector over features described by ``feature_info``."""
        c = self.config
        cfg = detection_config(c.model, num_classes or self.num_classes(data), fpn_channels=c.fpn_channels,
                               anchor_scale=c.anchor_scale, proposals=c.proposals,
                               box_head_dim=c.box_head_dim, mask_head_dim=c.mask_head_dim, opts=c.opts)
        cfg.MODEL.BACKBONE.NAME = "build_nascore_features_fpn"
        cfg.MODEL.NASCORE.FEATURES = [[f["num_chs"], f["reduction"]] for f in feature_info]
        return cfg

    def build_head(self, feature_info: list[dict], pre_logits: PreLogits | None, data: DataInfo) -> nn.Module:
        self._classes = self.num_classes(data)  # for metrics()
        return Detectron2Head(self.detectron2_config(feature_info, data))

    def loss(self, output: Output, targets: dict[str, Any]) -> Tensor:
        head = output.head
        size = tuple(head.image_list(output.features).image_sizes[0])
        gt = gt_instances(targets, size, head.mask_on)
        if head.training:
            return sum(head.losses(output.features, gt).values())
        with torch.no_grad():  # detectron2's heads only compute losses in training mode
            head.train()
            try:
                return sum(head.losses(output.features, gt).values())
            finally:
                head.eval()

    def metrics(self, device: torch.device) -> COCOMetric:
        return COCOMetric(self._classes, self.config.model == "mask_rcnn")

    def update_metrics(self, metrics: COCOMetric, output: Output, targets: dict[str, Any]) -> None:
        instances = output.instances if output.instances is not None else output.head.predict(output.features)
        metrics.update(instances, targets, tuple(output.head.image_list(output.features).image_sizes[0]))

    def compute_metrics(self, metrics: COCOMetric) -> dict[str, float]:
        return metrics.compute()
