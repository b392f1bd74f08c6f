"""MemoryCost: peak activation bytes by hand, storage sharing, parameters left out, batch size, the max-reduced
supernet table, a spec naming it, and whole built networks."""
from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
import yaml
from pydantic import ValidationError
from torch import nn

from nascore.arch import resolve_arch
from nascore.costs.memory import MemoryCost, PeakTracker
from nascore.errors import SpecError
from nascore.objective import Multiplicative
from nascore.spaces.fbnet import FBNetSpace
from nascore.spaces.fbnet_blocks import make_block
from nascore.spec import validate_spec
from nascore.supernet import CostTable, one_hot

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart.yaml"
F32 = 4
SHAPE = (1, 4, 8, 8)
X = 4 * 8 * 8 * F32   # 1024: the (1, 4, 8, 8) input
Y = 8 * 8 * 8 * F32   # 2048: an 8-channel 8x8 activation


def conv() -> nn.Conv2d:
    return nn.Conv2d(4, 8, 3, padding=1)


# -- hand-computed peaks -----------------------------------------------------------------------
def test_single_conv_is_input_plus_output():
    assert MemoryCost().measure(conv(), SHAPE) == X + Y == 3072


def test_conv_bn_relu_peaks_inside_bn():
    # BN reads the conv output while writing its own: input + conv out + BN out; the conv output is freed once
    # Sequential moves on, and the in-place ReLU adds nothing
    block = nn.Sequential(conv(), nn.BatchNorm2d(8), nn.ReLU(inplace=True))
    assert MemoryCost().measure(block, SHAPE) == X + 2 * Y == 5120


def test_freed_intermediates_no_longer_count():
    # + a 1x1 conv to 16 channels (Z = 4096 bytes) and its BN. At the second BN the live tensors are the input,
    # the second conv's output and the BN's output: X + 2Z = 9216. Never freeing would give X + 2Y + 2Z = 13312.
    z = 16 * 8 * 8 * F32
    block = nn.Sequential(conv(), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16))
    assert MemoryCost().measure(block, SHAPE) == X + 2 * z == 9216


@pytest.mark.parametrize("tail, expected", [
    (nn.ReLU(inplace=True), X + Y),  # writes into the conv output: one storage
    (nn.Flatten(), X + Y),           # a view of the conv output
    (nn.ReLU(), X + 2 * Y),          # a new tensor while the conv output is still an argument
])
def test_shared_storage_is_counted_once(tail, expected):
    assert MemoryCost().measure(nn.Sequential(conv(), tail), SHAPE) == expected


def test_identity_costs_its_input():
    assert MemoryCost().measure(nn.Identity(), SHAPE) == X == 1024
    assert MemoryCost().measure(make_block("skip", 8, 8, 1), (1, 8, 4, 4)) == 8 * 4 * 4 * F32 == 512


def test_parameters_are_not_counted():
    big = nn.Conv2d(1024, 1024, 1)  # 4 MiB of weights on a 1x1 input
    assert MemoryCost().measure(big, (1, 1024, 1, 1)) == 2 * 1024 * F32 == 8192
    # Linear multiplies by weight.t(), a view of the parameter's storage: still not an activation
    assert MemoryCost().measure(nn.Linear(2000, 2000), (1, 2000)) == 2 * 2000 * F32 == 16000


def test_batch_size_replaces_the_input_batch():
    assert MemoryCost({"batch_size": 4}).measure(conv(), SHAPE) == 4 * (X + Y) == 12288
    assert MemoryCost().measure(conv(), (7, 4, 8, 8)) == X + Y
    assert MemoryCost({"batch_size": 4}).price(conv(), SHAPE) == 4 * MemoryCost().price(conv(), SHAPE)


def test_config_is_validated():
    assert MemoryCost().config.batch_size == 1
    with pytest.raises(ValidationError):
        MemoryCost({"batch_size": 0})
    with pytest.raises(ValidationError):
        MemoryCost({"metric": "macs"})
    assert (MemoryCost.unit, MemoryCost.reduce, MemoryCost.name) == ("bytes", "max", "memory")


def test_measure_is_an_eval_forward_and_restores_training_mode():
    block = nn.Sequential(conv(), nn.BatchNorm2d(8)).train()
    MemoryCost().measure(block, SHAPE)
    assert all(m.training for m in block.modules())
    assert torch.equal(block[1].running_mean, torch.zeros(8))  # eval: running stats untouched


