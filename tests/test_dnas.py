"""DNAS (FBNet): temperature, warm-up, one Gumbel sample per arch step, derive, state, cost pressure."""
from __future__ import annotations

import io
import math

import pytest
import torch

import nascore.loops as loops
from nascore.costs.flops import FlopsCost
from nascore.objective import Additive, Multiplicative
from nascore.parts import Parts
from nascore.spaces.fbnet import FBNetSpace
from nascore.strategies.dnas import DNAS, Temperature
from nascore.strategy import SHARED, SearchContext, entropy
from nascore.task import build_network
from nascore.tasks.classification import Classification
from nascore.tasks.datasets import DigitScenes

CONFIG = {"epochs": 3, "warmup_epochs": 1, "batch_size": 8, "max_steps": 1}


# -- temperature -------------------------------------------------------------------------------
def test_temperature_schedule():
    t = DNAS().config.temperature
    assert (t.initial, t.final, t.decay) == (5.0, 0.5, None)
    assert [t.at(e, warmup=10, epochs=90) for e in (0, 10)] == [5.0, 5.0] and t.at(89, 10, 90) == pytest.approx(0.5)
    paper = Temperature(decay=0.045)  # FBNet's schedule, one option away
    for epoch in range(0, 91, 7):
        assert paper.at(epoch, warmup=10, epochs=90) == pytest.approx(5.0 * math.exp(-0.045 * epoch), rel=1e-12)
    assert Temperature(initial=2.0, decay=0.0).at(50, warmup=10, epochs=90) == 2.0
    assert DNAS().config.warmup_epochs == 10 and DNAS().config.epochs == 90
    assert DNAS().config.arch_fraction == 0.2 and DNAS().config.arch.lr == 0.2


def test_temperature_falls_to_final_over_the_architecture_epochs():
    t = Temperature(initial=4.0, final=0.25)
    assert [t.at(e, warmup=2, epochs=7) for e in (0, 1, 2)] == [4.0, 4.0, 4.0]
    assert [t.at(e, warmup=2, epochs=7) for e in (3, 4, 5, 6)] == pytest.approx([2.0, 1.0, 0.5, 0.25])
    assert t.at(1, warmup=1, epochs=2) == pytest.approx(0.25) and t.at(0, warmup=0, epochs=1) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="decay .* or final .*, not both"):
        Temperature(initial=4.0, final=0.25, decay=0.1)
    for given in ({}, {"final": 0.25}, {"decay": 0.045}):  # what a run's resolved spec.yaml writes loads again
        t = Temperature(**given)
        assert Temperature(**t.model_dump()) == t and (t.final is None) != (t.decay is None)


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return DigitScenes({"image_size": 32, "num_train": 60, "num_val": 20, "num_test": 1,
                        "cache_dir": str(tmp_path_factory.mktemp("digits"))})


@pytest.fixture(scope="module")
def splits(data):
    return data.split("train"), data.split("val")


SPACE = {"width": 0.25, "input_size": 32}


@pytest.fixture(scope="module")
def table():
    return FBNetSpace(SPACE).supernet().price(FlopsCost(), 32)


def make_ctx(data, splits, table=None, objective=None, seed=0) -> SearchContext:
    torch.manual_seed(seed)
    supernet = FBNetSpace(SPACE).supernet()
    tasks = [Classification()]
    network = build_network(supernet, tasks, data.info())
    if table is not None and objective is None:
        objective = Multiplicative()
    parts = Parts(torch.device("cpu"), data, data.info(), splits[0], splits[1], tasks, FBNetSpace(SPACE), seed)
    return SearchContext(parts, network, supernet, FlopsCost() if table is not None else None, table, objective)


def make_dnas(ctx, **config) -> DNAS:
    strategy = DNAS({**CONFIG, **config})
    strategy.setup(ctx)
    return strategy


def thetas(strategy: DNAS) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in strategy.theta.items()}


def params(ctx) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in ctx.network.named_parameters()}


@pytest.fixture(scope="module")
def searched(data, splits, table):
    """A warm-up epoch, then a search epoch; the states in between."""
    ctx = make_ctx(data, splits, table)
    strategy = make_dnas(ctx)
    p0, t0 = params(ctx), thetas(strategy)
    row0 = strategy.run_epoch(0)
    p1, t1 = params(ctx), thetas(strategy)
    grads_after_warmup = [v.grad for v in strategy.theta.values()]
    row1 = strategy.run_epoch(1)
    return dict(ctx=ctx, strategy=strategy, rows=(row0, row1), params=(p0, p1, params(ctx)),
                thetas=(t0, t1, thetas(strategy)), grads_after_warmup=grads_after_warmup)


