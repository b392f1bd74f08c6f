"""FBNetV2 / DMaskingNAS: masked max-width layers, resolution placement, supernet == built child, effective
shape costs, named archs against the published counts."""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nascore.arch import Arch
from nascore.costs.flops import FlopsCost, count_macs, count_params
from nascore.errors import NascoreError
from nascore.spaces.fbnetv2 import FBNetV2Space
from nascore.spaces.fbnetv2_blocks import SlimConvBN, SlimSE, divisible_by, place, subsample
from nascore.spaces.shape_cost import ProductWidth, Width, interpolate
from nascore.supernet import one_hot
from nascore.task import build_network
from nascore.tasks.classification import Classification

# a small space with every kind of decision: channels per stage, type / expansion / resolution per block, a
# stride-2 stage, odd feature sizes (input 30), blocks with and without residuals
SMALL = {"input_size": 30, "stem": 8, "head_channels": 64, "stages": [
    {"channels": [8, 12, 16], "blocks": 2, "stride": 1, "expansions": [1.5, 3.0], "resolutions": [1, 2]},
    {"channels": [16, 24], "blocks": 2, "stride": 2, "resolutions": [1, 2, 3]},
    {"channels": [24, 32, 40], "blocks": 1, "stride": 2, "expansions": [2.0, 4.5], "resolutions": [1]}]}


def small() -> FBNetV2Space:
    return FBNetV2Space(SMALL)


def random_choices(space, seed: int, avoid_skip: bool = False) -> dict[str, str]:
    rng = random.Random(seed)
    return {d.name: rng.choice([o for o in d.options if not (avoid_skip and o == "skip")] or d.options)
            for d in space.decisions()}


def randomize_bn(module: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)


# -- masks -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("depthwise", [False, True])
def test_masked_max_width_conv_equals_the_smaller_conv(depthwise):
    torch.manual_seed(0)
    big = SlimConvBN(16, 16 if depthwise else 24, 3, 1, "hswish", depthwise=depthwise).eval()
    randomize_bn(big)
    cin, cout = 10, 10 if depthwise else 13
    x = torch.randn(2, cin, 9, 9)
    small_ = SlimConvBN(cin, cout, 3, 1, "hswish", depthwise=depthwise).eval()
    small_.copy_from(big)
    expected = small_(x)
    # an explicit nn.Conv2d with the leading filters, for good measure
    conv = big.conv.weight[:cout, :1 if depthwise else cin]
    bn = big.bn
    ref = F.hardswish(F.batch_norm(F.conv2d(x, conv, None, 1, 1, groups=cin if depthwise else 1),
                                   bn.running_mean[:cout], bn.running_var[:cout], bn.weight[:cout], bn.bias[:cout]))
    torch.testing.assert_close(expected, ref)
    # sliced: only those channels computed
    torch.testing.assert_close(big(x, cout=cout), expected)
    # masked: the max-width conv on the zero-padded input, times the one-hot mask sum_i g_i m_i
    widths = [4, cout, 16 if depthwise else 24]
    g = torch.tensor([0.0, 1.0, 0.0], requires_grad=True)
    masks = (torch.arange(big.conv.out_channels)[None] < torch.tensor(widths)[:, None]).float()
    padded = F.pad(x, (0, 0, 0, 0, 0, 16 - cin))
    out = big(padded, mask=g @ masks)
    torch.testing.assert_close(out[:, :cout], expected)
    assert out[:, cout:].abs().max() == 0
    out.sum().backward()
    assert g.grad is not None and g.grad.abs().sum() > 0


@pytest.mark.parametrize("momentum", [0.1, None])  # None: the cumulative average BN recalibration uses
def test_sliced_batchnorm_updates_statistics_as_batchnorm_does(momentum):
    torch.manual_seed(0)
    big = SlimConvBN(8, 16).train()
    small_ = SlimConvBN(8, 6).train()
    small_.copy_from(big)
    for layer in (big, small_):
        layer.bn.momentum = momentum
    for _ in range(3):
        x = torch.randn(4, 8, 5, 5) + 3
        torch.testing.assert_close(big(x, cout=6), small_(x))
    torch.testing.assert_close(big.bn.running_mean[:6], small_.bn.running_mean)
    torch.testing.assert_close(big.bn.running_var[:6], small_.bn.running_var)
    assert (big.bn.running_mean[6:] == 0).all() and int(big.bn.num_batches_tracked) == 3


