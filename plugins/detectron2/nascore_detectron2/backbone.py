"""Any nascore arch (an arch file or a named arch) or timm ``features_only`` model as a detectron2 ``Backbone``.

Feature levels are named ``res<log2(reduction)>`` (``res2`` at stride 4 .. ``res5`` at stride 32), the names
detectron2's ResNet configs use, so ``MODEL.FPN.IN_FEATURES: [res2, res3, res4, res5]`` works unchanged. Where
several levels share a reduction (FBNetV2's head conv after its last stage) the deepest one is used.
"""
from __future__ import annotations

import math

import torch
from detectron2.config import CfgNode
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool, LastLevelP6P7
from torch import Tensor, nn

from nascore.errors import NascoreError

TIMM_PREFIX = "timm:"
NORMS = ("BN", "FrozenBN", "SyncBN")


class ConfigError(NascoreError, ValueError):
    """A detectron2 config value the nascore backbones cannot use; the message names the key (``nascore`` reports it
    without a traceback, exit status 2)."""


def level_names(feature_info: list[dict]) -> dict[str, int]:
    """``res<k>`` -> index into the model's outputs, the deepest level for each reduction."""
    names: dict[str, int] = {}
    for i, level in enumerate(feature_info):
        names[f"res{int(math.log2(level['reduction']))}"] = i
    return names


def build_features_model(arch: str, input_size: int = 0, in_channels: int = 3) -> nn.Module:
    """A model whose ``forward(x)`` returns one map per ``feature_info`` level: a nascore arch (file or
    named arch) or ``timm:<name>`` (randomly initialised: nothing is downloaded)."""
    if arch.startswith(TIMM_PREFIX):
        import timm

        model = timm.create_model(arch[len(TIMM_PREFIX):], pretrained=False, features_only=True,
                                  in_chans=in_channels)
        model.feature_info = model.feature_info.get_dicts(keys=("num_chs", "reduction", "module"))
        return model
    from nascore.arch import arch_space, resolve_arch

    resolved = resolve_arch(arch)
    space = arch_space(resolved, arch, input_size=input_size or None)
    return space.build(resolved)


class NascoreBackbone(Backbone):
    """detectron2 ``Backbone`` over a features model; ``output_shape()`` comes from its ``feature_info``."""

    def __init__(self, model: nn.Module, out_features: list[str] | None = None, freeze_at: int = 0,
                 norm: str = "BN", in_channels: int = 3):
        super().__init__()
        self.model, self.in_channels = model, in_channels
        levels = level_names(model.feature_info)
        out_features = list(out_features or levels)
        unknown = [f for f in out_features if f not in levels]
        if unknown:
            raise ConfigError(f"MODEL.NASCORE.OUT_FEATURES: {unknown} not among the arch's levels "
                             f"{sorted(levels)} (res<k> is the level at stride 2**k)")
        if norm not in NORMS:
            raise ConfigError(f"MODEL.NASCORE.NORM: expected one of {NORMS}, got {norm!r}")
        self._index = {f: levels[f] for f in out_features}
        self._out_features = sorted(out_features, key=lambda f: levels[f])
        info = model.feature_info
        self._out_feature_channels = {f: info[i]["num_chs"] for f, i in self._index.items()}
        self._out_feature_strides = {f: info[i]["reduction"] for f, i in self._index.items()}
        if norm == "SyncBN":
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        elif norm == "FrozenBN":
            self.model = FrozenBatchNorm2d.convert_frozen_batchnorm(self.model)
        self.freeze(freeze_at)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        outputs = self.model(x)
        return {f: outputs[self._index[f]] for f in self._out_features}

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {f: ShapeSpec(channels=self._out_feature_channels[f], stride=self._out_feature_strides[f])
                for f in self._out_features}

    def freeze(self, freeze_at: int) -> None:
        """detectron2's convention: ``freeze_at = k`` freezes every module that computes the features up to
        stride ``2**k`` (1: the stem, 2: the stem and the stride-4 stage, ...); 0 freezes nothing. Found by
        running the model once and recording which modules run before the last such level is produced."""
        if freeze_at <= 0:
            return
        info = self.model.feature_info
        last = max((i for i, level in enumerate(info) if level["reduction"] <= 2 ** freeze_at), default=None)
        if last is None:
            return
        order: list[nn.Module] = []
        stop: list[int] = []
        level_module = self.model.get_submodule(info[last]["module"])
        hooks = [m.register_forward_hook(lambda mod, _i, _o: order.append(mod))
                 for m in self.model.modules() if not list(m.children())]
        hooks.append(level_module.register_forward_hook(lambda *_: stop.append(len(order))))
        was_training = self.model.training
        try:
            with torch.no_grad():
                self.model.eval()(torch.zeros(1, self.in_channels, 64, 64))
        finally:
            self.model.train(was_training)
            for h in hooks:
                h.remove()
        frozen = {id(m) for m in order[:stop[0]]} | {id(m) for m in level_module.modules()}
        for module in [m for m in self.model.modules() if id(m) in frozen]:
            for p in module.parameters(recurse=False):
                p.requires_grad_(False)
        for name, module in list(self.model.named_modules()):
            if id(module) in frozen and isinstance(module, nn.BatchNorm2d):
                parent_name, _, child = name.rpartition(".")
                parent = self.model.get_submodule(parent_name) if parent_name else self.model
                setattr(parent, child, FrozenBatchNorm2d.convert_frozen_batchnorm(module))