# -- splits ------------------------------------------------------------------------------------
def test_weights_and_architecture_split_80_20(data, splits):
    strategy = make_dnas(make_ctx(data, splits))
    w, a = strategy.weight_set, strategy.arch_set
    assert (len(w), len(a)) == (48, 12)
    assert set(w.indices).isdisjoint(a.indices) and set(w.indices) | set(a.indices) == set(range(60))
    again = make_dnas(make_ctx(data, splits))
    assert again.arch_set.indices == a.indices  # a function of the seed


# -- epochs ------------------------------------------------------------------------------------
def test_warmup_epoch_trains_weights_only(searched):
    t0, t1, _ = searched["thetas"]
    p0, p1, _ = searched["params"]
    assert all(torch.equal(t0[k], t1[k]) for k in t0)
    assert all(g is None for g in searched["grads_after_warmup"])
    assert any(not torch.equal(p0[k], p1[k]) for k in p0)
    row0 = searched["rows"][0]
    assert "arch_loss" not in row0 and "expected_cost" not in row0
    assert row0["temperature"] == 5.0
    assert row0["entropy"] == pytest.approx(math.log(9))  # theta still uniform


def test_search_epoch_changes_theta(searched):
    _, t1, t2 = searched["thetas"]
    changed = [k for k in t1 if not torch.equal(t1[k], t2[k])]
    assert len(changed) == len(t1)  # every decision got a gradient
    row1 = searched["rows"][1]
    assert row1["temperature"] == 5.0  # the first architecture epoch: initial; epoch 2 (the last) would be final
    assert row1["entropy"] < math.log(9)


def test_metrics_row_with_a_cost_table(searched):
    row = searched["rows"][1]
    for key in ("entropy", "top_choices", "temperature", "expected_cost", "arch_loss", "task_loss", "weight_loss",
                "lr", "derived_cost", "val/classification/top1", "val/classification/loss"):
        assert key in row, key
    strategy = searched["strategy"]
    assert set(row["top_choices"]) == {d.name for d in strategy.decisions}
    assert all(row["top_choices"][d.name] in d.options for d in strategy.decisions)
    assert row["derived_cost"] == searched["ctx"].cost_table.of_choices(strategy.derive()[SHARED])
    table = searched["ctx"].cost_table
    lo = table.fixed + sum(float(c.min()) for c in table.options.values())
    hi = table.fixed + sum(float(c.max()) for c in table.options.values())
    assert lo <= row["expected_cost"] <= hi
    assert all(math.isfinite(v) for v in row.values() if isinstance(v, float))


def test_metrics_row_without_a_cost_table(data, splits):
    strategy = make_dnas(make_ctx(data, splits), warmup_epochs=0, max_steps=1)
    row = strategy.run_epoch(0)
    assert "arch_loss" in row and "entropy" in row and "temperature" in row and "top_choices" in row
    assert "expected_cost" not in row and "derived_cost" not in row


def test_arch_steps_leave_the_network_weights_alone(data, splits, table):
    ctx = make_ctx(data, splits, table)
    strategy = make_dnas(ctx)
    before, t0 = params(ctx), thetas(strategy)
    strategy._arch_pass(1, 3.0)
    after = params(ctx)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(not torch.equal(t0[k], strategy.theta[k]) for k in t0)


def count_steps(strategy: DNAS, monkeypatch) -> dict[str, int]:
    """The weight and the architecture steps of the next epochs, counted where they are taken (``train_step``)."""
    import nascore.strategies.gumbel as gumbel

    counts = {"weights": 0, "arch": 0}
    real = gumbel.train_step

    def counted(net, images, targets, tasks, optimizer, *args, **kwargs):
        counts["arch" if optimizer is strategy.a_opt else "weights"] += 1
        return real(net, images, targets, tasks, optimizer, *args, **kwargs)

    monkeypatch.setattr(gumbel, "train_step", counted)
    return counts


@pytest.mark.parametrize("config, weights, arch", [
    ({"max_steps": None}, 12, 3),  # the whole splits: 48 and 12 images in batches of 4
    ({"max_steps": None, "arch": {"steps": 1}}, 12, 1),  # fewer architecture steps, as many weight steps
    ({"max_steps": 1, "arch": {"steps": 2}}, 1, 2),  # arch.steps, not max_steps, caps the architecture pass
    ({"max_steps": None, "arch": {"steps": 5}}, 12, 3)])  # at most one pass over the architecture split
