"""The search seam: MixedOp, Supernet.set_mix, CostTable and Supernet.price."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from nascore.costs.flops import FlopsCost, count_macs
from nascore.spaces.fbnet import FBNetSpace, layer_plan
from nascore.spaces.fbnet_blocks import make_block
from nascore.supernet import ActiveOptions, CostTable, Decision, MixedOp, Supernet, input_shapes, one_hot


class Counting(nn.Module):
    """A 3x3 conv that counts its calls."""

    def __init__(self, channels: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.conv(x)


def make_mixed(n: int = 3, seed: int = 0) -> MixedOp:
    torch.manual_seed(seed)
    return MixedOp("d", {f"op{i}": Counting() for i in range(n)})


def ops(mixed: MixedOp) -> list[Counting]:
    return list(mixed.candidates.values())


def reset(mixed: MixedOp) -> None:
    for op in ops(mixed):
        op.calls = 0


X = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(1))


# -- MixedOp ------------------------------------------------------------------------------------
@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("index", [0, 1, 2])
def test_one_hot_computes_only_the_chosen_option(index, requires_grad):
    mixed = make_mixed()
    with torch.no_grad():
        expected = ops(mixed)[index].conv(X)
    w = torch.zeros(3)
    w[index] = 1.0
    mixed.mix = w.requires_grad_(requires_grad)
    out = mixed(X)
    assert [op.calls for op in ops(mixed)] == [int(i == index) for i in range(3)]
    assert torch.equal(out, expected)  # exactly that op's output (1.0 * y == y)


def test_a_soft_mix_sums_the_options_by_their_share():
    mixed = make_mixed()
    w = torch.tensor([0.2, 0.5, 0.3], requires_grad=True)
    mixed.mix = w
    out = mixed(X)
    assert [op.calls for op in ops(mixed)] == [1, 1, 1]
    with torch.no_grad():
        ys = [op.conv(X) for op in ops(mixed)]
    torch.testing.assert_close(out, 0.2 * ys[0] + 0.5 * ys[1] + 0.3 * ys[2])
    # d(sum out)/d w_i = sum op_i(x): the mix gets the gradient the strategy needs
    out.sum().backward()
    torch.testing.assert_close(w.grad, torch.stack([y.sum() for y in ys]), rtol=1e-5, atol=1e-4)


def test_options_without_a_share_of_the_mix_are_not_called():
    mixed = make_mixed(4)
    mixed.mix = torch.tensor([0.6, 0.0, 0.4, 0.0], requires_grad=True)
    out = mixed(X)
    assert [op.calls for op in ops(mixed)] == [1, 0, 1, 0]
    with torch.no_grad():
        torch.testing.assert_close(out, 0.6 * ops(mixed)[0].conv(X) + 0.4 * ops(mixed)[2].conv(X))


def test_mixed_op_without_a_mix_names_its_decision():
    with pytest.raises(RuntimeError, match="'d'"):
        make_mixed()(X)


@pytest.mark.parametrize("mix, requires_grad, indices, plain", [
    ([0.0, 1.0, 0.0], False, (1,), True),  # a sampled path
    ([0.0, 1.0, 0.0], True, (1,), False),  # one-hot but differentiable: multiplied, so the mix gets a gradient
    ([0.0, 0.5, 0.0], False, (1,), False),
    ([0.2, 0.0, 0.8], True, (0, 2), False)])
def test_active_options_are_the_non_zero_shares_of_the_mix(mix, requires_grad, indices, plain):
    active = ActiveOptions.of(torch.tensor(mix, requires_grad=requires_grad))
    assert (active.indices, active.plain) == (indices, plain)
    ys = [torch.full((2,), float(i + 1)) for i in range(3)]
    runs = []
    out = active.combine(lambda i: runs.append(i) or ys[i])
    assert runs == list(indices)  # only the active options run
    assert torch.equal(out.detach(), sum(mix[i] * ys[i] for i in indices))


# -- Supernet.set_mix --------------------------------------------------------------------------
class Toy(Supernet):
    """Two decisions; ``d1`` is shared by two MixedOps (like a BMTAS/V2 decision used in several places)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.a = MixedOp("d1", {"x": Counting(), "y": Counting(), "z": Counting()})
        self.b = MixedOp("d2", {"p": Counting(), "q": Counting()})
        self.c = MixedOp("d1", {"x": Counting(), "y": Counting(), "z": Counting()})
        self.feature_info = [dict(num_chs=4, reduction=1, module="c")]

    def decisions(self):
        return [Decision("d1", ("x", "y", "z")), Decision("d2", ("p", "q"))]

    def fixed_modules(self):
        return {"stem": self.stem}

    def forward(self, x):
        return [self.c(self.b(self.a(self.stem(x))))]