def test_masked_se_equals_the_smaller_se():
    torch.manual_seed(1)
    big, small_ = SlimSE(16, 8, "relu"), SlimSE(12, 3, "relu")
    small_.copy_from(big)
    x = torch.randn(2, 12, 5, 5)
    expected = small_(x)
    torch.testing.assert_close(big(x, hidden=3), expected)
    mask = (torch.arange(8) < 3).float()
    out = big(F.pad(x, (0, 0, 0, 0, 0, 4)), mask=mask)
    torch.testing.assert_close(out[:, :12], expected)
    assert out[:, 12:].abs().max() == 0


def test_divisible_by_is_mobile_visions_rounding():
    # mobile_cv.arch.utils.helper.get_divisible_by, hand-evaluated
    # 43.65 rounds to 40, which loses over 5%, so 48; 114.99 -> 112 (within 5%); halves round up (20 -> 24)
    assert [divisible_by(v) for v in (8 * 5.4566, 24 * 4.7912, 41, 6, 20, 12, 3.0)] == [48, 112, 40, 8, 24, 16, 8]


# -- resolution -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("factor", [2, 3])
@pytest.mark.parametrize("size", [8, 9])
def test_placement_keeps_pixels_aligned(factor, size):
    x = torch.arange(size * size, dtype=torch.float32).view(1, 1, size, size)
    y = place(subsample(x, factor), factor, (size, size))
    kept = torch.zeros(size, size, dtype=torch.bool)
    kept[::factor, ::factor] = True
    assert torch.equal(y[0, 0][kept], x[0, 0][kept])  # pixel (f*i, f*j) holds the input's own pixel
    assert (y[0, 0][~kept] == 0).all()  # interspersed zeros elsewhere, none at the border only
    nearest = place(subsample(x, factor), factor, (size, size), "nearest")
    assert torch.equal(nearest[0, 0][kept], x[0, 0][kept])
    assert nearest[0, 0, 1, 1] == x[0, 0, 0, 0]


def test_a_block_on_a_subsampled_input_is_aligned_with_the_full_resolution_one():
    # a 1x1 (pointwise) block commutes with subsampling: where the subsampled block placed its outputs, they
    # equal the full-resolution block's outputs at the same pixels (a misaligned scheme would shift them)
    torch.manual_seed(0)
    conv = SlimConvBN(4, 6, 1, 2, "relu").eval()
    x = torch.randn(1, 4, 16, 16)
    full = conv(x)
    placed = place(conv(subsample(x, 2)), 2, full.shape[-2:])
    torch.testing.assert_close(placed[..., ::2, ::2], full[..., ::2, ::2])


