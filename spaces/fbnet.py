"""The FBNet search space (Wu et al., CVPR 2019): a fixed stem, 22 searchable layers with 9 candidate
blocks each, and a 1x1 head conv; FBNet-A/B/C ship as named archs (mobile-vision's definitions). The
macro-architecture (stages, stem, activation) is configurable: MobileNetV2 ships as named arch ``mobilenet_v2``."""
# no `from __future__ import annotations`: the built model's forward must fx-trace and script (features.Backbone)

from dataclasses import replace
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator
from torch import Tensor, nn

from nascore.arch import Arch
from nascore.features import Backbone, Chain, PreLogits, make_divisible
from nascore.hookspecs import hookimpl
from nascore.space import MAX_BLOCKS, MAX_STAGES, SearchSpace, SpaceConfig
from nascore.supernet import Decision, MixedOp, Operation, Supernet

from .fbnet_blocks import CANDIDATES, conv_bn, make_block
from .fbnet_shared import SharedCandidate, SharedLayer

#: searchable stages as (channels, layers, first stride), input 224 -> output 7
STAGES = ((16, 1, 1), (24, 4, 2), (32, 4, 2), (64, 4, 2), (112, 4, 1), (184, 4, 2), (352, 1, 1))
#: MobileNetV2's inverted-residual stages (Sandler et al. 2018, Table 2)
MOBILENET_V2_STAGES = ((16, 1, 1), (24, 2, 2), (32, 3, 2), (64, 4, 2), (96, 3, 1), (160, 3, 2), (320, 1, 1))