def test_architecture_steps_per_epoch_are_capped_apart_from_the_weight_steps(data, splits, monkeypatch, config,
                                                                            weights, arch):
    strategy = make_dnas(make_ctx(data, splits), warmup_epochs=0, batch_size=4, **config)
    counts = count_steps(strategy, monkeypatch)
    row = strategy.run_epoch(0)
    assert (counts["weights"], counts["arch"]) == (weights, arch)
    assert row["arch_steps"] == arch


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_theta_learning_rate_follows_its_schedule_over_the_architecture_epochs(data, splits, monkeypatch, schedule):
    """Each architecture step is taken at the epoch's rate: lr throughout, or its cosine over the epochs after the
    warm-up (from lr at the first); a pure function of the epoch, so a resumed search takes the same steps."""
    strategy = make_dnas(make_ctx(data, splits), epochs=5, warmup_epochs=1, arch={"lr": 0.3, "schedule": schedule})
    used: list[float] = []
    step = strategy.a_opt.step

    def recorded(*args, **kwargs):
        used.append(strategy.a_opt.param_groups[0]["lr"])
        return step(*args, **kwargs)

    monkeypatch.setattr(strategy.a_opt, "step", recorded)
    rows = [strategy._arch_pass(epoch, 1.0) for epoch in range(1, 5)]
    expected = [0.3] * 4 if schedule == "constant" else [0.3 * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]
    assert used == pytest.approx(expected, rel=1e-12)  # one step per epoch (max_steps: 1)
    assert [r["arch_lr"] for r in rows] == pytest.approx(expected, rel=1e-12)
    assert make_dnas(make_ctx(data, splits), epochs=5, warmup_epochs=1,
                     arch={"lr": 0.3, "schedule": schedule}).arch_lr(3) == pytest.approx(expected[2], rel=1e-12)


def test_one_gumbel_sample_drives_forward_and_cost(data, splits, table, monkeypatch):
    ctx = make_ctx(data, splits, table)
    strategy = make_dnas(ctx, batch_size=4, max_steps=2)
    events = []
    real_gumbel, real_expected, real_set = strategy._gumbel, ctx.cost_table.expected, ctx.supernet.set_mix

    def gumbel(*args, **kwargs):
        out = real_gumbel(*args, **kwargs)
        events.extend(("gumbel", sample) for sample in out.values())
        return out

    def set_mix(mix):
        events.append(("set", dict(mix)))
        return real_set(mix)

    def expected(mix):
        events.append(("expected", dict(mix)))
        return real_expected(mix)

    monkeypatch.setattr(strategy, "_gumbel", gumbel)
    monkeypatch.setattr(ctx.cost_table, "expected", expected)
    monkeypatch.setattr(ctx.supernet, "set_mix", set_mix)
    strategy._arch_pass(1, 2.0)

    costs = [i for i, (kind, _) in enumerate(events) if kind == "expected"]
    assert len(costs) == 2, "one priced sample per arch step"
    for i in costs:
        mix = events[i][1]
        # the forward of this step ran with exactly these tensors ...
        sets = [e for kind, e in events[:i] if kind == "set"]
        assert sets and all(sets[-1][k] is mix[k] for k in mix)
        # ... which are this step's Gumbel-softmax samples, differentiable wrt theta
        samples = [e for kind, e in events[:i] if kind == "gumbel"][-len(mix):]
        assert all(any(m is s for s in samples) for m in mix.values())
        assert all(m.requires_grad for m in mix.values())
        assert set(mix) == {d.name for d in strategy.decisions}


def test_gumbel_noise_is_a_function_of_its_stream(data, splits):
    """Every rank of a torchrun job draws its (seed, epoch, pass) stream alike, so every rank mixes alike."""
    strategy = make_dnas(make_ctx(data, splits))
    first, again, other = (strategy._gumbel(2.0, grad=False, noise=strategy._noise(epoch, strategy.ARCH_NOISE))
                           for epoch in (1, 1, 2))
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)
    assert all(torch.allclose(m.sum(), torch.tensor(1.0)) and (m > 0).all() for m in first.values())