# -- the supernet and the built child ---------------------------------------------------------------------
def test_decisions():
    space = small()
    names = [d.name for d in space.decisions()]
    assert names[:4] == ["s1.channels", "s1.b1.type", "s1.b1.expansion", "s1.b1.resolution"]
    assert "s3.b1.resolution" not in names  # one option: no decision
    options = {d.name: d.options for d in space.decisions()}
    assert options["s1.channels"] == ("8", "12", "16") and options["s2.b1.resolution"] == ("1", "2", "3")
    assert options["s2.b1.expansion"] == ("0.75", "1.5", "2.25", "3", "3.75", "4.5")  # the paper's rates


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_supernet_under_a_one_hot_mix_equals_the_built_child(seed, shared):
    space = FBNetV2Space({**SMALL, "shared_weights": shared})
    supernet = space.supernet().eval()
    randomize_bn(supernet, seed)
    choices = random_choices(space, seed, avoid_skip=seed % 2 == 0)
    child = supernet.extract(choices).eval()
    x = torch.randn(2, 3, 30, 30)
    with torch.no_grad():
        expected = child(x)
        # a sampled path: sliced convolutions
        supernet.set_choices(choices)
        sliced = supernet(x)
    # the soft path under a one-hot mix: masked max-width convolutions
    supernet.set_mix({k: v.requires_grad_() for k, v in one_hot(space.decisions(), choices).items()})
    masked = supernet(x)
    assert [f.shape[1] for f in expected] == [i["num_chs"] for i in child.feature_info]
    for e, s, m in zip(expected, sliced, masked):
        c = e.shape[1]
        torch.testing.assert_close(s[:, :c], e, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(m[:, :c], e, atol=1e-5, rtol=1e-4)
        assert s[:, c:].abs().sum() == 0 and m[:, c:].abs().sum() == 0


def test_canonical_spells_each_built_network_once():
    """Two spellings have one canonical form exactly when they build the same network: rates that round to one
    hidden width (2.25 and 3 of 8 input channels: 24), a skip's unused expansion, an identity skip's resolution.
    Each arch is compared with every arch one decision away, on the supernet's weights."""
    space = small()
    supernet = space.supernet().eval()
    randomize_bn(supernet)
    x = torch.randn(2, 3, 30, 30)

    def outputs(choices):
        with torch.no_grad():
            return supernet.extract(choices).eval()(x)

    twins = set()
    rounded = {**random_choices(space, 0, avoid_skip=True), "s1.channels": "8", "s2.b1.expansion": "2.25"}
    for base in [rounded, *(random_choices(space, seed) for seed in range(4))]:
        expected = outputs(base)
        for d in space.decisions():
            for option in set(d.options) - {base[d.name]}:
                other = {**base, d.name: option}
                got = outputs(other)
                same = all(a.shape == b.shape and torch.allclose(a, b) for a, b in zip(expected, got, strict=True))
                assert (supernet.canonical(other) == supernet.canonical(base)) == same, (d.name, option)
                assert supernet.canonical(supernet.canonical(other)) == supernet.canonical(other)
                if same:
                    twins.add((d.name.rsplit(".", 1)[1], other[d.name.rsplit(".", 1)[0] + ".type"] == "skip"))
    assert twins == {("expansion", False), ("expansion", True), ("resolution", True)}  # each kind met


def test_the_sampled_path_computes_only_the_chosen_widths():
    space = small()
    supernet = space.supernet().eval()
    for seed in range(3):
        choices = random_choices(space, seed)
        supernet.set_choices(choices)
        child = space.build(Arch(space="fbnetv2", config=SMALL, choices=choices))
        x = torch.zeros(1, 3, 30, 30)
        assert count_macs(supernet, x) == count_macs(child, x)


def test_a_soft_mix_runs_every_option_and_trains():
    space = small()
    supernet = space.supernet().train()
    theta = {d.name: torch.zeros(len(d.options), requires_grad=True) for d in space.decisions()}
    supernet.set_mix({k: F.gumbel_softmax(v, tau=1.0) for k, v in theta.items()})
    out = supernet(torch.randn(4, 3, 30, 30))
    assert [o.shape[1] for o in out] == [i["num_chs"] for i in supernet.feature_info]
    out[-1].square().mean().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in theta.values())
    assert all(p.grad is not None for n, p in supernet.named_parameters() if "stem" in n)


def recomputing(on: bool) -> FBNetV2Space:
    return FBNetV2Space({**SMALL, "recompute_resolutions": on})


def test_recomputed_resolution_branches_give_the_same_outputs_gradients_and_statistics():
    torch.manual_seed(0)
    space = small()
    off, on = recomputing(False).supernet().train(), recomputing(True).supernet().train()
    on.load_state_dict(off.state_dict())
    noise = {d.name: -(-torch.rand(len(d.options)).log()).log() for d in space.decisions()}  # Gumbel
    logits = {d.name: torch.randn(len(d.options)) for d in space.decisions()}
    x = torch.randn(4, 3, 30, 30)
    thetas, outputs = [], []
    for supernet in (off, on):
        theta = {k: v.clone().requires_grad_() for k, v in logits.items()}
        supernet.set_mix({k: F.softmax(theta[k] + noise[k], 0) for k in theta})
        out = supernet(x)
        # the next mix is set before backward: a recomputation must use the mix its forward ran with
        supernet.set_choices(random_choices(space, 1))
        sum(o.square().mean() for o in out).backward()
        thetas.append(theta)
        outputs.append(out)
    for a, b in zip(*outputs):
        torch.testing.assert_close(a, b)
    for k in logits:
        torch.testing.assert_close(thetas[0][k].grad, thetas[1][k].grad)
    grads = [{n: p.grad for n, p in m.named_parameters() if p.grad is not None} for m in (off, on)]
    assert grads[0].keys() == grads[1].keys() and any(n.startswith("blocks.2.") for n in grads[0])  # s2.b1
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n])
    # running statistics updated once per forward, not once more by the recomputation
    for (n, a), b in zip(off.state_dict().items(), on.state_dict().values()):
        torch.testing.assert_close(a, b, msg=n)


