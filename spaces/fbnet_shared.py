"""Weight entanglement for FBNet's supernet (``fbnet`` with ``shared_weights: true``): a layer's candidate blocks
are views of one set of weights, as in once-for-all and BigNAS, and as FBNetV2's channel masks already are.

A layer holds the largest block its candidates need: a 1x1 expansion to the widest hidden width, a depth-wise conv
of the largest kernel, a 1x1 projection, each followed by BatchNorm. A candidate ``k{k}_e{e}[_g2]`` computes exactly
what the standalone block of that label computes, with its weights taken from the shared ones:

- kernel 3 is the centre of kernel 5 (BigNAS' centre crop);
- expansion e uses the first ``mid(e)`` hidden channels (e1, which has no expansion conv, feeds the input straight
  into the first ``cin`` depth-wise channels; where e1 is a candidate, the expansion's first ``cin`` output channels
  are the identity, not trained, so that those channels carry the input in every block);
- a grouped block (``g2``: a channel shuffle, then a 2-group projection) runs in the other blocks' channel order:
  the shuffle is a permutation, which the depth-wise conv and BatchNorm commute with, so it moves into the
  projection, the dense projection kernel masked to what the shuffled groups connect (the built block's
  depth-wise and projection weights are the shared ones permuted); a hidden channel then carries the same input
  channel in every block;
- BatchNorm uses the first channels of the shared statistics and affine parameters (re-estimate them per path
  before a path is evaluated: ``nascore.loops.recalibrate_batchnorm``).

``skip`` keeps weights of its own (the strided 1x1 conv where the shape changes). The last BatchNorm of a residual
layer starts at zero scale (BigNAS; Goyal et al. 2017), so every path of such a layer starts as the identity and
paths differ at first only where the shape changes. Every training step moves the weights every path reads; with
the sandwich rule (``nascore.performance.oneshot``) the paths of this supernet learn where those of FBNet's
separate candidates stay at chance (BENCHMARKS "Supernets that rank"). A derived arch builds as the plain FBNet
blocks; its costs are those blocks' costs.
"""
from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nascore.batchnorm import sliced_batch_norm
from nascore.features import make_divisible
from nascore.kernels import centre

from .fbnet_blocks import ACTIVATIONS, CANDIDATES, channel_shuffle, conv_bn, make_block