class FBNetConfig(SpaceConfig):
    width: float = Field(1.0, gt=0, le=4, description="channel multiplier")
    input_size: int = Field(224, ge=32, description="input resolution the costs are priced at")
    head_channels: int = Field(1984, ge=8, description="1x1 head conv before pooling (1504 in FBNet-A)")
    divisor: int = Field(8, ge=1, description="channels are rounded to a multiple of this")
    stages: list[tuple[int, int, int]] = Field(list(STAGES), min_length=1, max_length=MAX_STAGES, description=(
        "searchable stages as [channels, layers, first stride]; FBNet's by default"))
    stem_channels: int = Field(16, ge=1, description="channels of the stride-2 3x3 stem conv")
    activation: Literal["relu", "relu6"] = Field("relu", description="activation of every conv-BN-act")
    shared_weights: bool = Field(False, description=(
        "the supernet's candidates of a layer share one set of weights (k3 the centre of k5, e1/e3 the first "
        "channels of e6, g2 the projection masked to its groups): every step trains what every path reads. The "
        "supernet's only: archs build the same either way"), json_schema_extra={"arch": False})
    candidates: list[str] = Field(list(CANDIDATES), min_length=1, description=(
        "the blocks each layer chooses from (FBNet's nine by default). Which archs a search may find, not how an "
        "arch builds: arch files leave it out"), json_schema_extra={"arch": False})
    skip_in: Literal["all", "identity"] = Field("all", description=(
        "the layers where skip is a candidate: all (FBNet: a strided 1x1 conv where the shape changes), or only "
        "those where it is an identity (ProxylessNAS' zero op; a weight-sharing supernet trains one-shot only so, "
        "BENCHMARKS 'Supernets that rank'). Arch files leave it out"), json_schema_extra={"arch": False})

    @field_validator("stages")
    @classmethod
    def _stages(cls, stages: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
        for i, (channels, layers, stride) in enumerate(stages):
            if channels < 1 or not 1 <= layers <= MAX_BLOCKS or stride not in (1, 2):
                raise ValueError(f"stage {i} is {[channels, layers, stride]}: expected [channels >= 1, "
                                 f"layers 1 to {MAX_BLOCKS}, stride 1 or 2]")
        return stages

    @field_validator("candidates")
    @classmethod
    def _candidates(cls, candidates: list[str]) -> list[str]:
        unknown = [c for c in candidates if c not in CANDIDATES]
        if unknown:
            raise ValueError(f"{', '.join(unknown)}: not FBNet blocks; expected some of {', '.join(CANDIDATES)}")
        if len(set(candidates)) < len(candidates):
            raise ValueError("a block is listed twice")
        return [c for c in CANDIDATES if c in candidates]  # FBNet's order: the options' order of every decision

    @model_validator(mode="after")
    def _every_layer_chooses(self) -> "FBNetConfig":
        if self.candidates == ["skip"] and self.skip_in == "identity" and not all(map(_identity, layer_plan(self))):
            raise ValueError("candidates: only skip, and skip_in: identity leaves the layers that change the shape "
                             "nothing to choose; add a block")
        return self


def layer_plan(cfg: FBNetConfig) -> list[tuple[int, int, int]]:
    """(in channels, out channels, stride) of each searchable layer."""
    plan, cin = [], make_divisible(cfg.stem_channels * cfg.width, cfg.divisor)
    for channels, count, stride in cfg.stages:
        cout = make_divisible(channels * cfg.width, cfg.divisor)
        for i in range(count):
            plan.append((cin, cout, stride if i == 0 else 1))
            cin = cout
    return plan


def _identity(shape: tuple[int, int, int]) -> bool:
    """Whether skip is an identity in a layer of this (in channels, out channels, stride)."""
    cin, cout, stride = shape
    return cin == cout and stride == 1


def feature_taps(plan: list[tuple[int, int, int]]) -> list[tuple[int, int]]:
    """(layer index, reduction) of the feature levels: the last layer at each reduction (the stem's is 2)."""
    taps, reduction = [], 2
    for i, (_, _, stride) in enumerate(plan):
        reduction *= stride
        if i + 1 == len(plan) or plan[i + 1][2] == 2:
            taps.append((i, reduction))
    return taps


class _FBNetBody(nn.Module):
    """Stem + the layers returning the feature levels; layers are MixedOps (supernet) or blocks (built)."""

    def _init_body(self, cfg: FBNetConfig, layers: list[nn.Module]) -> None:
        plan = layer_plan(cfg)
        self.stem = conv_bn(3, plan[0][0], 3, 2, act=cfg.activation)
        self.layers = nn.ModuleList(layers)
        taps = feature_taps(plan)
        self._feature_layers = [i for i, _ in taps]
        self.feature_info = [dict(num_chs=plan[i][1], reduction=r, module=f"layers.{i}") for i, r in taps]
        self.pre_logits = PreLogits(make_divisible(cfg.head_channels * cfg.width, cfg.divisor), act=cfg.activation)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        features = []
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i in self._feature_layers:
                features.append(x)
        return features


class FBNetSupernet(_FBNetBody, Supernet):
    def __init__(self, cfg: FBNetConfig, decisions: list[Decision]):
        super().__init__()
        layers = [_shared_layer(d, cin, cout, s, cfg) if cfg.shared_weights else
                  MixedOp(d.name, {label: make_block(label, cin, cout, s, cfg.divisor, cfg.activation)
                                   for label in d.options})
                  for d, (cin, cout, s) in zip(decisions, layer_plan(cfg))]
        self._init_body(cfg, layers)
        self._decisions = decisions

    def operations(self, input_size: int, in_channels: int = 3) -> list[Operation]:
        """As :meth:`Supernet.operations`; a shared-weights candidate is priced as the plain block it computes."""
        return [replace(op, module=op.module.standalone()) if isinstance(op.module, SharedCandidate) else op
                for op in super().operations(input_size, in_channels)]

    def decisions(self) -> list[Decision]:
        return self._decisions

    def fixed_modules(self) -> dict[str, nn.Module]:
        return {"stem": self.stem}


def _shared_layer(decision: Decision, cin: int, cout: int, stride: int, cfg: FBNetConfig) -> MixedOp:
    """A MixedOp whose candidates are views of one :class:`SharedLayer` (registered once, as ``shared``)."""
    shared = SharedLayer(decision.options, cin, cout, stride, cfg.divisor, cfg.activation)
    op = MixedOp(decision.name, {label: SharedCandidate(label, shared) for label in decision.options})
    op.shared = shared
    return op


class FBNet(_FBNetBody, Backbone):
    """A standalone FBNet-space model (no supernet code)."""

    def __init__(self, cfg: FBNetConfig, labels: list[str]):
        """``labels``: each layer's block, in order."""
        super().__init__()
        self._init_body(cfg, [make_block(label, cin, cout, s, cfg.divisor, cfg.activation)
                              for label, (cin, cout, s) in zip(labels, layer_plan(cfg))])

    def chain(self) -> Chain:
        return Chain(self.stem, [(f"layer{i + 1:02d}", m) for i, m in enumerate(self.layers)],
                     list(self._feature_layers))


class FBNetSpace(SearchSpace):
    """22 layers x 9 candidate blocks (k3/k5, expansion 1/3/6, grouped g2, skip), FBNet's macro-architecture."""

    name: ClassVar[str] = "fbnet"
    Config: ClassVar[type[FBNetConfig]] = FBNetConfig

    def decisions(self) -> list[Decision]:
        cfg = self.config
        return [Decision(f"layer{i + 1:02d}", tuple(c for c in cfg.candidates
                                                     if c != "skip" or cfg.skip_in == "all" or _identity(shape)))
                for i, shape in enumerate(layer_plan(cfg))]

    def supernet(self) -> FBNetSupernet:
        return FBNetSupernet(self.config, self.decisions())

    def build(self, arch: Arch) -> FBNet:
        self.check_arch(arch)
        return FBNet(self.config, [arch.choices[d.name] for d in self.decisions()])

    @classmethod
    def named_archs(cls) -> dict[str, Arch]:
        archs = {name: Arch(space=cls.name, name=name, config={"head_channels": head},
                            choices={f"layer{i + 1:02d}": b for i, b in enumerate(blocks.split())})
                 for name, (head, blocks) in NAMED.items()}
        # MobileNetV2 1.0 (torchvision's definition): t=1 first block, then expansion 6, 3x3 everywhere
        layers = sum(n for _, n, _ in MOBILENET_V2_STAGES)
        archs["mobilenet_v2"] = Arch(
            space=cls.name, name="mobilenet_v2",
            config={"stages": [list(s) for s in MOBILENET_V2_STAGES], "stem_channels": 32, "head_channels": 1280,
                    "activation": "relu6"},
            choices={f"layer{i + 1:02d}": "k3_e1" if i == 0 else "k3_e6" for i in range(layers)})
        return archs


# mobile-vision fbnet_modeldef_cls_fbnet.py (the released FBNet-A/B/C), layers 1..22
NAMED = {
    "fbnet_a": (1504, "skip k3_e3 k3_e1 skip skip k5_e6 k3_e3 k5_e1 k3_e3 k5_e6 k5_e3 k5_e1_g2 k5_e6 "
                      "k3_e6 k5_e1_g2 k5_e3 k3_e1_g2 k5_e6 k5_e6 k5_e3 k5_e6 k5_e6"),
    "fbnet_b": (1984, "k3_e1 k3_e6 k5_e1 k3_e1 k3_e1 k5_e6 k5_e3 k3_e6 k5_e6 k5_e6 k5_e6 skip k5_e3 "
                      "k5_e6 k3_e1 k5_e1 k5_e3 k5_e6 k5_e1 k5_e6 k5_e6 k3_e6"),
    "fbnet_c": (1984, "k3_e1 k3_e6 skip k3_e1 k3_e1 k5_e6 k5_e3 k5_e6 k3_e6 k5_e6 k5_e3 k5_e6 k5_e6 "
                      "k5_e6 k5_e6 k5_e6 k5_e3 k5_e6 k5_e6 k5_e6 k5_e6 k3_e6"),
}


@hookimpl
def nascore_search_spaces():
    return [FBNetSpace]