def add_nascore_config(cfg: CfgNode) -> CfgNode:
    """Add ``MODEL.NASCORE`` to a detectron2 config: ARCH (an arch file, a named arch such as ``fbnet_c``, or
    ``timm:<model>``), OUT_FEATURES (``res<k>`` names), FREEZE_AT, NORM (BN | FrozenBN | SyncBN) and
    INPUT_SIZE (the arch's input size for spaces that have one; 0 = the arch's own)."""
    cfg.MODEL.NASCORE = CfgNode()
    cfg.MODEL.NASCORE.ARCH = "fbnet_c"
    cfg.MODEL.NASCORE.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.NASCORE.FREEZE_AT = 0
    cfg.MODEL.NASCORE.NORM = "BN"
    cfg.MODEL.NASCORE.INPUT_SIZE = 0
    cfg.MODEL.NASCORE.FEATURES = []  # [channels, stride] per level, for build_nascore_features_fpn only
    return cfg


@BACKBONE_REGISTRY.register()
def build_nascore_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> NascoreBackbone:
    """``MODEL.BACKBONE.NAME: build_nascore_backbone``: the arch alone (no FPN), e.g. for a C4-style head."""
    n = cfg.MODEL.NASCORE
    model = build_features_model(n.ARCH, n.INPUT_SIZE, input_shape.channels)
    return NascoreBackbone(model, list(n.OUT_FEATURES), n.FREEZE_AT, n.NORM, input_shape.channels)


@BACKBONE_REGISTRY.register()
def build_nascore_fpn_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> FPN:
    """``MODEL.BACKBONE.NAME: build_nascore_fpn_backbone``: the arch + FPN, with ``LastLevelMaxPool`` (p2-p6,
    as detectron2's ``build_resnet_fpn_backbone``) or, when ``MODEL.META_ARCHITECTURE`` is RetinaNet,
    ``LastLevelP6P7`` (p3-p7, as ``build_retinanet_resnet_fpn_backbone``)."""
    return _fpn(cfg, build_nascore_backbone(cfg, input_shape))

class FeaturesBackbone(Backbone):
    """The bottom-up "backbone" of a detector whose features come from elsewhere (a nascore network's
    backbone or supernet): ``forward`` maps the list of feature levels to ``res<k>`` names. Its shapes are
    ``MODEL.NASCORE.FEATURES``: one ``[channels, stride]`` per level."""

    def __init__(self, features: list[list[int]], out_features: list[str]):
        super().__init__()
        info = [{"num_chs": c, "reduction": s} for c, s in features]
        levels = level_names(info)
        unknown = [f for f in out_features if f not in levels]
        if unknown:
            raise ConfigError(f"MODEL.NASCORE.OUT_FEATURES: {unknown} not among the features' levels {sorted(levels)} "
                              "(res<k> is the level at stride 2**k)")
        self._index = {f: levels[f] for f in out_features}
        self._out_features = list(out_features)
        self._out_feature_channels = {f: info[i]["num_chs"] for f, i in self._index.items()}
        self._out_feature_strides = {f: info[i]["reduction"] for f, i in self._index.items()}

    def forward(self, features: list[Tensor]) -> dict[str, Tensor]:
        return {f: features[i] for f, i in self._index.items()}

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {f: ShapeSpec(channels=self._out_feature_channels[f], stride=self._out_feature_strides[f])
                for f in self._out_features}


@BACKBONE_REGISTRY.register()
def build_nascore_features_fpn(cfg: CfgNode, input_shape: ShapeSpec) -> FPN:
    """FPN over features computed outside the detector (``FeaturesBackbone``); the top block is
    ``LastLevelP6P7`` for RetinaNet, ``LastLevelMaxPool`` otherwise. Used by the nascore ``detectron2`` task."""
    bottom_up = FeaturesBackbone(cfg.MODEL.NASCORE.FEATURES, list(cfg.MODEL.NASCORE.OUT_FEATURES))
    return _fpn(cfg, bottom_up)


def _fpn(cfg: CfgNode, bottom_up: Backbone) -> FPN:
    fpn, shapes = cfg.MODEL.FPN, bottom_up.output_shape()
    levels = sorted(shapes, key=lambda f: shapes[f].stride)
    in_features = list(fpn.IN_FEATURES) or levels  # detectron2's default []: every level the backbone returns
    unknown = [f for f in in_features if f not in shapes]
    if unknown:
        raise ConfigError(f"MODEL.FPN.IN_FEATURES: {unknown} not among the backbone's levels {levels} (set "
                          "MODEL.NASCORE.OUT_FEATURES to return them, or leave MODEL.FPN.IN_FEATURES empty for all)")
    if cfg.MODEL.META_ARCHITECTURE == "RetinaNet":
        last = in_features[-1]
        top = LastLevelP6P7(shapes[last].channels, fpn.OUT_CHANNELS, in_feature=last)
    else:
        top = LastLevelMaxPool()
    return FPN(bottom_up=bottom_up, in_features=in_features, out_channels=fpn.OUT_CHANNELS, norm=fpn.NORM,
               top_block=top, fuse_type=fpn.FUSE_TYPE)