def test_recomputing_resolution_branches_lowers_the_peak_memory_of_a_step():
    from nascore.costs.memory import PeakTracker

    peaks = {}
    for on in (False, True):
        torch.manual_seed(0)
        space = recomputing(on)
        supernet = space.supernet().train()
        supernet.set_mix({d.name: torch.full((len(d.options),), 1 / len(d.options)) for d in space.decisions()})
        x = torch.randn(8, 3, 30, 30)
        excluded = {id(t.untyped_storage()) for t in [*supernet.parameters(), *supernet.buffers()]}
        with PeakTracker(excluded) as tracker:
            supernet(x)[-1].square().mean().backward()
        peaks[on] = tracker.peak
    assert peaks[True] < peaks[False]


def test_recompute_resolutions_is_the_supernets_only():
    on, off = recomputing(True), recomputing(False)
    assert "recompute_resolutions" not in on.arch_config() and on.arch_config() == off.arch_config()
    choices = random_choices(on, 2)
    a, b = (s.build(Arch(space="fbnetv2", config=SMALL, choices=choices)) for s in (on, off))
    assert [p.shape for p in a.parameters()] == [p.shape for p in b.parameters()]


def test_built_model_has_no_masks_and_smaller_convolutions():
    space = small()
    choices = {d.name: d.options[0] for d in space.decisions()}
    choices.update({k: "k3" for k in choices if k.endswith(".type")})
    model = space.build(Arch(space="fbnetv2", config=SMALL, choices=choices))
    widths = {m.out_channels for m in model.blocks.modules() if isinstance(m, nn.Conv2d)}
    # the first options: outputs 8, 16, 24; hidden 8*1.5 -> 16, 8*.75 -> 8, 16*.75 -> 16, 16*2 -> 32; never 40
    assert widths == {8, 16, 24, 32}
    assert count_params(model) < count_params(space.supernet()) / 5


def test_feature_info_matches_forward():
    space = FBNetV2Space({"width": 0.5, "input_size": 64})
    choices = random_choices(space, 0)
    model = space.build(Arch(space="fbnetv2", config=space.config.model_dump(mode="json"), choices=choices)).eval()
    with torch.no_grad():
        features = model(torch.randn(1, 3, 64, 64))
    assert [i["reduction"] for i in model.feature_info] == [2, 4, 8, 16, 32]
    for f, info in zip(features, model.feature_info):
        assert f.shape[1] == info["num_chs"] and 64 // f.shape[-1] == info["reduction"]
    names = dict(model.named_modules())
    assert all(i["module"] in names for i in model.feature_info)


# -- named archs -------------------------------------------------------------------------------------------
# REFERENCE-NUMBERS.md: (input, MACs, params) of the published models (ImageNet, 1000 classes)
PUBLISHED = {"fbnetv2_f1": (128, 56e6, 6.0e6), "fbnetv2_f2": (160, 85e6, 6.0e6), "fbnetv2_f3": (192, 122e6, 6.9e6),
             "fbnetv2_f4": (224, 238e6, 7.0e6), "fbnetv2_l1": (224, 326e6, 8.5e6), "fbnetv2_l2": (256, 424e6, 8.5e6)}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_named_archs_match_the_published_counts(name):
    arch = FBNetV2Space.named_archs()[name]
    space = FBNetV2Space.for_arch(arch)
    size, macs_ref, params_ref = PUBLISHED[name]
    assert space.config.input_size == size
    with torch.device("meta"):
        model = build_network(space.build(arch), [Classification({"num_classes": 1000})], None)
    macs = count_macs(model, torch.zeros(1, 3, size, size, device="meta"))
    assert macs == pytest.approx(macs_ref, rel=0.03), f"{macs / 1e6:.1f}M MACs"
    assert count_params(model) == pytest.approx(params_ref, rel=0.03), f"{count_params(model) / 1e6:.3f}M params"


