"""Branch configs as trees and the exact expected cost of a branched encoder (nascore.spaces.branching)."""
from __future__ import annotations

import itertools
import random

import pytest
import torch

from nascore.spaces.branching import canonical, expected_groups, groups_of, partitions, random_tree


def brute_force(probs: torch.Tensor) -> torch.Tensor:
    """E[groups per layer] by enumerating every branch config with its probability."""
    num_layers, num_tasks, num_copies = probs.shape
    out = torch.zeros(num_layers, dtype=torch.float64)
    for flat in itertools.product(range(num_copies), repeat=num_layers * num_tasks):
        config = [flat[i * num_tasks:(i + 1) * num_tasks] for i in range(num_layers)]
        p = 1.0
        for layer, row in enumerate(config):
            for t, c in enumerate(row):
                p *= float(probs[layer, t, c])
        out += torch.tensor([len(g) for g in groups_of(config, num_tasks)], dtype=torch.float64) * p
    return out


def monte_carlo(probs: torch.Tensor, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Sampled branch configs: mean and standard error of the number of groups per layer."""
    num_layers, num_tasks, num_copies = probs.shape
    flat = probs.reshape(-1, num_copies)
    picks = torch.multinomial(flat, n, replacement=True, generator=generator).T.reshape(n, num_layers, num_tasks)
    same = picks[:, :, :, None] == picks[:, :, None, :]  # [n, L, T, T]
    together = same.int().cumprod(1).bool()  # shared every layer so far
    earlier = torch.tril(torch.ones(num_tasks, num_tasks, dtype=torch.bool), -1)  # [t, s]: s < t
    first = ~(together & earlier).any(-1)  # task t is the first of its group
    groups = first.sum(-1).double()
    return groups.mean(0), groups.std(0) / n ** 0.5


def reference_estimate(probs: torch.Tensor) -> torch.Tensor:
    """The public BMTAS code's estimate (its BranchingLoss), written out: a chain over set partitions where a
    partition's probability is P(this layer's picks induce it) * P(the previous layer was any coarsening of
    it); the remaining mass goes to the all-separate partition."""
    num_layers, num_tasks, num_copies = probs.shape

    def partitions(items):
        if len(items) == 1:
            yield [items]
            return
        for smaller in partitions(items[1:]):
            for i, block in enumerate(smaller):
                yield smaller[:i] + [[items[0]] + block] + smaller[i + 1:]
            yield [[items[0]]] + smaller

    parts = [frozenset(frozenset(b) for b in p) for p in partitions(list(range(num_tasks)))]
    parts = [p for p in parts if len(p) < num_tasks]
    induced: dict[frozenset, list[tuple[int, ...]]] = {p: [] for p in parts}
    for picks in itertools.product(range(num_copies), repeat=num_tasks):
        blocks = frozenset(frozenset(t for t in range(num_tasks) if picks[t] == c) for c in set(picks))
        if blocks in induced:
            induced[blocks].append(picks)

    def refines(a, b):
        return all(any(x <= y for y in b) for x in a)

    out = []
    previous = None
    for layer in range(num_layers):
        p_layer = {}
        for part in parts:
            p = sum(float(torch.prod(torch.stack([probs[layer, t, c] for t, c in enumerate(picks)])))
                    for picks in induced[part])
            if previous is not None:
                p *= sum(previous[a] for a in parts if refines(part, a))
            p_layer[part] = p
        rest = 1.0 - sum(p_layer.values())
        out.append(sum(len(part) * p for part, p in p_layer.items()) + num_tasks * rest)
        previous = p_layer
    return torch.tensor(out, dtype=torch.float64)


def random_probs(layers: int, tasks: int, seed: int, spread: float = 1.5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(spread * torch.randn(layers, tasks, tasks, generator=g, dtype=torch.float64), -1)


@pytest.mark.parametrize("seed", [0, 1])
def test_expected_groups_equals_enumeration(seed):
    probs = random_probs(3, 3, seed)
    assert torch.allclose(expected_groups(probs), brute_force(probs), atol=1e-12)


def test_expected_groups_matches_monte_carlo():
    probs = random_probs(6, 4, seed=3)
    mean, stderr = monte_carlo(probs, 200_000, torch.Generator().manual_seed(0))
    exact = expected_groups(probs)
    assert ((exact - mean).abs() < 5 * stderr + 1e-9).all(), (exact, mean, stderr)
    # not trivially so: the layers differ, and the count grows as streams split
    assert exact[-1] > exact[0] + 0.3


def test_reference_estimate_overestimates_beyond_layer_0():
    for seed in range(4):
        probs = random_probs(4, 3, seed)
        exact, ref = expected_groups(probs), reference_estimate(probs)
        assert torch.isclose(ref[0], exact[0], atol=1e-12)
        assert (ref[1:] > exact[1:] + 1e-6).all(), (seed, exact, ref)


def test_expected_groups_limits_and_gradient():
    tasks = 3
    shared = torch.zeros(5, tasks, tasks, dtype=torch.float64)
    shared[..., 0] = 1.0
    assert torch.equal(expected_groups(shared), torch.ones(5, dtype=torch.float64))
    separate = torch.eye(tasks, dtype=torch.float64).expand(5, tasks, tasks)
    assert torch.equal(expected_groups(separate), torch.full((5,), 3.0, dtype=torch.float64))
    logits = torch.zeros(5, tasks, tasks, dtype=torch.float64, requires_grad=True)
    expected_groups(torch.softmax(logits, -1)).sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_groups_form_a_tree():
    """Tasks share a layer only if they shared the one before: picking the same copy after diverging does
    not merge them again."""
    config = [[0, 0, 0], [0, 0, 1], [1, 0, 1], [2, 2, 2]]
    assert groups_of(config, 3) == [[(0, 1, 2)], [(0, 1), (2,)], [(0,), (1,), (2,)], [(0,), (1,), (2,)]]
    rng = random.Random(0)
    for _ in range(200):
        config = [[rng.randrange(4) for _ in range(4)] for _ in range(6)]
        groups = groups_of(config, 4)
        previous = [(0, 1, 2, 3)]
        for layer in groups:
            assert sorted(t for g in layer for t in g) == [0, 1, 2, 3]
            assert all(any(set(g) <= set(p) for p in previous) for g in layer)
            previous = layer


def test_canonical_numbers_copies_by_sharing():
    rng = random.Random(1)
    for _ in range(200):
        config = [[rng.randrange(3) for _ in range(3)] for _ in range(5)]
        canon = canonical(config)
        assert groups_of(canon, 3) == groups_of(config, 3)
        assert canonical(canon) == canon
        for row, groups in zip(canon, groups_of(canon, 3)):
            # equal copy index <=> same group
            assert len({row[g[0]] for g in groups}) == len(groups)
            assert all(len({row[t] for t in g}) == 1 for g in groups)
    # layer 2: tasks 0 and 2 both pick copy 1 under different parents; the later group moves to a free copy
    assert canonical([[0, 0, 0], [0, 0, 1], [1, 0, 1]]) == [[0, 0, 0], [0, 0, 1], [1, 0, 2]]


def test_partitions_are_every_set_partition():
    assert sorted(sorted(p) for p in partitions((0, 1, 2))) == [
        [(0,), (1,), (2,)], [(0,), (1, 2)], [(0, 1), (2,)], [(0, 1, 2)], [(0, 2), (1,)]]
    assert len(list(partitions(tuple(range(4))))) == 15  # Bell number B4


def test_random_tree_draws_every_tree():
    """``random_tree`` (BMTAS's random baseline): canonical configs, and every tree of 3 tasks over 3 layers drawn
    (a tree: the task groups at each layer; fully shared and fully task-specific included)."""
    def tree(config):
        return tuple(tuple(layer) for layer in groups_of(config, 3))

    every = {tree(rows) for rows in itertools.product(itertools.product(range(3), repeat=3), repeat=3)}
    rng = random.Random(0)
    drawn = set()
    for _ in range(3000):
        config = random_tree(3, 3, rng)
        assert canonical(config) == config
        drawn.add(tree(config))
    assert drawn == every
    assert tree([[0, 0, 0]] * 3) in drawn and tree([[0, 1, 2]] * 3) in drawn
