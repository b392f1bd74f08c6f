"""The backbone adapter: output shapes and strides from feature_info, FPN wiring, freezing, a plain
detectron2 config with add_nascore_config."""
from __future__ import annotations

import pytest
import torch
from d2_helpers import needs_detectron2

pytestmark = needs_detectron2


def fbnetv5_arch(tmp_path):
    from nascore.arch import Arch
    from nascore.spaces.fbnetv5 import FBNetV5Space

    space = FBNetV5Space({"width": 0.25, "input_size": 64, "blocks": [1, 1, 1, 1]})
    choices = {d.name: ("skip" if i % 3 == 0 else "keep") for i, d in enumerate(space.decisions())}
    path = tmp_path / "arch_detection.json"
    Arch(space="fbnetv5", config=space.config.model_dump(mode="json"), choices=choices, task="detection").save(path)
    return str(path)


@pytest.mark.parametrize("arch", ["fbnet_a", "fbnet_c", "fbnetv2_f1", "fbnetv5", "timm:mobilenetv3_large_100"])
def test_output_shape_matches_the_features(arch, tmp_path):
    from nascore_detectron2 import NascoreBackbone, build_features_model

    ref = fbnetv5_arch(tmp_path) if arch == "fbnetv5" else arch
    backbone = NascoreBackbone(build_features_model(ref), ["res2", "res3", "res4", "res5"])
    shapes = backbone.output_shape()
    assert list(shapes) == ["res2", "res3", "res4", "res5"]
    assert [s.stride for s in shapes.values()] == [4, 8, 16, 32]
    out = backbone(torch.randn(2, 3, 96, 128))
    for name, y in out.items():
        assert y.shape[1] == shapes[name].channels
        assert y.shape[-2:] == (96 // shapes[name].stride, 128 // shapes[name].stride)


def test_unknown_out_feature_and_norm_are_named():
    from nascore_detectron2 import NascoreBackbone, build_features_model

    with pytest.raises(ValueError, match="OUT_FEATURES.*res6"):
        NascoreBackbone(build_features_model("fbnet_c"), ["res5", "res6"])
    with pytest.raises(ValueError, match="NORM"):
        NascoreBackbone(build_features_model("fbnet_c"), norm="GN")


@pytest.mark.parametrize("freeze_at", [1, 2, 3])
def test_freeze_at_freezes_the_stages_up_to_that_stride(freeze_at):
    from detectron2.layers import FrozenBatchNorm2d

    from nascore_detectron2 import NascoreBackbone, build_features_model

    backbone = NascoreBackbone(build_features_model("fbnet_c"), freeze_at=freeze_at)
    out = backbone(torch.randn(2, 3, 64, 64))
    trainable = [p for p in backbone.parameters() if p.requires_grad]
    for name, y in out.items():
        if int(name[3:]) <= freeze_at:  # produced by frozen modules only
            assert not y.requires_grad
        else:
            grads = torch.autograd.grad(y.sum(), trainable, allow_unused=True, retain_graph=True)
            assert any(g is not None for g in grads)
    frozen_bn = [m for m in backbone.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert frozen_bn and any(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.modules())


@pytest.mark.parametrize("meta, features", [("GeneralizedRCNN", ["p2", "p3", "p4", "p5", "p6"]),
                                            ("RetinaNet", ["p3", "p4", "p5", "p6", "p7"])])
def test_fpn_wiring(meta, features):
    from detectron2.config import get_cfg
    from detectron2.layers import ShapeSpec
    from detectron2.modeling import build_backbone

    from nascore_detectron2 import add_nascore_config

    cfg = add_nascore_config(get_cfg())
    cfg.MODEL.META_ARCHITECTURE = meta
    cfg.MODEL.BACKBONE.NAME = "build_nascore_fpn_backbone"
    cfg.MODEL.NASCORE.ARCH = "fbnet_c"
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"] if meta == "GeneralizedRCNN" else \
        ["res3", "res4", "res5"]
    cfg.MODEL.NASCORE.OUT_FEATURES = list(cfg.MODEL.FPN.IN_FEATURES)
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    fpn = build_backbone(cfg, ShapeSpec(channels=3))
    shapes = fpn.output_shape()
    assert list(shapes) == features
    assert [s.stride for s in shapes.values()] == [2 ** int(f[1:]) for f in features]
    out = fpn(torch.randn(1, 3, 128, 128))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        f: (1, 32, 128 // s.stride, 128 // s.stride) for f, s in shapes.items()}


def test_computational_graph_of_the_backbone_and_its_fpn():
    """nascore.performance.graph traces the adapter and detectron2's FPN around it: the FPN adds a lateral and an
    output conv per level, an upsample and an add per top-down step, and the P6 max-pool."""
    from detectron2.config import get_cfg
    from detectron2.layers import ShapeSpec
    from detectron2.modeling import build_backbone

    from nascore.performance.graph import build_graph, histogram
    from nascore_detectron2 import NascoreBackbone, add_nascore_config, build_features_model

    levels = ["res2", "res3", "res4", "res5"]
    plain = histogram(build_graph(NascoreBackbone(build_features_model("fbnet_a"), levels), 64))
    cfg = add_nascore_config(get_cfg())
    cfg.MODEL.BACKBONE.NAME = "build_nascore_fpn_backbone"
    cfg.MODEL.NASCORE.ARCH = "fbnet_a"
    cfg.MODEL.FPN.IN_FEATURES = levels
    cfg.MODEL.NASCORE.OUT_FEATURES = levels
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    fpn = histogram(build_graph(build_backbone(cfg, ShapeSpec(channels=3)), 64))
    assert fpn["conv"] == plain["conv"] + 2 * len(levels)
    assert fpn["add"] == plain["add"] + len(levels) - 1 and fpn["upsample"] == len(levels) - 1
    assert fpn["max_pool"] == plain["max_pool"] + 1 and fpn["oov"] == plain["oov"] == 0


@pytest.mark.parametrize("meta, features", [("GeneralizedRCNN", ["p2", "p3", "p4", "p5", "p6"]),
                                            ("RetinaNet", ["p2", "p3", "p4", "p5", "p6", "p7"])])
def test_fpn_in_features_default_to_the_backbone_levels(meta, features):
    """detectron2's default MODEL.FPN.IN_FEATURES is []: the FPN then takes every level the backbone returns."""
    from detectron2.config import get_cfg
    from detectron2.layers import ShapeSpec
    from detectron2.modeling import build_backbone

    from nascore_detectron2 import add_nascore_config

    cfg = add_nascore_config(get_cfg())
    cfg.MODEL.META_ARCHITECTURE = meta
    cfg.MODEL.BACKBONE.NAME = "build_nascore_fpn_backbone"
    assert cfg.MODEL.FPN.IN_FEATURES == []
    fpn = build_backbone(cfg, ShapeSpec(channels=3))
    assert fpn.in_features == ("res2", "res3", "res4", "res5") and list(fpn.output_shape()) == features


def test_fpn_in_features_the_backbone_lacks_are_named():
    from detectron2.config import get_cfg
    from detectron2.layers import ShapeSpec
    from detectron2.modeling import build_backbone

    from nascore.errors import NascoreError
    from nascore_detectron2 import add_nascore_config

    cfg = add_nascore_config(get_cfg())
    cfg.MODEL.BACKBONE.NAME = "build_nascore_fpn_backbone"
    cfg.MODEL.NASCORE.OUT_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    with pytest.raises(NascoreError, match=r"MODEL.FPN.IN_FEATURES: \['res2'\] not among the backbone's levels "
                                           r"\['res3', 'res4', 'res5'\] \(set MODEL.NASCORE.OUT_FEATURES"):
        build_backbone(cfg, ShapeSpec(channels=3))


def test_task_opts_may_empty_the_fpn_in_features():
    """The nascore ``detectron2`` task with ``opts: [MODEL.FPN.IN_FEATURES, "[]"]``: the FPN over the levels given."""
    from detectron2.modeling import build_backbone

    from nascore_detectron2 import Detectron2

    task = Detectron2({"opts": ["MODEL.FPN.IN_FEATURES", "[]"]})
    info = [{"num_chs": c, "reduction": 2 ** k} for k, c in enumerate([8, 16, 24, 32, 64], 1)]
    fpn = build_backbone(task.detectron2_config(info, None, num_classes=10))
    assert fpn.in_features == ("res2", "res3", "res4", "res5")
    assert list(fpn.output_shape()) == ["p2", "p3", "p4", "p5", "p6"]


def test_plain_detectron2_yaml_config_builds_and_trains_a_step(tmp_path):
    """What a detectron2 user writes: an ordinary YAML config naming the nascore backbone."""
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model
    from detectron2.structures import Boxes, Instances
    from detectron2.utils.events import EventStorage

    from nascore_detectron2 import add_nascore_config

    (tmp_path / "faster_rcnn_nascore.yaml").write_text(f"""
MODEL:
  META_ARCHITECTURE: GeneralizedRCNN
  DEVICE: cpu
  BACKBONE: {{NAME: build_nascore_fpn_backbone}}
  NASCORE: {{ARCH: {fbnetv5_arch(tmp_path)}, OUT_FEATURES: [res2, res3, res4, res5], FREEZE_AT: 2,
             NORM: FrozenBN}}
  FPN: {{IN_FEATURES: [res2, res3, res4, res5], OUT_CHANNELS: 32}}
  ANCHOR_GENERATOR: {{SIZES: [[16], [32], [64], [128], [256]]}}
  RPN: {{IN_FEATURES: [p2, p3, p4, p5, p6], POST_NMS_TOPK_TRAIN: 64, POST_NMS_TOPK_TEST: 64}}
  ROI_HEADS: {{NAME: StandardROIHeads, IN_FEATURES: [p2, p3, p4, p5], NUM_CLASSES: 10}}
  ROI_BOX_HEAD: {{NAME: FastRCNNConvFCHead, NUM_FC: 2, FC_DIM: 64, POOLER_RESOLUTION: 7}}
""")
    cfg = add_nascore_config(get_cfg())
    cfg.merge_from_file(str(tmp_path / "faster_rcnn_nascore.yaml"))
    model = build_model(cfg)
    assert type(model.backbone.bottom_up).__name__ == "NascoreBackbone"
    image = torch.randint(0, 255, (3, 64, 64)).float()
    inst = Instances((64, 64), gt_boxes=Boxes(torch.tensor([[8.0, 8.0, 40.0, 40.0]])), gt_classes=torch.tensor([3]))
    with EventStorage():
        losses = model([{"image": image, "instances": inst}])
    assert {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg"} <= set(losses)
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        (result,) = model([{"image": image, "height": 64, "width": 64}])
    assert result["instances"].image_size == (64, 64)