def test_named_arch_round_trips_and_runs(tmp_path):
    arch = FBNetV2Space.named_archs()["fbnetv2_f1"]
    arch.save(tmp_path / "f1.json")
    assert Arch.load(tmp_path / "f1.json") == arch
    model = FBNetV2Space.for_arch(arch, input_size=64).build(arch).eval()
    with torch.no_grad():
        features = model(torch.randn(1, 3, 64, 64))
    # the last block at reductions 2, 4, 8, 16 (8, 24, 24, 80 channels), then the head conv: 224 * 6 = 1344
    assert [f.shape[1] for f in features] == [8, 24, 24, 80, 1344]


# -- costs by effective shape propagation ------------------------------------------------------------------
def test_interpolation_is_exact_on_the_grid_and_linear_between():
    grid = torch.tensor([[0.0, 10.0], [100.0, 1000.0]])
    axes = [torch.tensor([8.0, 16.0]), torch.tensor([2.0, 4.0])]
    assert interpolate(grid, axes, [torch.tensor(16.0), torch.tensor(2.0)]) == 100
    assert interpolate(grid, axes, [torch.tensor(12.0), torch.tensor(2.0)]) == 50
    assert interpolate(grid, axes, [torch.tensor(12.0), torch.tensor(3.0)]) == pytest.approx(277.5)
    p = torch.tensor(12.0, requires_grad=True)
    interpolate(grid, axes, [p, torch.tensor(2.0)]).backward()
    assert p.grad == pytest.approx(100 / 8)


def test_effective_widths():
    w = {"c": torch.tensor([0.25, 0.75]), "e": torch.tensor([0.5, 0.5])}
    assert Width("c", (8, 16)).effective(w, "cpu") == 14
    assert ProductWidth("c", "e", ((8, 24), (16, 48))).effective(w, "cpu") == pytest.approx(
        0.25 * 16 + 0.75 * 32)


@pytest.mark.parametrize("seed", range(4))
def test_cost_of_a_discrete_arch_is_the_built_models_macs(seed):
    space = small()
    table = space.supernet().price(FlopsCost(), 30)
    choices = random_choices(space, seed)
    model = space.build(Arch(space="fbnetv2", config=SMALL, choices=choices))
    assert table.of_choices(choices) == count_macs(model, torch.zeros(1, 3, 30, 30))
    low, high = table.bounds()
    assert low <= count_macs(model, torch.zeros(1, 3, 30, 30)) <= high


def test_expected_channels_feed_the_next_layers_cost():
    # the cost of stage 2's first block depends on stage 1's width through its input: moving stage-1's mix
    # to more channels raises the expected cost by more than stage 1's own blocks account for, and the
    # gradient reaches stage 1's channel logits through the effective shape
    space = small()
    table = space.supernet().price(FlopsCost(), 30)
    base = {d.name: torch.full((len(d.options),), 1 / len(d.options)) for d in space.decisions()}
    theta = torch.zeros(3, requires_grad=True)
    mix = {**base, "s1.channels": torch.softmax(theta, 0)}
    cost = table.expected(mix)
    cost.backward()
    assert theta.grad[2] > 0 > theta.grad[0]  # more channels cost more
    # under a soft mix the expectation lies between the extremes, and fractional widths are interpolated
    low, high = table.bounds()
    assert low < cost.item() < high
    # effective shape: half the mix on 24 and half on 40 output channels of the last stage costs what 32
    # channels cost (its widths enter MACs linearly: the projection conv and the head conv's input)
    at = {c: {**base, "s3.channels": torch.eye(3)[i]} for i, c in enumerate((24, 32, 40))}
    half = {**base, "s3.channels": torch.tensor([0.5, 0.0, 0.5])}
    assert float(table.expected(half)) == pytest.approx(float(table.expected(at[32])), rel=1e-6)
    assert float(table.expected(at[24])) < float(table.expected(at[32])) < float(table.expected(at[40]))


def test_memory_cost_is_refused_with_a_reason():
    from nascore.costs.memory import MemoryCost

    with pytest.raises(NascoreError, match="effective shape propagation"):
        small().supernet().price(MemoryCost(), 30)


def test_invalid_stage_configs_name_the_field():
    from pydantic import ValidationError

    for stage, message in (({"channels": [8, 8], "blocks": 1}, "distinct"),
                           ({"channels": [8], "blocks": 1, "types": ["k7"]}, "unknown block types"),
                           ({"channels": [8], "blocks": 1, "expansions": [1, 2]}, "expansion 1"),
                           ({"channels": [8], "blocks": 1, "resolutions": [0]}, "between 1 and 8")):
        with pytest.raises(ValidationError, match=message):
            FBNetV2Space({"stages": [stage]})


