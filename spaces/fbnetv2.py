"""The FBNetV2 search space (Wan et al., CVPR 2020), searched with DMaskingNAS.

Per stage: the number of output channels (one decision shared by the stage's blocks, as residual additions
need); per block: the block type (k3/k5 depth-wise, with or without squeeze-excite, ReLU or h-swish, or
skip), the expansion rate and the input resolution. Channel and expansion options are masks over one
max-width convolution scaled by the Gumbel-softmax mix, ``sum_i g_i * m_i``; a resolution option subsamples the
block's input, runs the block and places the result back pixel-aligned at full size. Costs follow effective
shape propagation (``nascore.spaces.shape_cost``). A derived arch builds with genuinely smaller convolutions.
FBNetV2-F1..F4 and L1/L2 ship as named archs (mobile-vision's ``fbnet_modeldef_cls_fbnetv2.py``).
"""
# no `from __future__ import annotations`: the built model's forward must fx-trace and script (features.Backbone)

from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from nascore.arch import Arch
from nascore.features import Backbone, Chain, PreLogits, make_divisible
from nascore.hookspecs import hookimpl
from nascore.space import SearchSpace
from nascore.spaces.shape_cost import ShapeCostTable, Width
from nascore.supernet import ActiveOptions, Decision, Supernet

from .fbnetv2_blocks import (
    TYPES,
    Block,
    SlimConvBN,
    SlimSE,
    mid_channels,
    out_size,
    place,
    se_channels,
    subsample,
    unit,
)
from .fbnetv2_cost import built_operations, price
from .fbnetv2_named import named_archs
from .fbnetv2_plan import BlockPlan, FBNetV2Config, decisions_of, feature_levels, plan, rate_label
from .fbnetv2_shared import SharedTypes


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
        computed = [t for t in p.types if TYPES[t] is not None]
        se_hidden = se_channels(mid, cfg.divisor)
        self.shared = (SharedTypes(p.types, cin, mid, cout, p.stride, p.has_pw, se_hidden)
                       if cfg.shared_weights and computed else None)
        for t in p.types:
            spec = TYPES[t]
            if spec is None:
                if not p.residual:
                    self.candidates[t] = SlimConvBN(cin, cout, 1, p.stride, "relu")
                continue
            if self.shared is not None:
                continue
            kernel, se, act = spec
            parts = nn.ModuleDict()
            if p.has_pw:
                parts["pw"] = SlimConvBN(cin, mid, 1, 1, act)
            parts["dw"] = SlimConvBN(mid, mid, kernel, p.stride, act, depthwise=True)
            if se:
                parts["se"] = SlimSE(mid, se_hidden, act)
            parts["pwl"] = SlimConvBN(mid, cout, 1, 1, None)
            self.candidates[t] = parts
        # 0/1 masks: row (j, k) keeps the first mid(j, k) hidden channels
        mids = torch.tensor(p.mid.table).flatten()
        self.register_buffer("mid_masks", (torch.arange(mid)[None] < mids[:, None]).float(), persistent=False)
        ses = torch.tensor([se_channels(int(m), cfg.divisor) for m in mids])
        self.register_buffer("se_masks", (torch.arange(se_channels(mid, cfg.divisor))[None] < ses[:, None]).float(),
                             persistent=False)
        self.state: SlicedPath | MaskedPath | None = None
        self.recompute = cfg.recompute_resolutions
        self.computes = bool(len(self.candidates)) or self.shared is not None  # not only identity skips

    def forward(self, x: Tensor) -> Tensor:
        p, st = self.plan, self.state
        if st is None:
            raise RuntimeError(f"no mix set for block '{p.name}'")
        full = out_size(tuple(x.shape[-2:]), p.stride)
        if isinstance(st, SlicedPath):
            y = self._branch(p.types[st.type], subsample(x, st.factor), st)
            y = None if y is None else place(y, st.factor, full, self.placement)
        else:
            y = None
            for i in st.resolutions.indices:
                r = p.resolutions[i]
                if r > 1 and self.recompute and self.computes and torch.is_grad_enabled():
                    # keeps x (the block's input, kept anyway) instead of the branch's activations; the state is
                    # passed, not read again in backward, where the supernet may already hold the next mix; the
                    # branch draws no random numbers (no RNG state to keep)
                    branch = checkpoint(self._resolution, x, i, st, use_reentrant=False, preserve_rng_state=False,
                                        context_fn=lambda: (nullcontext(), _statistics_kept(self)))
                else:
                    branch = self._resolution(x, i, st)
                if branch is None:
                    continue
                if y is not None and r > 1 and self.placement == "intersperse":
                    y[..., ::r, ::r] += branch  # add at the placed pixels: no zero-filled full-size tensor
                else:
                    branch = place(branch, r, full, self.placement)
                    y = branch if y is None else y + branch
        if p.residual:
            return x if y is None else x + y
        return y

    def _resolution(self, x: Tensor, i: int, st: MaskedPath) -> Tensor | None:
        """The mix of every active type on ``x`` subsampled to resolution option ``i``, times its weight (None
        where every type is a skip of a residual block)."""
        p, xs, branch = self.plan, subsample(x, self.plan.resolutions[i]), None
        for j in st.types.indices:
            b = self._branch(p.types[j], xs, st)
            if b is not None:
                b = b if p.type is None else st.types.mix[j] * b  # no decision: a mix of 1, no multiply
                branch = b if branch is None else branch + b
        if branch is None or p.resolution is None:
            return branch
        return st.resolutions.mix[i] * branch

    def _branch(self, label: str, x: Tensor, st: SlicedPath | MaskedPath) -> Tensor | None:
        """The block's residual branch for one type on (subsampled) ``x``, sliced or masked as ``st`` says;
        None for a skip in a residual block."""
        if self.shared is not None and TYPES[label] is not None:
            if isinstance(st, SlicedPath):
                return self.shared.sliced(label, x, st.mid, st.se, st.out)
            return self.shared.masked(label, x, st.mid_mask, st.se_mask, st.out_mask)
        if label not in self.candidates:
            return None
        op = self.candidates[label]
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


