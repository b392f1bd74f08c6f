"""FBNetV2's blocks, with mobile-vision's semantics (the code the released FBNetV2 models use), in two forms:

* slim layers (``SlimConvBN``, ``SlimSE``) hold one max-width convolution and run it either sliced to the
  chosen widths (a sampled path: only those channels are computed) or at full width with its channels
  scaled by a mask ``sum_i g_i * m_i`` (DMaskingNAS' soft path);
* the same layers, built at exactly one width, are the standalone blocks of a derived model (no masks).

A block is ``[1x1 expand] -> kxk depth-wise (stride) -> [squeeze-excite] -> 1x1 project``; resolution
search subsamples the block's input, runs the block, and places the result back at full size.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nascore.batchnorm import sliced_batch_norm
from nascore.kernels import centre

#: block type label -> (kernel, squeeze-excite, activation); "skip" is an identity or a 1x1 conv
TYPES: dict[str, tuple[int, bool, str] | None] = {
    "k3": (3, False, "relu"), "k3_hs": (3, False, "hswish"), "k3_se": (3, True, "relu"),
    "k3_se_hs": (3, True, "hswish"), "k5": (5, False, "relu"), "k5_hs": (5, False, "hswish"),
    "k5_se": (5, True, "relu"), "k5_se_hs": (5, True, "hswish"), "skip": None,
}


def divisible_by(num: float, divisor: int = 8) -> int:
    """mobile-vision's ``get_divisible_by`` (round half up to a multiple, +divisor if that loses over 5%).

    Not ``features.make_divisible`` (MobileNet's rule, 10%): the released FBNetV2 widths are computed with
    this one, and the published parameter counts depend on it.
    """
    ret = int(num)
    if num % divisor != 0:
        ret = int((math.floor(num / divisor + 0.5) or 1) * divisor)
        if ret < 0.95 * num:
            ret += divisor
    return max(ret, divisor)


def mid_channels(cin: int, expansion: float, divisor: int = 8) -> int:
    """Hidden width of a block; expansion 1 keeps the input width (no expansion conv)."""
    return cin if expansion == 1 else divisible_by(cin * expansion, divisor)


def se_channels(mid: int, divisor: int = 8) -> int:
    return divisible_by(int(mid * 0.25), divisor)


def activation(name: str | None) -> nn.Module:
    return {"relu": nn.ReLU(), "hswish": nn.Hardswish(), None: nn.Identity()}[name]


class SlimConvBN(nn.Module):
    """Conv (no bias) + BatchNorm + activation at the largest width, run sliced or masked.

    ``depthwise``: groups = channels, and the output width is the input's. The mask scales BatchNorm's affine
    parameters (``gamma * m``, ``beta * m``) rather than the output: the same values for one-hot masks (and for
    any mask before ReLU, which commutes with a non-negative scale), without storing one more activation per
    layer for the backward pass. (Submodules are read through ``self``, not local aliases: TorchScript cannot type
    a module held in a local.)
    """

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, act: str | None = "relu",
                 depthwise: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=cin if depthwise else 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = activation(act)
        self.depthwise = depthwise

    def forward(self, x: Tensor, cout: int | None = None, mask: Tensor | None = None) -> Tensor:
        """``cout`` set: compute only ``cout`` output channels from the ``x.shape[1]`` first inputs; ``mask``
        set: compute every channel and scale them by the (soft) channel mask; neither: the plain layer."""
        cin, full = x.shape[1], self.conv.out_channels
        if cout is not None and (cin != self.conv.in_channels or cout != full):  # else the whole layer: no slicing
            if self.depthwise:
                cout = cin
                y = F.conv2d(x, self.conv.weight[:cin], None, self.conv.stride, self.conv.padding, groups=cin)
            else:
                y = F.conv2d(x, self.conv.weight[:cout, :cin], None, self.conv.stride, self.conv.padding)
            return self.act(self.normalize(y, cout))
        if mask is None:
            return self.act(self.bn(self.conv(x)))
        return self.act(self.normalize(self.conv(x), full, mask))

    def normalize(self, y: Tensor, width: int, mask: Tensor | None = None) -> Tensor:
        """BatchNorm on the first ``width`` channels (``nascore.batchnorm.sliced_batch_norm``), its scale and shift
        times the (soft) channel mask when one is given."""
        weight, bias = self.bn.weight[:width], self.bn.bias[:width]
        if mask is not None:
            weight, bias = weight * mask, bias * mask
        if torch.jit.is_scripting():  # TorchScript passes no module to a function; a built model never slices
            raise RuntimeError("SlimConvBN: a sliced or masked BatchNorm cannot run in TorchScript")
        else:
            return sliced_batch_norm(self.bn, y, weight, bias)

    @torch.no_grad()
    def copy_from(self, big: SlimConvBN) -> None:
        """Take this layer's weights from the leading channels of a wider one (a supernet's), and the centre of
        a larger kernel."""
        w = self.conv.weight
        self.conv.weight.copy_(centre(big.conv.weight[:w.shape[0], :w.shape[1]], self.conv.kernel_size[0]))
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(self.bn, name).copy_(getattr(big.bn, name)[:w.shape[0]])
        self.bn.num_batches_tracked.copy_(big.bn.num_batches_tracked)


class SlimSE(nn.Module):
    """Squeeze-excite with a hard-sigmoid gate (mobile-vision's ``se_hsig``) at the largest width."""

    def __init__(self, channels: int, hidden: int, act: str):
        super().__init__()
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.act = activation(act)
        self.expand = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: Tensor, hidden: int | None = None, mask: Tensor | None = None) -> Tensor:
        s = x.mean((2, 3), keepdim=True)
        if hidden is None:
            s = self.act(self.reduce(s))
            if mask is not None:
                s = s * mask.view(1, -1, 1, 1)
            s = self.expand(s)
        else:
            c, reduce_bias, expand_bias = x.shape[1], self.reduce.bias, self.expand.bias
            assert reduce_bias is not None and expand_bias is not None  # for TorchScript: Conv2d's bias is Optional
            s = self.act(F.conv2d(s, self.reduce.weight[:hidden, :c], reduce_bias[:hidden]))
            s = F.conv2d(s, self.expand.weight[:c, :hidden], expand_bias[:c])
        return x * F.hardsigmoid(s)

    @torch.no_grad()
    def copy_from(self, big: SlimSE) -> None:
        hidden, c = self.reduce.weight.shape[:2]
        self.reduce.weight.copy_(big.reduce.weight[:hidden, :c])
        self.reduce.bias.copy_(big.reduce.bias[:hidden])
        self.expand.weight.copy_(big.expand.weight[:c, :hidden])
        self.expand.bias.copy_(big.expand.bias[:c])


