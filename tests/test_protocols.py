"""The contracts between component families (``nascore.protocols``) hold for every registered component: spaces
price their archs with a CostEstimate and spell each arch one way (``canonical``), multi-task backbones declare
their tasks, optional capabilities (sampling, exporting) are declared by subclassing."""
from __future__ import annotations

import inspect
import random
from typing import Any, ClassVar

import pytest
import torch

from nascore.arch import Arch
from nascore.costs.flops import FlopsCost
from nascore.errors import NascoreError
from nascore.parts import Parts
from nascore.protocols import CostEstimate, Distributing, Evaluating, Exporting, MultiTaskBackbone, Sampling
from nascore.registry import get_registry
from nascore.spaces.branching import config_of, groups_of
from nascore.strategies.bmtas import BMTAS
from nascore.strategy import SearchContext, SearchStrategy
from nascore.supernet import one_hot
from nascore.task import Network

#: a small config of every registered space, priced at its input size
SMALL: dict[str, dict[str, Any]] = {
    "fbnet": {"width": 0.25, "input_size": 32, "head_channels": 64},
    "fbnetv2": {"input_size": 16, "stem": 8, "head_channels": 32, "stages": [
        {"channels": [8, 16], "blocks": 2, "stride": 2, "expansions": [1.5, 3.0], "types": ["k3", "skip"],
         "resolutions": [1, 2]},
        {"channels": [16, 24], "blocks": 1, "stride": 2, "expansions": [2.0], "types": ["k3_hs", "skip"]}]},
    "fbnetv5": {"input_size": 32, "width": 0.25, "blocks": [1, 1, 1, 1], "head_channels": 64},
    "branched": {"backbone": "fbnet_a", "tasks": ["a", "b", "c"], "input_size": 32},
}


def space(name: str):
    cls = get_registry().get("space", name)
    return cls(cls.Config.model_validate(SMALL[name]))


def random_archs(decisions, n: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [{d.name: rng.choice(d.options) for d in decisions} for _ in range(n)]


def test_every_registered_space_is_checked_here():
    assert set(get_registry().names("space")) <= set(SMALL)


# -- CostEstimate --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SMALL))
def test_a_supernets_price_is_a_cost_estimate(name):
    sp = space(name)
    supernet = sp.supernet()
    table = supernet.price(FlopsCost(), sp.input_size)
    assert isinstance(table, CostEstimate) and table.unit == "MACs"
    low, high = table.bounds()
    decisions = supernet.decisions()
    for choices in random_archs(decisions, 3):
        cost = table.of_choices(choices)  # the table holds its decisions
        assert isinstance(cost, float) and low <= cost <= high
        assert cost == pytest.approx(float(table.expected(one_hot(decisions, choices))), rel=1e-6)
    mix = {d.name: torch.full((len(d.options),), 1.0 / len(d.options), requires_grad=True) for d in decisions}
    table.expected(mix).backward()
    assert any(m.grad is not None and m.grad.abs().sum() > 0 for m in mix.values())


# -- canonical -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SMALL))
def test_canonical_choices_are_one_spelling_of_the_same_arch(name):
    supernet = space(name).supernet()
    for choices in random_archs(supernet.decisions(), 5, seed=1):
        canonical = supernet.canonical(choices)
        assert set(canonical) == set(choices) and supernet.canonical(canonical) == canonical
        if name not in ("branched", "fbnetv2"):
            assert canonical == choices  # every arch has one spelling (fbnetv2: tests/test_fbnetv2.py)


def test_branched_canonical_choices_number_copies_so_that_equal_means_shared():
    supernet = space("branched").supernet()
    layers, tasks = supernet.layer_names, supernet.tasks
    for choices in random_archs(supernet.decisions(), 5, seed=2):
        before, after = (config_of(c, layers, tasks) for c in (choices, supernet.canonical(choices)))
        assert groups_of(after, len(tasks)) == groups_of(before, len(tasks))  # the same tree
        for row, groups in zip(after, groups_of(after, len(tasks)), strict=True):
            assert len({row[g[0]] for g in groups}) == len(groups)  # one copy number per group


# -- MultiTaskBackbone ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SMALL))
def test_multi_task_backbones_declare_their_tasks(name):
    sp = space(name)
    supernet = sp.supernet()
    choices = random_archs(supernet.decisions(), 1)[0]
    built = sp.build(Arch(space=name, config=sp.config.model_dump(mode="json"), choices=choices))
    if name != "branched":
        assert not isinstance(supernet, MultiTaskBackbone) and not isinstance(built, MultiTaskBackbone)
        assert all(d.stream is None for d in supernet.decisions())
        assert not Network(built, {"x": torch.nn.Identity()}).per_task  # every head reads the one feature list
        return
    tasks = SMALL[name]["tasks"]
    assert isinstance(supernet, MultiTaskBackbone) and isinstance(built, MultiTaskBackbone)
    assert supernet.tasks == built.tasks == tasks
    # every decision routes one task's stream, and none is a task's own: the found arch is one for all tasks
    assert {d.stream for d in supernet.decisions()} == set(tasks)
    assert all(d.task is None for d in supernet.decisions())
    assert Network(built, {t: torch.nn.Identity() for t in tasks}).per_task  # each head reads its task's features


def test_bmtas_refuses_a_supernet_that_is_not_multi_task():
    fbnet = space("fbnet")
    parts = Parts(device=torch.device("cpu"), dataset=None, info=None, train_set=None, val_set=None, tasks=[],
                  space=fbnet, seed=0)
    ctx = SearchContext(parts, network=None, supernet=fbnet.supernet())
    with pytest.raises(NascoreError, match="has no branch decisions"):
        BMTAS({"epochs": 2}).setup(ctx)


# -- declared capabilities -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", get_registry().names("strategy"))
def test_every_registered_strategy_implements_what_it_declares(name):
    cls = get_registry().get("strategy", name)
    assert issubclass(cls, SearchStrategy) and not inspect.isabstract(cls)


def test_the_built_in_strategies_sample_or_train_their_archs():
    assert all(issubclass(get_registry().get("strategy", n), Sampling) for n in ("dnas", "reinforce", "bmtas"))
    assert all(issubclass(get_registry().get("strategy", n), Evaluating) for n in ("random", "predictor"))
    # the strategies with a learned distribution over options record it for nascore report
    assert all(issubclass(get_registry().get("strategy", n), Distributing) for n in ("dnas", "reinforce", "bmtas"))
    assert not any(issubclass(get_registry().get("strategy", n), Distributing) for n in ("random", "predictor"))


def test_a_declared_capability_must_be_implemented():
    class Declared(SearchStrategy, Sampling):
        name: ClassVar[str] = "declared"

    with pytest.raises(TypeError, match="sample"):
        Declared()


@pytest.mark.parametrize("name", get_registry().names("dataset"))
def test_every_registered_dataset_implements_what_it_declares(name):
    assert not inspect.isabstract(get_registry().get("dataset", name))


def test_digit_scenes_exports():
    assert issubclass(get_registry().get("dataset", "digit-scenes"), Exporting)
    assert not issubclass(get_registry().get("dataset", "coco"), Exporting)