def test_set_mix_reaches_every_mixed_op_of_a_decision():
    net = Toy()
    w1, w2 = torch.tensor([0.0, 1.0, 0.0]), torch.tensor([0.5, 0.5])
    net.set_mix({"d1": w1, "d2": w2})
    assert net.a.mix is w1 and net.c.mix is w1 and net.b.mix is w2


def test_set_mix_rejects_missing_decisions():
    net = Toy()
    with pytest.raises(ValueError, match="d2"):
        net.set_mix({"d1": torch.ones(3) / 3})


@pytest.mark.parametrize("shape", [(2,), (4,), (1, 3), ()])
def test_set_mix_rejects_wrong_shapes(shape):
    net = Toy()
    with pytest.raises(ValueError, match=r"'d1'.*\(3,\)"):
        net.set_mix({"d1": torch.ones(shape), "d2": torch.ones(2) / 2})


def test_set_mix_rejects_unknown_decisions():
    net = Toy()
    with pytest.raises(ValueError, match="d3"):
        net.set_mix({"d1": torch.ones(3) / 3, "d2": torch.ones(2) / 2, "d3": torch.ones(2)})


def test_set_choices_is_one_hot_and_checks_labels():
    net = Toy()
    net.set_choices({"d1": "z", "d2": "p"})
    assert net.a.mix.tolist() == [0.0, 0.0, 1.0] and net.b.mix.tolist() == [1.0, 0.0]
    from nascore.errors import NascoreError

    with pytest.raises(NascoreError, match="d2"):
        net.set_choices({"d1": "z", "d2": "nope"})


# -- CostTable ---------------------------------------------------------------------------------
def table() -> CostTable:
    return CostTable("MACs", Toy().decisions(), 10.0,
                     {"d1": torch.tensor([1.0, 2.0, 3.0]), "d2": torch.tensor([10.0, 20.0])})


def test_expected_cost_by_hand_and_its_gradient():
    w1 = torch.tensor([0.2, 0.3, 0.5], requires_grad=True)
    w2 = torch.tensor([0.4, 0.6], requires_grad=True)
    cost = table().expected({"d1": w1, "d2": w2})
    assert cost.item() == pytest.approx(10 + (0.2 * 1 + 0.3 * 2 + 0.5 * 3) + (0.4 * 10 + 0.6 * 20))
    cost.backward()
    assert w1.grad.tolist() == [1.0, 2.0, 3.0]  # d cost / d w_i = the option's cost
    assert w2.grad.tolist() == [10.0, 20.0]


def test_of_choices_equals_expected_under_one_hot():
    decisions = Toy().decisions()
    t = table()
    for c1 in ("x", "y", "z"):
        for c2 in ("p", "q"):
            choices = {"d1": c1, "d2": c2}
            assert t.of_choices(choices) == pytest.approx(
                t.expected(one_hot(decisions, choices)).item())
    assert t.of_choices({"d1": "y", "d2": "p"}) == 10 + 2 + 10


def test_price_sums_a_decision_over_its_mixed_ops():
    net = Toy()
    t = net.price(FlopsCost({"metric": "params"}), 8)
    conv = 4 * 4 * 9 + 4
    assert t.unit == "params"
    assert t.fixed == 3 * 4 * 9 + 4
    assert t.options["d1"].tolist() == [2 * conv] * 3  # two MixedOps share d1
    assert t.options["d2"].tolist() == [conv] * 2


# -- Supernet.price on FBNet -------------------------------------------------------------------
INPUT = 32


def expected_layer_inputs(cfg) -> list[tuple[int, int, int, int]]:
    """The input shape of each of the 22 layers, from the plan: the stem halves the input, and a layer at
    stride s makes the next layer's input s times smaller."""
    shapes, size = [], INPUT // 2
    for cin, _, stride in layer_plan(cfg):
        shapes.append((1, cin, size, size))
        size = (size + stride - 1) // stride
    return shapes


class RecordingCost(FlopsCost):
    def __init__(self, config=None):
        super().__init__(config)
        self.calls: list[tuple[str, tuple[int, ...]]] = []

    def price(self, module, input_shape):
        self.calls.append((getattr(module, "op_key", "?"), tuple(input_shape)))
        return super().price(module, input_shape)


