"""The FBNetV2 search space (Wan et al., CVPR 2020), searched with DMaskingNAS.

Per stage: the number of output channels (one decision shared by the stage's blocks, as residual additions
need); per block: the block type (k3/k5 depth-wise, with or without squeeze-excite, ReLU or h-swish, or
skip), the expansion rate and the input resolution. Channel and expansion options are masks over one
max-width convolution scaled by the Gumbel-softmax mix, ``sum_i g_i * m_i``; a resolution option subsamples the
block's input, runs the block and places the result back pixel-aligned at full size. Costs follow effective
shape propagation (``nascore.spaces.shape_cost``). A derived arch builds with genuinely smaller convolutions.
FBNetV2-F1..F4 and L1/L2 ship as named archs (mobile-vision's ``fbnet_modeldef_cls_fbnetv2.py``).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import Tensor, nn

from nascore.arch import Arch
from nascore.component import ComponentConfig
from nascore.features import Backbone, Chain, PreLogits, make_divisible
from nascore.hookspecs import hookimpl
from nascore.space import SearchSpace
from nascore.spaces.shape_cost import ProductWidth, ShapeCostTable, Width
from nascore.supernet import ActiveOptions, Decision, Supernet

from .fbnetv2_blocks import (
    TYPES,
    Block,
    SlimConvBN,
    SlimSE,
    divisible_by,
    mid_channels,
    out_size,
    place,
    se_channels,
    subsample,
    unit,
)

PAPER_EXPANSIONS = (0.75, 1.5, 2.25, 3.0, 3.75, 4.5)


class StageConfig(BaseModel):
    """One stage: ``blocks`` blocks, the first with ``stride``; options for every block of the stage."""

    model_config = ConfigDict(extra="forbid")
    channels: list[int] = Field(min_length=1, description="output channel options (scaled by width)")
    blocks: int = Field(ge=1)
    stride: Literal[1, 2] = 1
    expansions: list[float] = Field(list(PAPER_EXPANSIONS), min_length=1)
    types: list[str] = Field(list(TYPES), min_length=1)
    resolutions: list[int] = Field([1], min_length=1, description="input subsampling factors, 1 = full")

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


class FBNetV2Config(ComponentConfig):
    width: float = Field(1.0, gt=0, le=4, description="channel multiplier")
    input_size: int = Field(224, ge=16, description="input resolution the costs are priced at")
    stem: int = Field(16, ge=1, description="channels of the 3x3 stride-2 stem")
    stages: list[StageConfig] = Field(default_factory=lambda: [StageConfig(**s) for s in PAPER_STAGES],
                                      min_length=1)
    head_expansion: float = Field(6.0, gt=0, description="the last 1x1 conv widens the last stage by this")
    head_channels: int = Field(1984, ge=8, description="1x1 conv after pooling, before the classifier")
    divisor: int = Field(8, ge=1, description="hidden widths are rounded to a multiple of this")
    channel_divisor: int = Field(4, ge=1, description="stage channels scaled by width round to a multiple of this")
    placement: Literal["intersperse", "nearest"] = Field(
        "intersperse", description="how a subsampled block's output goes back to full size")
    cost_grid: int | None = Field(None, ge=2, description="price at most this many widths per layer and "
                                  "interpolate between them (default: every width, exact)")


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


def _label(e: float) -> str:
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
        for name, options in ((p.type, p.types), (p.expansion, tuple(_label(e) for e in p.expansions)),
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


# -- one searchable block -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SlicedPath:
    """A sampled path through a block: one type at one resolution, its layers sliced to exact widths."""

    type: int  # index into the plan's types
    factor: int  # input subsampling factor
    mid: int  # hidden channels
    se: int  # squeeze-excite hidden channels
    out: int  # output channels


@dataclass(frozen=True)
class MaskedPath:
    """A soft mix through a block: every active type at every active resolution, at the largest widths with
    channels scaled by the masks ``sum_i mix_i * m_i``."""

    types: ActiveOptions  # a mix of 1 on the only type where the block has no type decision
    resolutions: ActiveOptions  # likewise
    mid_mask: Tensor
    se_mask: Tensor
    out_mask: Tensor


class SearchBlock(nn.Module):
    """A block's candidates at the largest widths; the supernet sets its state: the exact widths to slice to
    on a sampled path, the mix and masks otherwise."""

    def __init__(self, p: BlockPlan, cfg: FBNetV2Config):
        super().__init__()
        self.plan, self.placement = p, cfg.placement
        cin, mid, cout = max(p.cin.values), max(max(row) for row in p.mid.table), max(p.cout.values)
        self.candidates = nn.ModuleDict()
        for t in p.types:
            spec = TYPES[t]
            if spec is None:
                if not p.residual:
                    self.candidates[t] = SlimConvBN(cin, cout, 1, p.stride, "relu")
                continue
            kernel, se, act = spec
            parts = nn.ModuleDict()
            if p.has_pw:
                parts["pw"] = SlimConvBN(cin, mid, 1, 1, act)
            parts["dw"] = SlimConvBN(mid, mid, kernel, p.stride, act, depthwise=True)
            if se:
                parts["se"] = SlimSE(mid, se_channels(mid, cfg.divisor), act)
            parts["pwl"] = SlimConvBN(mid, cout, 1, 1, None)
            self.candidates[t] = parts
        # 0/1 masks: row (j, k) keeps the first mid(j, k) hidden channels
        mids = torch.tensor(p.mid.table).flatten()
        self.register_buffer("mid_masks", (torch.arange(mid)[None] < mids[:, None]).float(), persistent=False)
        ses = torch.tensor([se_channels(int(m), cfg.divisor) for m in mids])
        self.register_buffer("se_masks", (torch.arange(se_channels(mid, cfg.divisor))[None] < ses[:, None]).float(),
                             persistent=False)
        self.state: SlicedPath | MaskedPath | None = None

    def forward(self, x: Tensor) -> Tensor:
        p, st = self.plan, self.state
        if st is None:
            raise RuntimeError(f"no mix set for block '{p.name}'")
        full = out_size(tuple(x.shape[-2:]), p.stride)
        if isinstance(st, SlicedPath):
            y = self._branch(p.types[st.type], subsample(x, st.factor))
            y = None if y is None else place(y, st.factor, full, self.placement)
        else:
            y = None
            for i in st.resolutions.indices:
                r = p.resolutions[i]
                xs, branch = subsample(x, r), None
                for j in st.types.indices:
                    b = self._branch(p.types[j], xs)
                    if b is not None:
                        b = b if p.type is None else st.types.mix[j] * b  # no decision: a mix of 1, no multiply
                        branch = b if branch is None else branch + b
                if branch is None:
                    continue
                branch = branch if p.resolution is None else st.resolutions.mix[i] * branch
                if y is not None and r > 1 and self.placement == "intersperse":
                    y[..., ::r, ::r] += branch  # add at the placed pixels: no zero-filled full-size tensor
                else:
                    branch = place(branch, r, full, self.placement)
                    y = branch if y is None else y + branch
        if p.residual:
            return x if y is None else x + y
        return y

    def _branch(self, label: str, x: Tensor) -> Tensor | None:
        """The block's residual branch for one type on (subsampled) ``x``, sliced or masked as the state says;
        None for a skip in a residual block."""
        if label not in self.candidates:
            return None
        op, st = self.candidates[label], self.state
        if isinstance(st, SlicedPath):
            if isinstance(op, SlimConvBN):  # skip with a shape change
                return op(x, cout=st.out)
            h = op["pw"](x, cout=st.mid) if "pw" in op else x
            h = op["dw"](h, cout=st.mid)
            if "se" in op:
                h = op["se"](h, hidden=st.se)
            return op["pwl"](h, cout=st.out)
        if isinstance(op, SlimConvBN):
            return op(x, mask=st.out_mask)
        h = op["pw"](x, mask=st.mid_mask) if "pw" in op else x
        h = op["dw"](h, mask=st.mid_mask)
        if "se" in op:
            h = op["se"](h, mask=st.se_mask)
        return op["pwl"](h, mask=st.out_mask)


def _chosen(active: dict[str, ActiveOptions], decision: str | None) -> int:
    """The option a sampled path takes at ``decision`` (the only one where there is no decision)."""
    return 0 if decision is None else active[decision].indices[0]


def _mask(width: Width, mix: Tensor | None, device: torch.device) -> Tensor | None:
    """``sum_i mix_i * m_i`` over the channel options (None when the width is fixed)."""
    if mix is None:
        return None
    full = max(width.values)
    masks = (torch.arange(full, device=device)[None] < torch.tensor(width.values, device=device)[:, None]).float()
    return mix @ masks


class FBNetV2Supernet(Supernet):
    def __init__(self, cfg: FBNetV2Config):
        super().__init__()
        self.config = cfg
        stem, plans, head_mid = plan(cfg)
        self._plans, self._decisions = plans, decisions_of(plans)
        self.stem = unit("stem", cin=3, cout=stem.values[0], kernel=3, stride=2, act="hswish")
        self.blocks = nn.ModuleList(SearchBlock(p, cfg) for p in plans)
        self.head = SlimConvBN(max(plans[-1].cout.values), head_mid, 1, 1, "hswish")
        self.head_mid = head_mid
        self.feature_info = feature_levels(plans, lambda p: max(p.cout.values), head_mid)
        self._features = {int(f["module"].split(".")[1]): f["num_chs"] for f in self.feature_info[:-1]}
        self.pre_logits = PreLogits(make_divisible(cfg.head_channels * cfg.width, cfg.divisor), "pool-conv", "hswish")

    def decisions(self) -> list[Decision]:
        return self._decisions

    def fixed_modules(self) -> dict[str, nn.Module]:
        return {"stem": self.stem}

    def apply_mix(self, mix: dict[str, Tensor]) -> None:
        active = {name: ActiveOptions.of(m) for name, m in mix.items()}
        # a sampled path (every mix one-hot, no gradient) runs sliced to the chosen widths; anything else runs
        # masked at the largest widths (a block cannot mix the two: their tensors have different widths)
        if all(a.plain for a in active.values()):
            for p, block in zip(self._plans, self.blocks):
                mid = p.mid.table[_chosen(active, p.cin.decision)][_chosen(active, p.expansion)]
                block.state = SlicedPath(_chosen(active, p.type), p.resolutions[_chosen(active, p.resolution)],
                                         mid, se_channels(mid, self.config.divisor),
                                         p.cout.values[_chosen(active, p.cout.decision)])
            return
        device = next(iter(mix.values())).device
        ones = torch.ones(1, device=device)
        single = ActiveOptions.of(ones)  # the mix of a block's only type or resolution
        stage_masks: dict[str | None, Tensor | None] = {}
        for p in self._plans:
            for width in (p.cin, p.cout):
                if width.decision not in stage_masks:
                    stage_masks[width.decision] = _mask(width, mix.get(width.decision), device)
        for p, block in zip(self._plans, self.blocks):
            g = mix[p.cin.decision] if p.cin.decision else ones
            h = mix[p.expansion] if p.expansion else ones
            joint = torch.outer(g, h).flatten()
            out = stage_masks[p.cout.decision]
            block.state = MaskedPath(active[p.type] if p.type else single,
                                     active[p.resolution] if p.resolution else single,
                                     joint @ block.mid_masks, joint @ block.se_masks,
                                     torch.ones(max(p.cout.values), device=device) if out is None else out)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        features = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self._features:  # a sliced path returns fewer channels: pad to the level's width, as masks do
                features.append(F.pad(x, (0, 0, 0, 0, 0, self._features[i] - x.shape[1])))
        features.append(self.head(x, cout=self.head_mid) if x.shape[1] != self.head.conv.in_channels
                        else self.head(x))
        return features

    def extract(self, choices: dict[str, str]) -> FBNetV2:
        """The standalone model of ``choices`` with its weights (and BatchNorm statistics) taken from this
        supernet's leading channels: the child the supernet computes on that path."""
        child = FBNetV2(self.config, choices)
        child.stem.load_state_dict(self.stem.state_dict())
        child.head.copy_from(self.head)
        for p, block, built in zip(self._plans, self.blocks, child.blocks):
            label = choices[p.type] if p.type else p.types[0]
            if not len(built.layers):
                continue
            source = block.candidates[label]
            if isinstance(source, SlimConvBN):
                built.layers[0].copy_from(source)
                continue
            for layer, name in zip(built.layers, [n for n in ("pw", "dw", "se", "pwl") if n in source]):
                layer.copy_from(source[name])
        return child

    def price(self, cost_model, input_size: int, in_channels: int = 3) -> ShapeCostTable:
        from .fbnetv2_cost import price

        return price(self, cost_model, input_size, in_channels)


