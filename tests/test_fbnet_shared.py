"""FBNet's weight-entangled supernet (``shared_weights: true``): every path computes its plain block from one set
of weights per layer, paths share storage, costs are the plain blocks' costs, archs build as before."""
from __future__ import annotations

import copy
import random

import pytest
import torch
from torch import nn

from nascore.arch import Arch
from nascore.costs.flops import FlopsCost
from nascore.spaces.fbnet import FBNetSpace
from nascore.spaces.fbnet_blocks import CANDIDATES, IRFBlock
from nascore.spaces.fbnet_shared import SharedCandidate, SharedLayer, shuffle_order, shuffled_groups
from nascore.supernet import MixedOp
from tiny import moves


def shared(**config) -> FBNetSpace:
    return FBNetSpace({"width": 0.25, "input_size": 32, "head_channels": 64, "shared_weights": True, **config})


def random_choices(space: FBNetSpace, seed: int) -> dict[str, str]:
    rng = random.Random(seed)
    return {d.name: rng.choice(d.options) for d in space.decisions()}


@torch.no_grad()
def load_block(block: nn.Module, layer: SharedLayer, label: str) -> None:
    """The plain block's weights from the shared ones, as the docs of ``fbnet_shared`` define them."""
    if CANDIDATES[label] is None:
        if layer.skip is not None:
            block.load_state_dict(layer.skip.state_dict())
        return
    kernel, expansion, groups = CANDIDATES[label]
    mid, trim = layer.mid(expansion), (layer.dw.kernel_size[0] - kernel) // 2

    def bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d, order: torch.Tensor | None = None) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            values = getattr(src, name)[:dst.num_features]
            getattr(dst, name).copy_(values if order is None else values[order])

    assert isinstance(block, IRFBlock)
    if mid != layer.cin:
        block.pw[0].weight.copy_(layer.expansion(mid))
        bn(block.pw[1], layer.pw_bn)
    # a grouped block's depth-wise channels and projection inputs are the shared ones in its shuffle's order
    order = shuffle_order(mid, groups) if groups > 1 else torch.arange(mid)
    w = layer.dw.weight[:mid][order]
    block.dw[0].weight.copy_(w[:, :, trim:w.shape[2] - trim, trim:w.shape[3] - trim])
    bn(block.dw[1], layer.dw_bn, order)
    dense, co, ci = layer.pwl.weight[:, :mid][:, order], layer.cout // groups, mid // groups
    block.pwl[0].weight.copy_(torch.cat([dense[g * co:(g + 1) * co, g * ci:(g + 1) * ci] for g in range(groups)]))
    bn(block.pwl[1], layer.pwl_bn)