def subsample(x: Tensor, factor: int) -> Tensor:
    """Nearest subsampling that keeps pixel (0, 0): pixel (i, j) is the input's (factor*i, factor*j)."""
    return x if factor == 1 else x[..., ::factor, ::factor]


def place(y: Tensor, factor: int, size: tuple[int, int], mode: str = "intersperse") -> Tensor:
    """Put a block's output computed on a subsampled input back at full ``size``, pixel-aligned: output pixel
    (i, j) goes to (factor*i, factor*j). ``intersperse`` fills the others with zeros (FBNetV2's final
    scheme: receptive fields and pixels both stay aligned); ``nearest`` repeats each value."""
    if factor == 1:
        return y
    if mode == "nearest":
        return y.repeat_interleave(factor, -2).repeat_interleave(factor, -1)[..., :size[0], :size[1]]
    out = y.new_zeros(list(y.shape[:-2]) + [size[0], size[1]])
    out[..., ::factor, ::factor] = y
    return out


torch.fx.wrap("place")  # one call in an fx graph: tracing cannot unpack a traced shape into new_zeros' size


def out_size(size: tuple[int, int], stride: int) -> tuple[int, int]:
    """Output size of a k//2-padded convolution with ``stride``."""
    return (-(-size[0] // stride), -(-size[1] // stride))


# -- units: the operations a built block runs, as modules a cost table can price -----------------------------
class Subsample(nn.Module):
    def __init__(self, factor: int):
        super().__init__()
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        return subsample(x, self.factor)

    def graph_node(self) -> tuple[str, dict]:  # nascore.GraphOperation: a strided slice reads as a 1x1 pool
        return "avg_pool", {"kernel": (1, 1), "stride": (self.factor, self.factor)}


class Place(nn.Module):
    """``place`` as a module; ``size`` (the full output size) is given per call, or the one it is priced at."""

    def __init__(self, factor: int, size: tuple[int, int], mode: str):
        super().__init__()
        self.factor, self.size, self.mode = factor, tuple(size), mode

    def forward(self, y: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        return place(y, self.factor, self.size if size is None else size, self.mode)

    def graph_node(self) -> tuple[str, dict]:  # nascore.GraphOperation: the placement reads as an upsample
        return "upsample", {}


class Residual(nn.Module):
    """``x + y``; ``y`` defaults to ``x`` so that the addition can be priced on one input."""

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return x + (x if y is None else y)


def unit(kind: str, **params) -> nn.Module:
    """One operation of a block at exact widths, as both the built model and the cost tables use it, with the
    op_key a cost table caches it by. Kinds: stem, pw, dw, se, pwl, skip, head, sub, place, add."""
    p = params
    if kind in ("stem", "pw", "head"):
        m = SlimConvBN(p["cin"], p["cout"], p.get("kernel", 1), p.get("stride", 1), p["act"])
    elif kind == "dw":
        m = SlimConvBN(p["cin"], p["cin"], p["kernel"], p["stride"], p["act"], depthwise=True)
    elif kind == "se":
        m = SlimSE(p["cin"], p["hidden"], p["act"])
    elif kind == "pwl":
        m = SlimConvBN(p["cin"], p["cout"], 1, 1, None)
    elif kind == "skip":  # mobile-vision's Identity when the shape changes: 1x1 conv + BN + ReLU
        m = SlimConvBN(p["cin"], p["cout"], 1, p["stride"], "relu")
    elif kind == "sub":
        m = Subsample(p["factor"])
    elif kind == "place":
        m = Place(p["factor"], p["size"], p["mode"])
    elif kind == "add":
        m = Residual()
    else:  # pragma: no cover - programming error
        raise ValueError(f"unknown unit kind {kind!r}")
    m.op_key = unit_key(kind, **params)
    return m


def unit_key(kind: str, **params) -> str:
    """The op_key of ``unit(kind, **params)``, without building it."""
    return "fbnetv2:" + kind + "(" + ",".join(f"{n}={v}" for n, v in sorted(params.items())) + ")"


class Block(nn.Module):
    """A built block: [subsample] -> [1x1 expand] -> kxk depth-wise -> [SE] -> 1x1 project -> [place], plus the
    residual; or a skip (identity, or a 1x1 conv where the shape changes)."""

    def __init__(self, label: str, cin: int, mid: int, cout: int, stride: int, residual: bool, has_pw: bool = True,
                 divisor: int = 8, factor: int = 1, size: tuple[int, int] | None = None,
                 placement: str = "intersperse"):
        """``factor`` > 1: the block runs on the input subsampled by it (``size``: the input size it is priced
        at, ``placement``: see :func:`place`)."""
        super().__init__()
        self.op_key = (f"fbnetv2-block:{label}:{cin}>{mid}>{cout}:s{stride}:r{factor}:{placement}:"
                       f"{'res' if residual else 'nores'}:{'pw' if has_pw else 'nopw'}:d{divisor}")
        self.sub = unit("sub", factor=factor) if factor > 1 else None
        self.place = unit("place", factor=factor, size=out_size(size, stride), mode=placement) if factor > 1 else None
        self.add = unit("add") if residual else None
        self.stride = stride
        self.layers = nn.Sequential()
        spec = TYPES[label]
        if spec is None:
            if not residual:
                self.layers.append(unit("skip", cin=cin, cout=cout, stride=stride))
            return
        kernel, se, act = spec
        if has_pw:
            self.layers.append(unit("pw", cin=cin, cout=mid, act=act))
        self.layers.append(unit("dw", cin=mid, kernel=kernel, stride=stride, act=act))
        if se:
            self.layers.append(unit("se", cin=mid, hidden=se_channels(mid, divisor), act=act))
        self.layers.append(unit("pwl", cin=mid, cout=cout))

    def forward(self, x: Tensor) -> Tensor:
        if not len(self.layers):
            return x
        y = self.layers(self.sub(x) if self.sub is not None else x)
        if self.place is not None:
            y = self.place(y, out_size((x.shape[-2], x.shape[-1]), self.stride))
        return self.add(x, y) if self.add is not None else y
