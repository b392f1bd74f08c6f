"""The FBNetV5 space: keep/skip decisions over four fused resolution paths."""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nascore.arch import Arch
from nascore.costs.flops import FlopsCost, count_macs
from nascore.spaces.fbnetv5 import FBNetV5Space

CONFIG = {"input_size": 64, "width": 0.5, "blocks": [1, 2, 2, 1]}


def space() -> FBNetV5Space:
    return FBNetV5Space(CONFIG)


def random_choices(sp: FBNetV5Space, seed: int) -> dict[str, str]:
    rng = random.Random(seed)
    return {d.name: rng.choice(d.options) for d in sp.decisions()}


def built(sp: FBNetV5Space, choices: dict[str, str]) -> nn.Module:
    return sp.build(Arch(space="fbnetv5", config=sp.config.model_dump(mode="json"), choices=choices))


def test_decisions_are_keep_or_skip_per_block_and_path():
    names = [d.name for d in space().decisions()]
    # stage s runs s paths: 1*1 + 2*2 + 3*2 + 4*1 blocks
    assert len(names) == 1 + 4 + 6 + 4 and len(set(names)) == len(names)
    assert names[:3] == ["s1.p0.b1", "s2.p0.b1", "s2.p0.b2"] and "s4.p3.b1" in names
    assert all(d.options == ("keep", "skip") and d.task is None for d in space().decisions())


@pytest.mark.parametrize("size", [64, 96])
def test_feature_levels_match_forward(size):
    sp = FBNetV5Space({**CONFIG, "input_size": size})
    for model in (sp.supernet(), built(sp, random_choices(sp, 0))):
        if hasattr(model, "set_choices"):
            model.set_choices(random_choices(sp, 0))
        with torch.no_grad():
            features = model.eval()(torch.randn(1, 3, size, size))
        assert [i["reduction"] for i in model.feature_info] == [2, 4, 8, 16, 32]
        for f, info in zip(features, model.feature_info):
            assert f.shape[1] == info["num_chs"] and size // f.shape[-1] == info["reduction"]


@pytest.mark.parametrize("seed", range(3))
def test_supernet_on_a_sampled_path_equals_the_built_child(seed):
    sp = space()
    supernet = sp.supernet().eval()
    choices = random_choices(sp, seed)
    child = built(sp, choices).eval()
    state = supernet.state_dict()
    # the child's parameters are the supernet's "keep" candidates (skipped blocks have none)
    mapped = {}
    for key in child.state_dict():
        parts = key.split(".")
        source = ".".join(parts[:4] + ["candidates", "keep"] + parts[4:]) if parts[0] == "stages" else key
        mapped[key] = state[source]
    child.load_state_dict(mapped)
    x = torch.randn(2, 3, 64, 64)
    supernet.set_choices(choices)
    with torch.no_grad():
        for a, b in zip(supernet(x), child(x)):
            torch.testing.assert_close(a, b)
    skipped = sum(v == "skip" for v in choices.values())
    blocks = [block for stage in child.stages for path in stage for block in path]
    assert sum(isinstance(b, nn.Identity) for b in blocks) == skipped and len(blocks) == len(choices)


def test_a_soft_mix_reaches_every_decision():
    sp = space()
    supernet = sp.supernet().train()
    theta = {d.name: torch.zeros(2, requires_grad=True) for d in sp.decisions()}
    supernet.set_mix({k: F.gumbel_softmax(v, tau=1.0) for k, v in theta.items()})
    out = supernet(torch.randn(2, 3, 64, 64))
    sum(o.square().mean() for o in out).backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in theta.values())


def test_cost_table_is_the_built_models_macs():
    sp = space()
    table = sp.supernet().price(FlopsCost(), 64)
    decisions = sp.decisions()
    for seed in range(3):
        choices = random_choices(sp, seed)
        assert table.of_choices(choices) == count_macs(built(sp, choices), torch.zeros(1, 3, 64, 64))
    every = {d.name: "keep" for d in decisions}
    none = {d.name: "skip" for d in decisions}
    assert table.bounds() == (table.of_choices(none), table.of_choices(every))
    assert table.of_choices(none) > 0  # stem and fusions are always there


def test_bad_config_names_the_field():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="kernel must be 3 or 5"):
        FBNetV5Space({"kernel": 7})
    with pytest.raises(ValidationError, match="channels"):
        FBNetV5Space({"channels": [8, 16]})


@pytest.mark.slow
def test_dnas_searches_the_space_from_a_spec(tmp_path):
    from tiny import FLOPS, search

    search(tmp_path, [{"name": "classification"}],
           {"name": "dnas", "epochs": 2, "warmup_epochs": 1, "batch_size": 16, "max_steps": 2}, cost=FLOPS,
           pareto={"samples": 2, "bn_batches": 1})
    arch = Arch.load(tmp_path / "run" / "arch.json")
    assert set(arch.choices.values()) <= {"keep", "skip"} and len(arch.choices) == 1 + 2 + 3 + 4
    model = FBNetV5Space.for_arch(arch).build(arch).eval()
    with torch.no_grad():
        assert len(model(torch.randn(1, 3, 32, 32))) == 5