class SharedLayer(nn.Module):
    """The weights of one searchable layer that its candidates (:class:`SharedCandidate`) share."""

    def __init__(self, labels: tuple[str, ...], cin: int, cout: int, stride: int, divisor: int, act: str):
        super().__init__()
        blocks = [CANDIDATES[label] for label in labels if CANDIDATES[label] is not None]
        self.cin, self.cout, self.stride, self.divisor, self.act_name = cin, cout, stride, divisor, act
        kernel = max((k for k, _, _ in blocks), default=3)
        mid = max((self.mid(e) for _, e, _ in blocks), default=cin)
        # with e1 among the candidates, the expansion's first cin output channels are the identity (not trained):
        # an e1 block feeds its input where the expanded blocks feed their first hidden channels, so a hidden
        # channel means about the same whichever block a path draws (without it, paths that mix e1 and expanded
        # blocks from layer to layer do not learn: BENCHMARKS "Supernets that rank")
        tied = cin if mid > cin and any(e == 1 for _, e, _ in blocks) else 0
        self.pw = nn.Conv2d(cin, mid - tied, 1, bias=False) if mid > cin else None
        self.pw_bn = nn.BatchNorm2d(mid) if mid > cin else None
        self.register_buffer("pw_identity", torch.eye(cin).view(cin, cin, 1, 1) if tied else None, persistent=False)
        self.dw = nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False)
        self.dw_bn = nn.BatchNorm2d(mid)
        self.pwl = nn.Conv2d(mid, cout, 1, bias=False)
        self.pwl_bn = nn.BatchNorm2d(cout)
        if stride == 1 and cin == cout:  # a residual block starts as the identity whatever the path (BigNAS)
            nn.init.zeros_(self.pwl_bn.weight)
        self.act = ACTIVATIONS[act](inplace=False)
        reshaped = "skip" in labels and not (cin == cout and stride == 1)
        self.skip = conv_bn(cin, cout, 1, stride, act=act) if reshaped else None

    def mid(self, expansion: int) -> int:
        """Hidden width of expansion ``expansion``, as the standalone block rounds it."""
        return self.cin if expansion == 1 else make_divisible(self.cin * expansion, self.divisor)

    def expansion(self, mid: int) -> Tensor:
        """The first ``mid`` output channels of the expansion conv's kernel."""
        if self.pw_identity is None:
            return self.pw.weight[:mid]
        return torch.cat([self.pw_identity, self.pw.weight[:mid - self.cin]])

    def run(self, x: Tensor, kernel: int, expansion: int, groups: int) -> Tensor:
        """The block ``k{kernel}_e{expansion}[_g{groups}]`` on ``x``, computed from the shared weights."""
        mid = self.mid(expansion)
        h = x
        if mid != self.cin:
            h = self.act(sliced_batch_norm(self.pw_bn, F.conv2d(x, self.expansion(mid))))
        w = centre(self.dw.weight[:mid], kernel)
        h = self.act(sliced_batch_norm(self.dw_bn, F.conv2d(h, w, None, self.stride, kernel // 2, groups=mid)))
        w = self.pwl.weight[:, :mid]
        if groups > 1:  # the shuffle, a permutation the depth-wise stage commutes with, moves into the projection
            w = w * shuffled_groups(mid, self.cout, groups, w.device, w.dtype)
        y = sliced_batch_norm(self.pwl_bn, F.conv2d(h, w))
        return x + y if self.stride == 1 and self.cin == self.cout else y


@lru_cache(maxsize=None)  # one mask per layer shape: built once, not at every forward
def shuffled_groups(channels: int, cout: int, groups: int, device: torch.device,
                    dtype: torch.dtype = torch.float32) -> Tensor:
    """The (output, hidden channel) pairs that a channel shuffle then a ``groups``-group 1x1 conv connect, in the
    hidden channels' order before the shuffle: a 0/1 mask of the dense projection kernel (not to be modified)."""
    slot_of = torch.empty(channels, dtype=torch.long, device=device)
    slot_of[shuffle_order(channels, groups, device)] = torch.arange(channels, device=device)
    outputs = torch.arange(cout, device=device) // (cout // groups)
    return (outputs[:, None] == (slot_of // (channels // groups))[None, :]).to(dtype)[:, :, None, None]


def shuffle_order(channels: int, groups: int, device: torch.device | None = None) -> Tensor:
    """``order[i]``: the channel that a channel shuffle puts at position ``i``."""
    return channel_shuffle(torch.arange(channels, device=device).view(1, channels, 1, 1), groups).flatten()


class SharedCandidate(nn.Module):
    """One candidate of a :class:`SharedLayer`: no weights of its own but ``skip``'s; ``op_key`` and
    :meth:`standalone` are those of the plain block, which cost models price."""

    def __init__(self, label: str, layer: SharedLayer):
        super().__init__()
        object.__setattr__(self, "layer", layer)  # a reference, not a submodule: the weights are registered once
        self.label = label
        self.spec = CANDIDATES[label]
        self.op_key = self.standalone().op_key

    def standalone(self) -> nn.Module:
        """The plain FBNet block of this label at this layer's shape (what a derived arch builds)."""
        layer = self.layer
        return make_block(self.label, layer.cin, layer.cout, layer.stride, layer.divisor, layer.act_name)

    def forward(self, x: Tensor) -> Tensor:
        if self.spec is not None:
            return self.layer.run(x, *self.spec)
        return x if self.layer.skip is None else self.layer.skip(x)