# -- results and state -------------------------------------------------------------------------
def test_derive_returns_the_argmax(data, splits):
    strategy = make_dnas(make_ctx(data, splits))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for t in strategy.theta.values():
            t.copy_(torch.randn(t.shape, generator=g))
    derived = strategy.derive()
    assert list(derived) == [SHARED]
    assert derived[SHARED] == {d.name: d.options[int(strategy.theta[d.name].argmax())] for d in strategy.decisions}
    with torch.no_grad():
        strategy.theta["layer04"].fill_(0).index_fill_(0, torch.tensor([8]), 1.0)
    assert strategy.derive()[SHARED]["layer04"] == "skip"


def test_top_choices_in_the_metrics_are_the_derived_arch(data, splits):
    strategy = make_dnas(make_ctx(data, splits))
    with torch.no_grad():
        theta = strategy.theta["layer01"]
        theta[0] = 0.01
        theta[5] = torch.nextafter(torch.tensor(0.01), torch.tensor(1.0))  # larger, by one float32 ulp
    assert strategy.derive()[SHARED]["layer01"] == "k5_e1_g2"
    assert strategy._distribution_stats()["top_choices"] == strategy.derive()[SHARED]


def test_top_probability_is_the_mean_probability_of_the_derived_choices(data, splits):
    strategy = make_dnas(make_ctx(data, splits))
    n = len(strategy.decisions)
    assert strategy._distribution_stats()["top_probability"] == pytest.approx(1 / 9)
    with torch.no_grad():
        strategy.theta["layer01"][2] = 100.0  # one decision all but certain
    assert strategy._distribution_stats()["top_probability"] == pytest.approx((1 + (n - 1) / 9) / n)


def test_state_dict_round_trip(searched, data, splits, table):
    strategy = searched["strategy"]
    buffer = io.BytesIO()
    torch.save(strategy.state_dict(), buffer)  # what a checkpoint holds; must load with weights_only=True
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh = make_dnas(make_ctx(data, splits, table, seed=1))
    assert all(float(t.detach().abs().sum()) == 0 for t in fresh.theta.values())  # uniform before loading
    fresh.load_state_dict(state)
    assert fresh.derive() == strategy.derive()
    assert all(torch.equal(fresh.theta[k].detach(), strategy.theta[k].detach()) for k in strategy.theta)
    assert fresh.theta["layer01"].requires_grad  # still a leaf the optimiser updates
    assert fresh.a_opt.state_dict()["state"][0]["step"] == strategy.a_opt.state_dict()["state"][0]["step"]


# -- the cost term -----------------------------------------------------------------------------
def expected_under_softmax(strategy: DNAS, table) -> float:
    with torch.no_grad():
        return float(table.expected({k: torch.softmax(v, 0) for k, v in strategy.theta.items()}))


@pytest.mark.parametrize("objective", [Multiplicative(), Additive(form="additive", lambda_=1.0)])
def test_cost_term_pushes_towards_cheaper_ops(data, splits, table, objective, monkeypatch):
    ctx = make_ctx(data, splits, table, objective)
    strategy = make_dnas(ctx, batch_size=4, max_steps=2, arch={"lr": 0.05, "weight_decay": 0.0})
    # the task loss is a constant: only the cost term moves theta
    monkeypatch.setattr(loops, "task_losses",
                        lambda outputs, targets, tasks: {"c": torch.tensor(1.0, requires_grad=True)})
    start = thetas(strategy)
    before = expected_under_softmax(strategy, table)
    for epoch in range(1, 3):
        strategy._arch_pass(epoch, 5.0)
    after = expected_under_softmax(strategy, table)
    assert after < before
    for name, costs in table.options.items():
        moved = strategy.theta[name].detach() - start[name]
        if costs.max() > costs.min():
            assert moved[int(costs.argmin())] > 0, name  # the cheapest op gains ...
            assert moved[int(costs.argmax())] < 0, name  # ... the dearest loses


def test_entropy_of_a_decision_distribution_and_its_gradient():
    assert entropy(torch.zeros(9)).item() == pytest.approx(math.log(9))
    assert entropy(torch.tensor([200.0, 0.0, 0.0])).item() == 0.0  # underflowed probabilities add nothing
    logits = torch.tensor([0.3, -1.2, 2.0], requires_grad=True)
    h = entropy(logits)
    h.backward()
    p = torch.softmax(logits.detach().double(), 0)
    expected = -(p * p.log()).sum()
    assert h.item() == pytest.approx(expected.item(), rel=1e-6)
    torch.testing.assert_close(logits.grad.double(), -p * (p.log() + expected), rtol=1e-5, atol=1e-7)  # dH/dz
