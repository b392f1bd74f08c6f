"""The FBNet search space (Wu et al., CVPR 2019): a fixed stem, 22 searchable layers with 9 candidate
blocks each, and a 1x1 head conv; FBNet-A/B/C ship as named archs (mobile-vision's definitions)."""
from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from torch import Tensor, nn

from nascore.arch import Arch
from nascore.component import ComponentConfig
from nascore.features import Backbone, PreLogits, make_divisible
from nascore.hookspecs import hookimpl
from nascore.space import SearchSpace
from nascore.supernet import Choice, Decision, Supernet

from .fbnet_blocks import CANDIDATES, conv_bn, make_block

#: searchable stages as (channels, layers, first stride), input 224 -> output 7
STAGES = ((16, 1, 1), (24, 4, 2), (32, 4, 2), (64, 4, 2), (112, 4, 1), (184, 4, 2), (352, 1, 1))
STEM_CHANNELS = 16
#: stages after which a feature level is returned (reductions 2, 4, 8, 16, 32, as timm's fbnetc_100)
FEATURE_STAGES = (0, 1, 2, 4, 6)


class FBNetConfig(ComponentConfig):
    width: float = Field(1.0, gt=0, le=4, description="channel multiplier")
    input_size: int = Field(224, ge=32, description="input resolution the costs are priced at")
    head_channels: int = Field(1984, ge=8, description="1x1 head conv before pooling (1504 in FBNet-A)")
    divisor: int = Field(8, ge=1, description="channels are rounded to a multiple of this")


def layer_plan(cfg: FBNetConfig) -> list[tuple[int, int, int]]:
    """(in channels, out channels, stride) of each of the 22 searchable layers."""
    plan, cin = [], make_divisible(STEM_CHANNELS * cfg.width, cfg.divisor)
    for channels, count, stride in STAGES:
        cout = make_divisible(channels * cfg.width, cfg.divisor)
        for i in range(count):
            plan.append((cin, cout, stride if i == 0 else 1))
            cin = cout
    return plan


def _stage_ends() -> list[int]:
    ends, n = [], 0
    for _, count, _ in STAGES:
        n += count
        ends.append(n - 1)
    return [ends[s] for s in FEATURE_STAGES]


class _FBNetBody(nn.Module):
    """Stem + 22 layers returning the feature levels; layers are Choices (supernet) or blocks (built)."""

    def _init_body(self, cfg: FBNetConfig, layers: list[nn.Module]) -> None:
        plan = layer_plan(cfg)
        self.stem = conv_bn(3, plan[0][0], 3, 2)
        self.layers = nn.ModuleList(layers)
        self._feature_layers = _stage_ends()
        reductions = [2, 4, 8, 16, 32]
        self.feature_info = [dict(num_chs=plan[i][1], reduction=r, module=f"layers.{i}")
                             for i, r in zip(self._feature_layers, reductions)]
        self.pre_logits = PreLogits(make_divisible(cfg.head_channels * cfg.width, cfg.divisor))

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
        layers = [Choice(d.name, {label: make_block(label, cin, cout, s, cfg.divisor) for label in d.options})
                  for d, (cin, cout, s) in zip(decisions, layer_plan(cfg))]
        self._init_body(cfg, layers)
        self._decisions = decisions

    def decisions(self) -> list[Decision]:
        return self._decisions

    def fixed_modules(self) -> dict[str, nn.Module]:
        return {"stem": self.stem}


class FBNet(_FBNetBody, Backbone):
    """A standalone FBNet-space model (no supernet code)."""

    def __init__(self, cfg: FBNetConfig, choices: list[str]):
        super().__init__()
        self._init_body(cfg, [make_block(label, cin, cout, s, cfg.divisor)
                              for label, (cin, cout, s) in zip(choices, layer_plan(cfg))])


class FBNetSpace(SearchSpace):
    """22 layers x 9 candidate blocks (k3/k5, expansion 1/3/6, grouped g2, skip), FBNet's macro-architecture."""

    name: ClassVar[str] = "fbnet"
    Config: ClassVar[type[FBNetConfig]] = FBNetConfig

    def decisions(self) -> list[Decision]:
        return [Decision(f"layer{i + 1:02d}", tuple(CANDIDATES)) for i in range(len(layer_plan(self.config)))]

    def supernet(self) -> FBNetSupernet:
        return FBNetSupernet(self.config, self.decisions())

    def build(self, arch: Arch) -> FBNet:
        self.check_arch(arch)
        return FBNet(self.config, [arch.choices[d.name] for d in self.decisions()])

    @classmethod
    def named_archs(cls) -> dict[str, Arch]:
        return {name: Arch(space=cls.name, name=name, config={"head_channels": head},
                           choices={f"layer{i + 1:02d}": b for i, b in enumerate(blocks.split())})
                for name, (head, blocks) in NAMED.items()}


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
