"""detectron2 configs for the ``detectron2`` task: Faster R-CNN, RetinaNet and Mask R-CNN with FPN, from
detectron2's defaults and its ``Base-RCNN-FPN`` / ``Base-RetinaNet`` settings, anchors scaled for small
images (``anchor_scale`` x the level's stride instead of 8x)."""
from __future__ import annotations

from typing import Literal

from detectron2.config import CfgNode, get_cfg

from .backbone import add_nascore_config

Model = Literal["faster_rcnn", "retinanet", "mask_rcnn"]


def detection_config(model: Model, num_classes: int, arch: str = "fbnet_c", fpn_channels: int = 256,
                     anchor_scale: float = 8.0, proposals: int = 1000, box_head_dim: int = 1024,
                     mask_head_dim: int = 256, opts: list[str] = ()) -> CfgNode:
    """A full detectron2 config for ``model`` over the nascore ``arch``. The defaults are detectron2's (for
    ~800 px images); ``proposals`` is the RPN's post-NMS top-k in training and test, ``box_head_dim`` the
    ROI box head's FC width, ``mask_head_dim`` the mask head's conv width; ``opts`` are detectron2 ``KEY VALUE`` overrides applied last."""
    cfg = add_nascore_config(get_cfg())
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.NASCORE.ARCH = arch
    cfg.MODEL.BACKBONE.NAME = "build_nascore_fpn_backbone"
    cfg.MODEL.FPN.OUT_CHANNELS = fpn_channels
    if model == "retinanet":
        cfg.MODEL.META_ARCHITECTURE = "RetinaNet"
        cfg.MODEL.NASCORE.OUT_FEATURES = ["res3", "res4", "res5"]
        cfg.MODEL.FPN.IN_FEATURES = ["res3", "res4", "res5"]
        cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[x * anchor_scale * 2 ** (k / 3) for k in range(3)]
                                            for x in (8, 16, 32, 64, 128)]
        cfg.MODEL.RETINANET.NUM_CLASSES = num_classes
        cfg.MODEL.RETINANET.IOU_THRESHOLDS = [0.4, 0.5]
        cfg.MODEL.RETINANET.IOU_LABELS = [0, -1, 1]
        cfg.MODEL.RETINANET.SMOOTH_L1_LOSS_BETA = 0.0
    else:
        cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
        cfg.MODEL.NASCORE.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
        cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
        cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[x * anchor_scale] for x in (4, 8, 16, 32, 64)]
        cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 2.0]]
        cfg.MODEL.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
        cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 2000
        cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = 1000
        cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = proposals
        cfg.MODEL.RPN.POST_NMS_TOPK_TEST = proposals
        cfg.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
        cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes
        cfg.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
        cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 2
        cfg.MODEL.ROI_BOX_HEAD.FC_DIM = box_head_dim
        cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
        cfg.MODEL.ROI_MASK_HEAD.NAME = "MaskRCNNConvUpsampleHead"
        cfg.MODEL.ROI_MASK_HEAD.NUM_CONV = 4
        cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = mask_head_dim
        cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION = 14
        cfg.MODEL.MASK_ON = model == "mask_rcnn"
    cfg.merge_from_list(list(opts))
    return cfg
