"""The FBNetV5 search space (Wu et al., 2021): FBNetV3 blocks on four parallel paths at 1/4, 1/8, 1/16 and
1/32 of the input, joined after every stage by HRNet-style cross-resolution fusion; every block can be kept or
skipped, so an architecture is a binary mask over the blocks.

Stage ``s`` (1-based) runs paths ``0 .. s-1``; the fusion after it also makes the next stage's new, coarser
path from every path (strided 3x3 convs, as HRNet's exchange units). Blocks are inverted residuals with squeeze-excite and
h-swish (FBNetV3's); a skipped block is an identity. One set of keep/skip decisions serves every task:
per-task architectures come from per-task policies over them (the ``reinforce`` strategy).
"""
# no `from __future__ import annotations`: the built model's forward must fx-trace and script (features.Backbone)

from collections.abc import Callable
from typing import ClassVar

from pydantic import Field, field_validator
from torch import Tensor, nn

from nascore.arch import Arch
from nascore.features import Backbone, PreLogits, make_divisible
from nascore.hookspecs import hookimpl
from nascore.space import MAX_BLOCKS, SearchSpace, SpaceConfig
from nascore.supernet import Decision, MixedOp, Supernet

from .fbnetv2_blocks import Block, SlimConvBN, mid_channels

OPTIONS = ("keep", "skip")


class FBNetV5Config(SpaceConfig):
    input_size: int = Field(224, ge=32, description="input resolution the costs are priced at")
    width: float = Field(1.0, gt=0, le=4, description="channel multiplier")
    stem: int = Field(16, ge=1, description="channels of the stride-2 stem conv")
    channels: list[int] = Field([24, 48, 96, 192], min_length=4, max_length=4,
                                description="channels of the 1/4, 1/8, 1/16, 1/32 paths")
    blocks: list[int] = Field([2, 2, 3, 2], min_length=1, max_length=4,
                              description="searchable blocks per path in each stage (stage s has s paths)")
    expansion: float = Field(4.0, gt=0)
    kernel: int = Field(3, description="depth-wise kernel of the blocks (3 or 5)")
    head_channels: int = Field(1280, ge=8, description="1x1 conv after pooling, before a classifier")
    divisor: int = Field(8, ge=1)

    @field_validator("kernel")
    @classmethod
    def _kernel(cls, v: int) -> int:
        if v not in (3, 5):
            raise ValueError(f"kernel must be 3 or 5, got {v}")
        return v

    @field_validator("blocks")
    @classmethod
    def _blocks(cls, v: list[int]) -> list[int]:
        if min(v) < 0 or max(v) > MAX_BLOCKS:
            raise ValueError(f"block counts must be 0 to {MAX_BLOCKS}, got {v}")
        return v


def widths(cfg: FBNetV5Config) -> list[int]:
    return [make_divisible(c * cfg.width, cfg.divisor) for c in cfg.channels]


def block_names(cfg: FBNetV5Config) -> list[list[list[str]]]:
    """Decision names per stage, path and block: ``s2.p1.b3`` = stage 2, path 1 (1/8), third block."""
    return [[[f"s{s + 1}.p{p}.b{b + 1}" for b in range(n)] for p in range(s + 1)]
            for s, n in enumerate(cfg.blocks)]


class Fuse(nn.Module):
    """HRNet's exchange unit: output path ``j`` sums every input path, resampled to its resolution (strided 3x3
    convs going down, a 1x1 conv and nearest upsampling going up), then h-swish."""

    def __init__(self, chans: list[int], inputs: int, outputs: int):
        super().__init__()
        self.links = nn.ModuleDict()
        for j in range(outputs):
            for i in range(inputs):
                if i == j:
                    continue
                if i > j:  # coarser to finer
                    link = nn.Sequential(SlimConvBN(chans[i], chans[j], 1, 1, None),
                                         nn.Upsample(scale_factor=2 ** (i - j)))
                else:  # finer to coarser: one strided 3x3 conv per halving, the last one to the output width
                    last = j - i - 1
                    link = nn.Sequential(*(SlimConvBN(chans[i], chans[j] if k == last else chans[i], 3, 2,
                                                   None if k == last else "hswish") for k in range(j - i)))
                self.links[f"{i}to{j}"] = link
        self.act = nn.Hardswish()
        self.outputs = outputs

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        out = []
        for j in range(self.outputs):
            y = xs[j] if j < len(xs) else None
            for i, x in enumerate(xs):
                if i != j:
                    z = self.links[f"{i}to{j}"](x)
                    y = z if y is None else y + z
            out.append(self.act(y))
        return out