def randomise(module: nn.Module, seed: int) -> None:
    """Non-trivial weights and BatchNorm statistics, so that eval-mode comparisons mean something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_path_computes_its_plain_blocks_with_the_shared_weights(seed):
    space = shared()
    supernet = space.supernet().eval()
    randomise(supernet, seed)
    choices = random_choices(space, seed)
    built = space.build(Arch(space="fbnet", choices=choices)).eval()
    built.stem.load_state_dict(supernet.stem.state_dict())
    for op, block in zip(supernet.layers, built.layers):
        load_block(block, op.shared, choices[op.decision])
    supernet.set_choices(choices)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for a, b in zip(supernet(x), built(x)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_paths_share_storage_a_step_on_one_moves_another():
    space = shared()
    supernet = space.supernet()
    plain = FBNetSpace({"width": 0.25, "input_size": 32, "head_channels": 64}).supernet()
    assert sum(p.numel() for p in supernet.parameters()) < sum(p.numel() for p in plain.parameters()) / 2
    for op in supernet.mixed_ops():
        assert all(not list(c.parameters()) for label, c in op.candidates.items() if label != "skip")
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    small, large = ({d.name: label for d in space.decisions()} for label in ("k3_e1", "k5_e6"))
    assert moves(supernet, x, small, large, [p for op in supernet.layers for p in op.parameters()])
    # the control: FBNet's own supernet, a set of weights per candidate
    assert not moves(plain, x, small, large, [p for op in plain.layers for p in op.parameters()])


def test_options_are_priced_as_the_plain_blocks():
    table = shared().supernet().price(FlopsCost(), 32)
    plain = FBNetSpace({"width": 0.25, "input_size": 32, "head_channels": 64}).supernet().price(FlopsCost(), 32)
    assert table.fixed == plain.fixed
    for name, costs in plain.options.items():
        torch.testing.assert_close(table.options[name], costs)


def test_archs_build_and_are_written_as_without_shared_weights():
    on, off = shared(), FBNetSpace({"width": 0.25, "input_size": 32, "head_channels": 64})
    choices = random_choices(on, 3)
    a, b = (s.build(Arch(space="fbnet", choices=choices)) for s in (on, off))
    assert [p.shape for p in a.parameters()] == [p.shape for p in b.parameters()]
    assert "shared_weights" not in on.arch_config()
    assert on.arch_config() == off.arch_config()


def test_a_deep_copy_keeps_one_set_of_weights_per_layer():
    supernet = copy.deepcopy(shared().supernet())
    for op in supernet.mixed_ops():
        assert isinstance(op, MixedOp)
        assert all(c.layer is op.shared for c in op.candidates.values() if isinstance(c, SharedCandidate))


def test_every_path_of_a_residual_layer_starts_as_the_identity():
    supernet = shared().supernet().train()
    x = torch.randn(4, 8, 16, 16, generator=torch.Generator().manual_seed(0))
    residual = [op for op in supernet.mixed_ops() if op.shared.stride == 1 and op.shared.cin == op.shared.cout]
    assert residual and residual[0].shared.cin == 8
    for label, candidate in residual[0].candidates.items():
        torch.testing.assert_close(candidate(x), x, msg=label)
    reshaping = next(op for op in supernet.mixed_ops() if op.shared.stride == 2)
    assert not torch.all(reshaping.shared.pwl_bn.weight == 0)


@pytest.mark.parametrize("candidates, tied", [(None, True), (["k3_e3", "k3_e6", "k5_e3", "k5_e6"], False)])
def test_with_e1_the_expansions_first_channels_are_the_input(candidates, tied):
    # an e1 block feeds its input where the expanded blocks feed their first hidden channels: with e1 among a
    # layer's candidates those expansion channels are the identity, held by no parameter, so training keeps them
    space = shared(**({"candidates": candidates} if candidates else {}))
    supernet = space.supernet()
    layer = next(op.shared for op in supernet.mixed_ops() if op.shared.pw is not None and op.shared.stride == 2)
    mid = layer.mid(6)
    before = layer.expansion(mid).detach().clone()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    largest = {d.name: "k5_e6" for d in space.decisions()}
    assert moves(supernet, x, largest, largest, [p for op in supernet.layers for p in op.parameters()])
    after = layer.expansion(mid).detach()
    eye = torch.eye(layer.cin).view(layer.cin, layer.cin, 1, 1)
    assert torch.equal(before[:layer.cin], eye) is tied
    assert torch.equal(after[:layer.cin], before[:layer.cin]) is tied
    assert not torch.equal(after[layer.cin:], before[layer.cin:])
    assert sum(p.numel() for p in layer.pw.parameters()) == (mid - layer.cin * tied) * layer.cin


def test_a_grouped_block_keeps_the_channel_order_of_the_others():
    # g2's channel shuffle moves into its projection's mask: where the dense projection holds only what the groups
    # connect, k3_e1_g2 and k3_e1 compute the same, channel for channel
    layer = SharedLayer(("k3_e1", "k3_e1_g2"), 16, 16, 1, 8, "relu")
    randomise(layer, 0)
    with torch.no_grad():
        layer.pwl.weight.mul_(shuffled_groups(16, 16, 2, layer.pwl.weight.device))
    plain, grouped = (SharedCandidate(label, layer).eval() for label in ("k3_e1", "k3_e1_g2"))
    layer.eval()
    x = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(grouped(x), plain(x))
        layer.pwl.weight.add_(1.0)  # and they differ where the groups do not connect
        assert not torch.allclose(grouped(x), plain(x))