@contextmanager
def _statistics_kept(module: nn.Module) -> Iterator[None]:
    """Around a recomputation in backward: BatchNorm, in training mode, updates its running statistics again;
    put them back, so that a step updates them once, as without recomputation (outputs use batch statistics)."""
    norms = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
    kept = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in norms]
    try:
        yield
    finally:
        # through .data: the batch-norm calls saved for backward check the buffers' version counter, which
        # BatchNorm's own update leaves alone and a plain copy_ would bump
        for m, (mean, var, count) in zip(norms, kept):
            m.running_mean.data.copy_(mean)
            m.running_var.data.copy_(var)
            m.num_batches_tracked.data.copy_(count)


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

    def canonical(self, choices: Mapping[str, str]) -> dict[str, str]:
        """One spelling per built network: expansion rates that round to the same hidden width at the chosen input
        width are one arch, spelt with the first such rate; a skip block's expansion, and the resolution of a skip
        that is the identity, build nothing and are spelt with their first option."""
        out = dict(choices)
        for p in self._plans:
            skip = TYPES[choices[p.type] if p.type else p.types[0]] is None
            if p.expansion:
                row = p.mid.table[p.cin.values.index(chosen_width(p.cin, choices))]
                rate = 0 if skip else row.index(row[p.expansions.index(float(choices[p.expansion]))])
                out[p.expansion] = rate_label(p.expansions[rate])
            if p.resolution and skip and p.residual:
                out[p.resolution] = str(p.resolutions[0])
        return out

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

    def extract(self, choices: dict[str, str]) -> "FBNetV2":
        """The standalone model of ``choices`` with its weights (and BatchNorm statistics) taken from this
        supernet's leading channels: the child the supernet computes on that path."""
        child = FBNetV2(self.config, choices)
        child.stem.load_state_dict(self.stem.state_dict())
        child.head.copy_from(self.head)
        for p, block, built in zip(self._plans, self.blocks, child.blocks):
            label = choices[p.type] if p.type else p.types[0]
            if not len(built.layers):
                continue
            source = block.candidates[label] if label in block.candidates else None
            if isinstance(source, SlimConvBN):
                built.layers[0].copy_from(source)
                continue
            if source is None:  # shared weights: the type's parts of them
                shared = block.shared
                parts = {"pw": shared.pw, "dw": shared.dw, "se": shared.se if TYPES[label][1] else None,
                         "pwl": shared.pwl}
            else:
                parts = dict(source.items())
            for layer, name in zip(built.layers, [n for n in ("pw", "dw", "se", "pwl") if parts.get(n) is not None]):
                layer.copy_from(parts[name])
        return child

    def price(self, cost_model, input_size: int, in_channels: int = 3) -> ShapeCostTable:
        return price(self.config, self.decisions(), cost_model, input_size, in_channels)


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
        return built_operations(self.build(arch), input_size, in_channels)

    @classmethod
    def named_archs(cls) -> dict[str, Arch]:

        return named_archs()


@hookimpl
def nascore_search_spaces():
    return [FBNetV2Space]