# -- latency tables and the command line -------------------------------------------------------------------
TINY = {"input_size": 16, "stem": 8, "head_channels": 32, "stages": [
    {"channels": [8, 16], "blocks": 2, "stride": 2, "expansions": [1.5, 3.0], "types": ["k3", "k5_se_hs", "skip"],
     "resolutions": [1, 2]},
    {"channels": [16, 24], "blocks": 1, "stride": 2, "expansions": [2.0], "types": ["k3_hs", "skip"]}]}


def test_latency_table_holds_every_operation_a_built_arch_runs(tmp_path):
    from nascore.cost import op_key
    from nascore.costs.latency import LatencyCost
    from nascore.costs.lut import entry_key

    space = FBNetV2Space(TINY)
    cost = LatencyCost({"lut": str(tmp_path / "lut.json"), "min_run_time": 0.002})
    table = space.supernet().price(cost, 16)
    measured = dict(cost.table.entries)
    assert all(k.startswith("fbnetv2:") for k in measured)
    for seed in range(4):
        choices = random_choices(space, seed)
        ops = space.arch_operations(Arch(space="fbnetv2", config=TINY, choices=choices), 16)
        # the grids priced every operation the built model runs, at the shape it runs it
        assert {entry_key(op_key(op.module), op.input_shape) for op in ops} <= set(measured)
        estimate = sum(cost.price_all([(op.module, op.input_shape) for op in ops])) + cost.overhead()
        assert table.of_choices(choices) == pytest.approx(estimate, rel=1e-5)
    assert cost.table.entries == measured  # nothing new measured


@pytest.mark.slow
def test_search_train_and_measure_from_the_command_line(tmp_path, capsys):
    import yaml

    from nascore.cli import main

    spec = {"seed": 1,
            "dataset": {"name": "digit-scenes", "image_size": 16, "num_train": 48, "num_val": 16, "num_test": 8,
                        "cache_dir": str(tmp_path / "cache")},
            "tasks": [{"name": "classification"}],
            "space": {"name": "fbnetv2", **TINY},
            "strategy": {"name": "dnas", "epochs": 2, "warmup_epochs": 1, "batch_size": 16, "max_steps": 2},
            "cost": {"name": "flops", "loss": {"form": "budget", "target": 2.0e5}},
            "train": {"epochs": 1, "batch_size": 16},
            "pareto": {"samples": 2, "bn_batches": 1}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 0
    arch = Arch.load(tmp_path / "run" / "arch.json")
    rows = [line for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert '"expected_cost"' in rows[-2] or '"expected_cost"' in rows[-1]
    space = FBNetV2Space.for_arch(arch)
    model = space.build(arch)
    pareto = (tmp_path / "run" / "pareto.csv").read_text().splitlines()
    derived = next(line for line in pareto if ",derived," in line).split(",")
    # the table's estimate and the built model's counted multiply-adds agree for the derived arch
    assert float(derived[2]) == float(derived[3]) == count_macs(model, torch.zeros(1, 3, 16, 16))
    capsys.readouterr()
    assert main(["measure", str(tmp_path / "run" / "arch.json"), "--min-run-time", "0.01",
                 "--lut", str(tmp_path / "m.json")]) == 0
    assert "lookup-table estimate" in capsys.readouterr().out


def test_a_coarser_cost_grid_prices_fewer_operations_and_interpolates():
    exact_cost, coarse_cost = FlopsCost(), FlopsCost()
    exact = small().supernet().price(exact_cost, 30)
    coarse_space = FBNetV2Space({**SMALL, "cost_grid": 2})
    coarse = coarse_space.supernet().price(coarse_cost, 30)
    assert len(coarse_cost._cache) < len(exact_cost._cache) * 0.6
    decisions = small().decisions()
    smallest = {d.name: d.options[0] for d in decisions}  # every width at a grid end: no interpolation
    assert coarse.of_choices(smallest) == exact.of_choices(smallest)
    for seed in range(4):
        choices = random_choices(small(), seed)
        assert coarse.of_choices(choices) == pytest.approx(exact.of_choices(choices), rel=0.1)

