"""Weight entanglement across FBNetV2's block types (``fbnetv2`` with ``shared_weights: true``): a block's types
are views of one set of weights, as its channel and expansion options already are (masks over one max-width
convolution), and as FBNet's ``shared_weights`` does for FBNet's candidates (``nascore.spaces.fbnet_shared``).

A block holds one [1x1 expand] -> depth-wise conv of the largest kernel -> [squeeze-excite] -> 1x1 project, at the
largest widths, with no activation of its own. A type ``k{k}[_se][_hs]`` runs them with kernel k (3 is the centre
of 5: BigNAS' centre crop), with or without the squeeze-excite, and with ReLU or h-swish; widths are sliced or
masked as the separate types' are, and BatchNorm uses the first channels of the shared statistics (re-estimate them
per path before a path is evaluated: ``nascore.loops.recalibrate_batchnorm``). ``skip`` keeps weights of its own
(the strided 1x1 conv where the shape changes). A derived arch builds as the plain FBNetV2 blocks.
"""
from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from nascore.kernels import centre

from .fbnetv2_blocks import TYPES, SlimConvBN, SlimSE

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {"relu": F.relu, "hswish": F.hardswish}


class SharedTypes(nn.Module):
    """The weights of one searchable block that its types (every one but ``skip``) share."""

    def __init__(self, types: tuple[str, ...], cin: int, mid: int, cout: int, stride: int, has_pw: bool,
                 se_hidden: int):
        super().__init__()
        specs = [TYPES[t] for t in types if TYPES[t] is not None]
        self.pw = SlimConvBN(cin, mid, 1, 1, None) if has_pw else None
        self.dw = SlimConvBN(mid, mid, max(k for k, _, _ in specs), stride, None, depthwise=True)
        self.se = SlimSE(mid, se_hidden, None) if any(se for _, se, _ in specs) else None
        self.pwl = SlimConvBN(mid, cout, 1, 1, None)

    def sliced(self, label: str, x: Tensor, mid: int, se: int, out: int) -> Tensor:
        """Type ``label`` at exact widths (a sampled path): only those channels are computed."""
        kernel, has_se, act = TYPES[label]
        f = ACTIVATIONS[act]
        h = f(self.pw(x, cout=mid)) if self.pw is not None else x
        c = h.shape[1]
        h = f(self.dw.normalize(self._depthwise(h, kernel, c), c))
        if has_se:
            s = h.mean((2, 3), keepdim=True)
            reduce, expand = self.se.reduce, self.se.expand
            s = F.conv2d(f(F.conv2d(s, reduce.weight[:se, :c], reduce.bias[:se])), expand.weight[:c, :se],
                         expand.bias[:c])
            h = h * F.hardsigmoid(s)
        return self.pwl(h, cout=out)

    def masked(self, label: str, x: Tensor, mid_mask: Tensor, se_mask: Tensor, out_mask: Tensor) -> Tensor:
        """Type ``label`` at the largest widths, channels scaled by the (soft) masks (DMaskingNAS)."""
        kernel, has_se, act = TYPES[label]
        f = ACTIVATIONS[act]
        h = f(self.pw(x, mask=mid_mask)) if self.pw is not None else x
        c = h.shape[1]
        h = f(self.dw.normalize(self._depthwise(h, kernel, c), c, mid_mask))
        if has_se:
            s = f(self.se.reduce(h.mean((2, 3), keepdim=True))) * se_mask.view(1, -1, 1, 1)
            h = h * F.hardsigmoid(self.se.expand(s))
        return self.pwl(h, mask=out_mask)

    def _depthwise(self, h: Tensor, kernel: int, channels: int) -> Tensor:
        """The depth-wise conv of ``kernel`` (the centre of the shared one) on the first ``channels``."""
        conv = self.dw.conv
        return F.conv2d(h, centre(conv.weight[:channels], kernel), None, conv.stride, kernel // 2, groups=channels)