# -- the standalone model ---------------------------------------------------------------------------------
class FBNetV2(Backbone):
    """A standalone FBNetV2-space model (no masks, no supernet code)."""

    def __init__(self, cfg: FBNetV2Config, choices: dict[str, str]):
        super().__init__()
        stem, plans, head_mid = plan(cfg)
        self.stem = unit("stem", cin=3, cout=stem.values[0], kernel=3, stride=2, act="hswish")
        blocks = []
        for p in plans:
            cin = chosen_width(p.cin, choices)
            cout = chosen_width(p.cout, choices)
            e = float(choices[p.expansion]) if p.expansion else p.expansions[0]
            label = choices[p.type] if p.type else p.types[0]
            factor = int(choices[p.resolution]) if p.resolution else p.resolutions[0]
            blocks.append(Block(label, cin, mid_channels(cin, e, cfg.divisor), cout, p.stride, p.residual, p.has_pw,
                                cfg.divisor, factor=factor, size=p.size, placement=cfg.placement))
        self.blocks = nn.Sequential(*blocks)
        last = chosen_width(plans[-1].cout, choices)
        self.head = unit("head", cin=last, cout=head_mid, act="hswish")
        self.feature_info = feature_levels(plans, lambda p: chosen_width(p.cout, choices), head_mid)
        self._features = [int(f["module"].split(".")[1]) for f in self.feature_info[:-1]]  # TorchScript: no sets
        self.pre_logits = PreLogits(make_divisible(cfg.head_channels * cfg.width, cfg.divisor), "pool-conv", "hswish")

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        features = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self._features:
                features.append(x)
        features.append(self.head(x))
        return features

    def chain(self) -> Chain:
        """The blocks, then the head's 1x1 conv (the last feature level)."""
        layers = [(f"block{i:02d}", b) for i, b in enumerate(self.blocks)] + [("head", self.head)]
        return Chain(self.stem, layers, sorted(self._features) + [len(self.blocks)])


def chosen_width(width: Width, choices: dict[str, str]) -> int:
    return int(choices[width.decision]) if width.decision else width.values[0]


class FBNetV2Space(SearchSpace):
    """Channels per stage, type / expansion / resolution per block; masked max-width supernet (DMaskingNAS)."""

    name: ClassVar[str] = "fbnetv2"
    Config: ClassVar[type[FBNetV2Config]] = FBNetV2Config

    def decisions(self) -> list[Decision]:
        return decisions_of(plan(self.config)[1])

    def supernet(self) -> FBNetV2Supernet:
        return FBNetV2Supernet(self.config)

    def build(self, arch: Arch) -> FBNetV2:
        self.check_arch(arch)
        return FBNetV2(self.config, arch.choices)

    def arch_operations(self, arch: Arch, input_size: int, in_channels: int = 3):
        from .fbnetv2_cost import built_operations

        return built_operations(self.build(arch), input_size, in_channels)

    @classmethod
    def named_archs(cls) -> dict[str, Arch]:
        from .fbnetv2_named import named_archs

        return named_archs()


@hookimpl
def nascore_search_spaces():
    return [FBNetV2Space]