def test_tracker_stops_counting_when_it_exits():
    layer, x = conv(), torch.zeros(SHAPE)
    with torch.no_grad(), PeakTracker() as tracker:
        out = layer(x)
    assert tracker.peak == tracker.live == Y  # the input was made outside and not tracked
    del out
    assert tracker.live == Y  # freed after exit: no callback into the finished tracker


# -- the supernet table ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fbnet():
    supernet = FBNetSpace({"width": 0.25, "input_size": 32}).supernet()
    return supernet, supernet.price(MemoryCost(), 32)


def random_archs(supernet, n: int = 3, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [{d.name: rng.choice(d.options) for d in supernet.decisions()} for _ in range(n)]


def test_table_is_max_reduced(fbnet):
    supernet, table = fbnet
    assert isinstance(table, CostTable) and table.reduce == "max" and table.unit == "bytes"
    assert table.options == {} and len(table.positions) == len(supernet.mixed_ops()) == 22
    # the stem: image (3x32x32) + conv out + BN out (8x16x16 each)
    assert table.fixed == 3 * 32 * 32 * F32 + 2 * 8 * 16 * 16 * F32 == 28672


@pytest.mark.parametrize("arch", range(3))
def test_of_choices_is_the_max_over_the_parts(fbnet, arch):
    supernet, table = fbnet
    choices = random_archs(supernet)[arch]
    decisions = supernet.decisions()
    # every part of this arch measured afresh (not from the table)
    parts = [MemoryCost().measure(op.module, op.input_shape) for op in supernet.operations(32)
             if op.decision is None or op.option == choices[op.decision]]
    assert len(parts) == 1 + 22
    assert table.of_choices(choices) == max(parts)
    assert table.expected(one_hot(decisions, choices)).item() == max(parts)


def test_expected_cost_is_differentiable(fbnet):
    supernet, table = fbnet
    torch.manual_seed(0)
    mix = {d.name: torch.softmax(torch.randn(len(d.options)), 0).requires_grad_()
           for d in supernet.decisions()}
    cost = table.expected(mix)
    parts = [float((mix[name].detach() * row).sum()) for name, row in table.positions]
    top = max(range(len(parts)), key=parts.__getitem__)
    assert cost.item() == pytest.approx(parts[top]) and parts[top] > table.fixed
    cost.backward()
    # d max / d w reaches only the position that attains the max: its row of prices
    for i, (name, row) in enumerate(table.positions):
        assert torch.equal(mix[name].grad, row if i == top else torch.zeros_like(row)), name


# -- spec and loss -----------------------------------------------------------------------------
def test_spec_with_memory_cost():
    data = yaml.safe_load(QUICKSTART.read_text())
    data["cost"] = {"name": "memory", "batch_size": 2, "loss": {"form": "multiplicative"}}
    spec = validate_spec(data)
    cost_model = spec.cost.create()
    assert isinstance(cost_model, MemoryCost) and cost_model.config.batch_size == 2
    assert isinstance(spec.objective, Multiplicative)
    # the search loss on the max-reduced expected cost: finite, and it reaches the mix
    supernet = spec.space.create().supernet()
    table = supernet.price(cost_model, spec.space.config.input_size)
    mix = {d.name: torch.full((len(d.options),), 1 / len(d.options), requires_grad=True)
           for d in supernet.decisions()}
    loss = spec.objective(torch.tensor(2.0), table.expected(mix))
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert any(m.grad.abs().sum() > 0 for m in mix.values())
    with pytest.raises(SpecError):
        validate_spec({**data, "cost": {"name": "memory", "batch_size": 0}})


# -- whole networks ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["fbnet_a", "fbnet_b", "fbnet_c"])
def test_built_network_peak(fbnet, name):
    supernet, table = fbnet
    arch = resolve_arch(name)
    model = FBNetSpace.for_arch(arch, width=0.25, input_size=32).build(arch)
    whole = MemoryCost().measure_model(model, (1, 3, 32, 32))
    per_layer = table.of_choices(arch.choices)
    (name02, row), decision = table.positions[1], supernet.decisions()[1]
    assert name02 == decision.name == "layer02" and per_layer == row[decision.options.index(arch.choices[name02])]
    # The dearest layer is layer02 (stride 2, 16x16 in). While it runs the whole network also holds the image
    # (its caller keeps it) and the saved feature levels; the only level saved by then is layer01's output,
    # which is layer02's own input and already in its per-layer peak. So the network costs exactly one image
    # more than its table cost.
    assert whole == per_layer + 3 * 32 * 32 * F32
