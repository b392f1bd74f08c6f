"""FBNetV2's config and its plan: every block's widths, options and decisions, as the supernet
(``nascore.spaces.fbnetv2``) builds them and the cost table (``nascore.spaces.fbnetv2_cost``) prices them."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from nascore.features import make_divisible
from nascore.space import MAX_BLOCKS, MAX_OPTIONS, MAX_STAGES, SpaceConfig
from nascore.spaces.shape_cost import ProductWidth, Width
from nascore.supernet import Decision

from .fbnetv2_blocks import TYPES, divisible_by, mid_channels, out_size

PAPER_EXPANSIONS = (0.75, 1.5, 2.25, 3.0, 3.75, 4.5)


class StageConfig(BaseModel):
    """One stage: ``blocks`` blocks, the first with ``stride``; options for every block of the stage."""

    model_config = ConfigDict(extra="forbid")
    channels: list[int] = Field(min_length=1, max_length=MAX_OPTIONS,
                                description="output channel options (scaled by width)")
    blocks: int = Field(ge=1, le=MAX_BLOCKS)
    stride: Literal[1, 2] = 1
    expansions: list[float] = Field(list(PAPER_EXPANSIONS), min_length=1, max_length=MAX_OPTIONS)
    types: list[str] = Field(list(TYPES), min_length=1, max_length=MAX_OPTIONS)
    resolutions: list[int] = Field([1], min_length=1, max_length=MAX_OPTIONS,
                                   description="input subsampling factors, 1 = full")

    @field_validator("channels", "expansions", "types", "resolutions")
    @classmethod
    def _distinct(cls, v: list) -> list:
        if len(set(v)) != len(v):
            raise ValueError(f"options must be distinct, got {v}")
        return v

    @field_validator("channels")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if min(v) < 1:
            raise ValueError(f"channel counts must be positive, got {v}")
        return v

    @field_validator("expansions")
    @classmethod
    def _expansions(cls, v: list[float]) -> list[float]:
        if min(v) <= 0:
            raise ValueError(f"expansion rates must be positive, got {v}")
        if 1 in v and len(v) > 1:
            raise ValueError("expansion 1 (a block without expansion conv) cannot be searched with other rates")
        return v

    @field_validator("types")
    @classmethod
    def _types(cls, v: list[str]) -> list[str]:
        unknown = [t for t in v if t not in TYPES]
        if unknown:
            raise ValueError(f"unknown block types {unknown}; known: {', '.join(TYPES)}")
        return v

    @field_validator("resolutions")
    @classmethod
    def _resolutions(cls, v: list[int]) -> list[int]:
        if min(v) < 1 or max(v) > 8:
            raise ValueError(f"resolution factors must be between 1 and 8, got {v}")
        return v


def _stage(channels, blocks, stride, resolutions=(1, 2)) -> dict:
    return {"channels": list(channels), "blocks": blocks, "stride": stride, "resolutions": list(resolutions)}


#: the FBNetV2-F search space of the paper's Table 1 (channel options from (min, max, step) per stage, input
#: 224); transcribed from the paper as we read it, it is the default and every part of it is configurable
PAPER_STAGES = [
    _stage([12, 16], 1, 1),
    _stage(range(16, 29, 4), 1, 2), _stage(range(16, 29, 4), 2, 1),
    _stage(range(16, 41, 8), 1, 2), _stage(range(16, 41, 8), 2, 1),
    _stage(range(48, 97, 8), 1, 2), _stage(range(48, 97, 8), 2, 1),
    _stage(range(72, 129, 8), 4, 1),
    _stage(range(112, 217, 8), 1, 2), _stage(range(112, 217, 8), 3, 1),
]


class FBNetV2Config(SpaceConfig):
    width: float = Field(1.0, gt=0, le=4, description="channel multiplier")
    input_size: int = Field(224, ge=16, description="input resolution the costs are priced at")
    stem: int = Field(16, ge=1, description="channels of the 3x3 stride-2 stem")
    stages: list[StageConfig] = Field(default_factory=lambda: [StageConfig(**s) for s in PAPER_STAGES],
                                      min_length=1, max_length=MAX_STAGES)
    head_expansion: float = Field(6.0, gt=0, description="the last 1x1 conv widens the last stage by this")
    head_channels: int = Field(1984, ge=8, description="1x1 conv after pooling, before the classifier")
    divisor: int = Field(8, ge=1, description="hidden widths are rounded to a multiple of this")
    channel_divisor: int = Field(4, ge=1, description="stage channels scaled by width round to a multiple of this")
    placement: Literal["intersperse", "nearest"] = Field(
        "intersperse", description="how a subsampled block's output goes back to full size")
    cost_grid: int | None = Field(None, ge=2, description="price at most this many widths per layer and "
                                  "interpolate between them (default: every width, exact)")
    shared_weights: bool = Field(False, description=(
        "the supernet's block types share one set of weights (k3 the centre of k5; squeeze-excite and the "
        "activation applied to the same convolutions; skip keeps its own): every step trains what every path "
        "reads. The supernet's only: archs build the same either way"), json_schema_extra={"arch": False})
    recompute_resolutions: bool = Field(False, description=(
        "a soft mix recomputes each subsampled resolution branch in backward instead of keeping its activations: "
        "less peak memory, more time. The supernet's only: archs build the same either way"),
        json_schema_extra={"arch": False})


# -- the plan: every block's widths, options and decisions ----------------------------------------------
@dataclass(frozen=True)
class BlockPlan:
    name: str
    stride: int
    cin: Width
    cout: Width
    mid: ProductWidth
    expansion: str | None  # decision names, None where there is one option
    type: str | None
    resolution: str | None
    expansions: tuple[float, ...]
    types: tuple[str, ...]
    resolutions: tuple[int, ...]
    residual: bool
    size: tuple[int, int]  # input spatial size at the priced input resolution

    @property
    def has_pw(self) -> bool:
        return self.expansions != (1.0,)


def _scaled(channels: list[int], width: float, divisor: int) -> tuple[int, ...]:
    if width == 1:
        return tuple(sorted(channels))
    return tuple(sorted({max(divisor, int(c * width / divisor + 0.5) * divisor) for c in channels}))


def rate_label(e: float) -> str:
    """An expansion rate as its decision spells it."""
    return f"{e:g}"


def plan(cfg: FBNetV2Config, input_size: int | None = None) -> tuple[Width, list[BlockPlan], int]:
    """(stem width, block plans, head hidden width); sizes at ``input_size`` (default: the config's)."""
    grid = cfg.cost_grid
    stem = Width(None, (make_divisible(cfg.stem * cfg.width, cfg.divisor) if cfg.width != 1 else cfg.stem,))
    size = out_size((input_size or cfg.input_size,) * 2, 2)
    blocks, cin = [], stem
    for s, stage in enumerate(cfg.stages, 1):
        values = _scaled(stage.channels, cfg.width, cfg.channel_divisor)
        cout = Width(f"s{s}.channels" if len(values) > 1 else None, values, grid)
        for b in range(1, stage.blocks + 1):
            name = f"s{s}.b{b}"
            stride = stage.stride if b == 1 else 1

            def decision(what: str, options: list, name: str = name) -> str | None:
                return f"{name}.{what}" if len(options) > 1 else None

            table = tuple(tuple(mid_channels(c, e, cfg.divisor) for e in stage.expansions) for c in cin.values)
            blocks.append(BlockPlan(
                name, stride, cin, cout, ProductWidth(cin.decision, decision("expansion", stage.expansions), table, grid),
                decision("expansion", stage.expansions), decision("type", stage.types),
                decision("resolution", stage.resolutions), tuple(float(e) for e in stage.expansions),
                tuple(stage.types), tuple(stage.resolutions), b > 1, size))
            size = out_size(size, stride)
            cin = cout
    head_mid = divisible_by(max(cin.values) * cfg.head_expansion, cfg.divisor)
    return stem, blocks, head_mid


def decisions_of(blocks: list[BlockPlan]) -> list[Decision]:
    out, seen = [], set()
    for p in blocks:
        if p.cout.decision is not None and p.cout.decision not in seen:
            seen.add(p.cout.decision)
            out.append(Decision(p.cout.decision, tuple(str(c) for c in p.cout.values)))
        for name, options in ((p.type, p.types), (p.expansion, tuple(rate_label(e) for e in p.expansions)),
                              (p.resolution, tuple(str(r) for r in p.resolutions))):
            if name is not None:
                out.append(Decision(name, options))
    return out


def feature_levels(blocks: list[BlockPlan], width: Callable[[BlockPlan], int], head: int) -> list[dict]:
    """timm-style feature_info: the last block at each reduction below the deepest, then the head conv's output
    at the deepest (as timm's MobileNetV3)."""
    reduction, last = 2, {}
    for i, p in enumerate(blocks):
        reduction *= p.stride
        last[reduction] = i
    levels = [dict(num_chs=width(blocks[i]), reduction=r, module=f"blocks.{i}")
              for r, i in sorted(last.items()) if r != reduction]
    return levels + [dict(num_chs=head, reduction=reduction, module="head")]
