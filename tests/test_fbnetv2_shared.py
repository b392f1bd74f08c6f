"""FBNetV2's supernet with its block types entangled (``shared_weights: true``): the types of a block read one set of
weights (k3 the centre of k5), a step on one type moves the others, costs and built archs are as without it. (That a
sliced and a masked path compute the built child: ``test_fbnetv2.py``, parametrised over ``shared_weights``.)"""
from __future__ import annotations

import torch

from nascore.arch import Arch
from nascore.costs.flops import FlopsCost
from nascore.spaces.fbnetv2 import FBNetV2Space
from nascore.spaces.fbnetv2_shared import SharedTypes
from test_fbnetv2 import SMALL, random_choices
from tiny import moves


def spaces() -> tuple[FBNetV2Space, FBNetV2Space]:
    return FBNetV2Space({**SMALL, "shared_weights": True}), FBNetV2Space(SMALL)


def same_type(space: FBNetV2Space, label: str) -> dict[str, str]:
    """Every block of type ``label``, the other decisions their first option."""
    return {d.name: label if d.name.endswith(".type") else d.options[0] for d in space.decisions()}


def test_types_share_storage_and_a_step_on_one_moves_another():
    on, off = spaces()
    supernet = on.supernet()
    assert sum(p.numel() for p in supernet.parameters()) < sum(p.numel() for p in off.supernet().parameters()) / 4
    for block in supernet.blocks:
        assert isinstance(block.shared, SharedTypes)
        assert set(block.candidates) <= {"skip"}  # only the strided 1x1 conv of a skip that changes the shape
    x = torch.randn(4, 3, 30, 30, generator=torch.Generator().manual_seed(0))
    small, large = same_type(on, "k3"), same_type(on, "k5_se_hs")
    assert moves(supernet, x, small, large, [p for b in supernet.blocks for p in b.parameters()])
    plain = off.supernet()  # the control: a set of weights per block type
    assert not moves(plain, x, small, large, [p for b in plain.blocks for p in b.parameters()])


def test_a_small_kernel_is_the_centre_of_the_shared_one():
    on, _ = spaces()
    supernet = on.supernet()
    torch.nn.init.normal_(supernet.blocks[0].shared.dw.conv.weight)
    choices = same_type(on, "k3")
    child = supernet.extract(choices)
    layer = next(m for m in child.blocks[0].layers if m.op_key.startswith("fbnetv2:dw("))
    shared = supernet.blocks[0].shared.dw.conv.weight
    assert shared.shape[-1] == 5 and layer.conv.weight.shape[-1] == 3
    torch.testing.assert_close(layer.conv.weight, shared[:layer.conv.weight.shape[0], :, 1:4, 1:4])


def test_costs_and_archs_are_as_without_shared_weights():
    on, off = spaces()
    a, b = on.supernet().price(FlopsCost(), 30), off.supernet().price(FlopsCost(), 30)
    assert a.bounds() == b.bounds()
    assert all(a.of_choices(random_choices(on, s)) == b.of_choices(random_choices(on, s)) for s in range(4))
    assert "shared_weights" not in on.arch_config() and on.arch_config() == off.arch_config()
    choices = random_choices(on, 3)
    built = [s.build(Arch(space="fbnetv2", choices=choices)) for s in (on, off)]
    assert [p.shape for p in built[0].parameters()] == [p.shape for p in built[1].parameters()]


def test_a_soft_mix_over_types_trains_the_shared_weights_and_the_mix():
    on, _ = spaces()
    supernet = on.supernet().train()
    mix = {d.name: torch.full((len(d.options),), 1 / len(d.options), requires_grad=True) for d in on.decisions()}
    supernet.set_mix(mix)
    x = torch.randn(2, 3, 30, 30, generator=torch.Generator().manual_seed(1))
    supernet(x)[-1].square().mean().backward()
    assert all(mix[d.name].grad is not None and mix[d.name].grad.abs().sum() > 0
               for d in on.decisions() if d.name.endswith(".type"))
    assert supernet.blocks[1].shared.dw.conv.weight.grad.abs().sum() > 0
