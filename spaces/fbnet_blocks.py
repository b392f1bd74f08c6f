"""FBNet's candidate blocks, with mobile-vision's semantics (the code the released FBNet-A/B/C use):
inverted residual ``[1x1 expand] -> kxk depth-wise (stride) -> 1x1 project``, BN after each conv, ReLU
after the first two, no expansion conv when e == 1, residual when stride 1 and in == out; ``g2`` blocks
shuffle channels and use 2 groups in the point-wise projection; ``skip`` is an identity, or a strided
1x1 conv when the shape changes."""
from __future__ import annotations

from torch import Tensor, nn

from nascore.features import make_divisible

#: label -> (kernel, expansion, point-wise groups); None = skip
CANDIDATES: dict[str, tuple[int, int, int] | None] = {
    "k3_e1": (3, 1, 1), "k3_e1_g2": (3, 1, 2), "k3_e3": (3, 3, 1), "k3_e6": (3, 6, 1),
    "k5_e1": (5, 1, 1), "k5_e1_g2": (5, 1, 2), "k5_e3": (5, 3, 1), "k5_e6": (5, 6, 1),
    "skip": None,
}


ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6}  # relu6: MobileNetV2's


def conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, act: str | None = "relu"
            ) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, ACTIVATIONS[act](inplace=True)) if act else nn.Sequential(*layers)


class ChannelShuffle(nn.Module):
    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: Tensor) -> Tensor:
        return channel_shuffle(x, self.groups)


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    # as F.channel_shuffle, written with view/transpose because ONNX has no channel_shuffle operator
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class IRFBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, kernel: int, expansion: int, groups: int = 1,
                 divisor: int = 8, act: str = "relu"):
        super().__init__()
        mid = cin if expansion == 1 else make_divisible(cin * expansion, divisor)
        self.pw = conv_bn(cin, mid, groups=groups, act=act) if mid != cin else nn.Identity()
        self.shuffle = ChannelShuffle(groups) if groups > 1 else nn.Identity()
        self.dw = conv_bn(mid, mid, kernel, stride, groups=mid, act=act)
        self.pwl = conv_bn(mid, cout, groups=groups, act=None)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = self.pwl(self.dw(self.shuffle(self.pw(x))))
        return x + y if self.residual else y


def make_block(label: str, cin: int, cout: int, stride: int, divisor: int = 8, act: str = "relu") -> nn.Module:
    spec = CANDIDATES[label]
    if spec is None:
        block = nn.Identity() if cin == cout and stride == 1 else conv_bn(cin, cout, 1, stride, act=act)
    else:
        block = IRFBlock(cin, cout, stride, *spec, divisor=divisor, act=act)
    # the divisor sets the expansion width, so it is part of the configuration a cost model caches by
    block.op_key = f"fbnet:{label}:{cin}>{cout}:s{stride}:d{divisor}" + ("" if act == "relu" else f":{act}")
    return block