class _Body(nn.Module):
    """Stem, stages of per-path blocks (MixedOps in the supernet, blocks or identities when built), fusions."""

    def _init_body(self, cfg: FBNetV5Config, make: Callable[[str, Callable[[], Block]], nn.Module]) -> None:
        chans, stem = widths(cfg), make_divisible(cfg.stem * cfg.width, cfg.divisor)
        self.stem = SlimConvBN(3, stem, 3, 2, "hswish")
        self.stem2 = SlimConvBN(stem, chans[0], 3, 2, "hswish")
        self.stages = nn.ModuleList()
        self.fusions = nn.ModuleList()
        for s, names in enumerate(block_names(cfg)):
            paths = nn.ModuleList()
            for p, path_names in enumerate(names):
                mid = mid_channels(chans[p], cfg.expansion, cfg.divisor)
                paths.append(nn.Sequential(*(make(name, lambda c=chans[p], m=mid: Block(
                    f"k{cfg.kernel}_se_hs", c, m, c, 1, True, divisor=cfg.divisor)) for name in path_names)))
            self.stages.append(paths)
            # after stage s, path s+1 enters (from the fusion) for the next stage; the last stage fuses in place
            outputs = min(s + 2, 4) if s + 1 < len(cfg.blocks) else s + 1
            self.fusions.append(Fuse(chans, s + 1, outputs))
        self.feature_info = [dict(num_chs=stem, reduction=2, module="stem")] + [
            dict(num_chs=chans[p], reduction=4 * 2 ** p, module=f"fusions.{len(cfg.blocks) - 1}")
            for p in range(len(cfg.blocks))]
        self.pre_logits = PreLogits(make_divisible(cfg.head_channels * cfg.width, cfg.divisor), "pool-conv", "hswish")

    def forward(self, x: Tensor) -> list[Tensor]:
        first = self.stem(x)
        xs = [self.stem2(first)]
        for paths, fuse in zip(self.stages, self.fusions):
            xs = fuse([path(x) for path, x in zip(paths, xs)])
        return [first, *xs]


class FBNetV5Supernet(_Body, Supernet):
    def __init__(self, cfg: FBNetV5Config, decisions: list[Decision]):
        super().__init__()
        self._init_body(cfg, lambda name, block: MixedOp(name, {"keep": block(), "skip": nn.Identity()}))
        self._decisions = decisions

    def decisions(self) -> list[Decision]:
        return self._decisions

    def fixed_modules(self) -> dict[str, nn.Module]:
        fixed = {"stem": self.stem, "stem2": self.stem2}
        for s, fuse in enumerate(self.fusions):
            fixed.update({f"fusions.{s}.{k}": link for k, link in fuse.links.items()})
        return fixed


class FBNetV5(_Body, Backbone):
    """A standalone FBNetV5-space model: kept blocks only."""

    def __init__(self, cfg: FBNetV5Config, choices: dict[str, str]):
        super().__init__()
        self._init_body(cfg, lambda name, block: block() if choices[name] == "keep" else nn.Identity())


class FBNetV5Space(SearchSpace):
    """Keep/skip per block on four parallel resolution paths with cross-resolution fusion."""

    name: ClassVar[str] = "fbnetv5"
    Config: ClassVar[type[FBNetV5Config]] = FBNetV5Config

    def decisions(self) -> list[Decision]:
        return [Decision(n, OPTIONS) for stage in block_names(self.config) for path in stage for n in path]

    def supernet(self) -> FBNetV5Supernet:
        return FBNetV5Supernet(self.config, self.decisions())

    def build(self, arch: Arch) -> FBNetV5:
        self.check_arch(arch)
        return FBNetV5(self.config, arch.choices)


@hookimpl
def nascore_search_spaces():
    return [FBNetV5Space]