@pytest.fixture(scope="module")
def priced():
    space = FBNetSpace({"width": 0.25, "input_size": INPUT})
    supernet = space.supernet().train()
    arch = {d.name: "k3_e3" for d in supernet.decisions()}
    supernet.set_choices(arch)
    before = {m: m.mix for m in supernet.mixed_ops()}
    bn_before = {k: v.clone() for k, v in supernet.state_dict().items()}
    cost = RecordingCost()
    t = supernet.price(cost, INPUT)
    return dict(space=space, supernet=supernet, table=t, cost=cost, mix_before=before, bn_before=bn_before)


def test_price_uses_the_real_input_shape_of_each_layer(priced):
    supernet, cost = priced["supernet"], priced["cost"]
    shapes = expected_layer_inputs(priced["space"].config)
    # the layers at stride 2 (2, 6, 10, 18) see the halved shape of the layer before them
    assert shapes[1][2:] == (16, 16) and shapes[5][2:] == (8, 8) and shapes[6][2:] == (4, 4)
    assert shapes[17][2:] == (2, 2) and shapes[18][2:] == (1, 1)
    recorded = {}
    for key, shape in cost.calls:
        recorded.setdefault(key, set()).add(shape)
    for i, (mixed, shape) in enumerate(zip(supernet.layers, shapes)):
        for label, op in mixed.candidates.items():
            assert shape in recorded[op.op_key], (i, label)
    assert ("?", (1, 3, INPUT, INPUT)) in cost.calls  # the stem


def test_priced_options_equal_hand_pricing(priced):
    supernet, t = priced["supernet"], priced["table"]
    cfg = priced["space"].config
    assert t.unit == "MACs"
    assert t.fixed == count_macs(supernet.stem, torch.zeros(1, 3, INPUT, INPUT))
    for d, (cin, cout, stride), shape in zip(supernet.decisions(), layer_plan(cfg), expected_layer_inputs(cfg)):
        hand = FlopsCost()  # a fresh cache: measured again, from blocks built by hand
        row = [hand.measure(make_block(label, cin, cout, stride), shape) for label in d.options]
        assert t.options[d.name].tolist() == row, d.name
    # spot checks against closed forms: an identity skip is free; a strided skip is a 1x1 conv
    assert t.options["layer01"][-1] == 0  # 8 -> 8, stride 1
    assert t.options["layer02"][-1] == 8 * 8 * 8 * 8  # 8 -> 8 at stride 2: 8x8 output, 1x1 conv 8x8


def test_cost_of_an_arch_equals_the_macs_of_the_built_model(priced):
    """Prices are additive: stem + chosen blocks of the table == FlopCounterMode on the standalone child."""
    import random

    from nascore.arch import Arch

    space, t, supernet = priced["space"], priced["table"], priced["supernet"]
    rng = random.Random(0)
    archs = [FBNetSpace.named_archs()["fbnet_c"].choices,
             {d.name: rng.choice(d.options) for d in supernet.decisions()},
             {d.name: "skip" for d in supernet.decisions()}]
    for choices in archs:
        model = space.build(Arch(space="fbnet", choices=choices))
        macs = count_macs(model, torch.zeros(1, 3, INPUT, INPUT))
        assert t.of_choices(choices) == macs
        assert t.expected(one_hot(supernet.decisions(), choices)).item() == pytest.approx(macs, rel=1e-6)


def test_price_restores_mode_mix_and_buffers(priced):
    supernet = priced["supernet"]
    assert supernet.training
    assert all(m.training for m in supernet.modules())
    assert all(m.mix is priced["mix_before"][m] for m in supernet.mixed_ops())
    for k, v in supernet.state_dict().items():
        assert torch.equal(v, priced["bn_before"][k]), k  # priced in eval: BN statistics untouched


def test_price_restores_eval_mode_and_an_unset_mix():
    net = Toy().eval()
    net.price(FlopsCost(), 8)
    assert not net.training
    assert all(m.mix is None for m in net.mixed_ops())


def test_input_shapes_are_recorded_in_eval_mode_and_leave_no_hooks():
    first, second, unused = nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.Conv2d(4, 5, 1), nn.Conv2d(5, 5, 1)
    model = nn.Sequential(first, nn.BatchNorm2d(4), second)
    seen = []
    model[1].register_forward_pre_hook(lambda m, args: seen.append(m.training))
    shapes = input_shapes(model, [first, second, unused], 9, in_channels=3)
    assert shapes == {first: (1, 3, 9, 9), second: (1, 4, 5, 5)}  # a module the forward does not run: left out
    assert seen == [False] and model.training  # ran in eval mode, training mode restored
    assert not first._forward_pre_hooks and not second._forward_pre_hooks
    assert all(p.grad is None for p in model.parameters())
