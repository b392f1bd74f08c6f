"""Branched multi-task networks (BMTAS): the tree a branch config describes, and the exact expected cost of a
branched encoder under per-layer, per-task copy choices.

At layer ``l`` every task ``t`` picks one of ``T`` copies with probability ``p_l[t, c]``, independently. Two tasks
share layer ``l`` only if they picked the same copy there and shared layer ``l - 1`` (the stem is shared by all),
so they share layer ``l`` iff they picked the same copy at every layer up to ``l``. The layer runs once per group
of tasks, so its cost is ``c_l * (number of groups)``. For a set ``A`` of tasks let
``Q_l(A) = prod_{j <= l} sum_c prod_{t in A} p_j[t, c]`` be the probability that all of ``A`` share layer ``l``.
Counting each group once, by its highest-indexed task ``t`` (the group's members below ``t`` form some set
``S``), inclusion-exclusion gives

    E[groups at l] = sum over non-empty A of (-1)^(|A| + 1) * Q_l(A)

(for two tasks: 2 - P(shared)). This is exact and differentiable; the reference code's estimate (a chain over set
partitions that counts only coarsening-consistent paths and puts the rest on the all-separate partition)
overestimates from the second layer on.
"""
from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from nascore.protocols import CostEstimate

#: 2^T - 1 subsets are enumerated; beyond this many tasks that stops being cheap
MAX_TASKS = 12


def subsets(num_tasks: int) -> tuple[Tensor, Tensor]:
    """Every non-empty subset of the tasks as a 0/1 row ``[2^T - 1, T]``, and its inclusion-exclusion sign."""
    codes = torch.arange(1, 2 ** num_tasks)
    members = ((codes[:, None] >> torch.arange(num_tasks)) & 1).float()
    signs = torch.where(members.sum(1) % 2 == 1, 1.0, -1.0)
    return members, signs


def expected_groups(probs: Tensor) -> Tensor:
    """Expected number of task groups (branches) at each layer: ``probs`` is ``[L, T, C]`` (per layer, task: a
    distribution over ``C`` copies); returns ``[L]``."""
    num_layers, num_tasks, _ = probs.shape
    members, signs = subsets(num_tasks)
    members, signs = members.to(probs), signs.to(probs)
    # prod_{t in A} p[l, t, c] for every subset A: factors of non-members are 1
    factors = members[None, :, :, None] * probs[:, None] + (1 - members[None, :, :, None])  # [L, S, T, C]
    together = factors.prod(2).sum(-1)  # [L, S]: all of A pick one copy at layer l
    return (together.cumprod(0) * signs).sum(-1)


def decision(layer: str, task: str) -> str:
    """The name of the decision which copy ``task`` runs at ``layer``."""
    return f"{layer}.{task}"


def config_of(choices: Mapping[str, str], layers: Sequence[str], tasks: Sequence[str]) -> list[list[int]]:
    """Choices as a branch config: ``config[l][t]`` = the copy task ``t`` uses at layer ``l``."""
    return [[int(choices[decision(layer, t)]) for t in tasks] for layer in layers]


def choices_of(config: Sequence[Sequence[int]], layers: Sequence[str], tasks: Sequence[str]) -> dict[str, str]:
    return {decision(layer, t): str(c) for layer, row in zip(layers, config) for t, c in zip(tasks, row)}


def groups_of(config: Sequence[Sequence[int]], num_tasks: int) -> list[list[tuple[int, ...]]]:
    """The task groups at each layer of a branch config (``config[l][t]`` = copy task ``t`` uses at layer
    ``l``): tasks share a layer iff they share the previous one and pick the same copy. Groups are ordered by
    their first task."""
    groups: list[tuple[int, ...]] = [tuple(range(num_tasks))]
    out = []
    for row in config:
        split: list[tuple[int, ...]] = []
        for group in groups:
            by_copy: dict[int, list[int]] = {}
            for t in group:
                by_copy.setdefault(row[t], []).append(t)
            split.extend(tuple(ts) for ts in by_copy.values())
        groups = sorted(split)
        out.append(groups)
    return out


def canonical(config: Sequence[Sequence[int]]) -> list[list[int]]:
    """The same tree with copies renumbered so that tasks share a layer iff they use the same copy index: at each
    layer a group keeps the copy it picked unless an earlier group (under another parent) took it first."""
    num_tasks = len(config[0]) if config else 0
    out = []
    for row, groups in zip(config, groups_of(config, num_tasks)):
        new, taken = list(row), set()
        for group in groups:
            c = row[group[0]]
            if c in taken:
                c = min(set(range(num_tasks)) - taken)
            taken.add(c)
            for t in group:
                new[t] = c
        out.append(new)
    return out


def partitions(items: tuple[int, ...]) -> Iterator[list[tuple[int, ...]]]:
    """Every set partition of ``items``."""
    if len(items) == 1:
        yield [items]
        return
    first, rest = items[0], items[1:]
    for smaller in partitions(rest):
        yield [(first,), *smaller]
        for i, block in enumerate(smaller):
            yield [*smaller[:i], (first, *block), *smaller[i + 1:]]


def random_tree(layers: int, tasks: int, rng: random.Random) -> list[list[int]]:
    """A branch config (``config[l][t]``: the copy task ``t`` runs at layer ``l``) drawn top-down: a group of tasks
    stays together from where it starts up to a split layer drawn uniformly from there to the end (the end: it
    never splits), then splits into a partition drawn uniformly from those of two or more parts, each part drawn
    the same way from the split layer on. Every tree, fully shared and fully task-specific included, can be drawn."""
    group_of = [[0] * tasks for _ in range(layers)]
    labels = iter(range(1, 2 * tasks))

    def grow(group: tuple[int, ...], start: int, label: int) -> None:
        split = rng.randint(start, layers) if len(group) > 1 else layers
        for layer in range(start, split):
            for t in group:
                group_of[layer][t] = label
        if split < layers:
            for part in rng.choice([p for p in partitions(group) if len(p) > 1]):
                grow(part, split, next(labels))

    grow(tuple(range(tasks)), 0, 0)
    # the copy a task runs at a layer: its group's rank there (tasks in one group share it, different groups differ)
    config = [[sorted(set(row)).index(g) for g in row] for row in group_of]
    return canonical(config)


@dataclass
class BranchCostTable(CostEstimate):
    """Cost table of a branched encoder: ``fixed`` is the shared stem, ``layers[l]`` the price of one copy of
    layer ``l``; decisions are ``<layer>.<task>`` with copy indices ``"0"`` .. ``"T-1"`` as options."""

    unit: str
    fixed: float
    layers: Tensor  # [L]
    layer_names: list[str]
    tasks: list[str]

    def _probs(self, mix: Mapping[str, Tensor]) -> Tensor:
        return torch.stack([torch.stack([mix[decision(layer, t)] for t in self.tasks])
                            for layer in self.layer_names])

    def expected(self, mix: Mapping[str, Tensor]) -> Tensor:
        """Exact expected cost when each decision's option is drawn from its mix (probabilities)."""
        probs = self._probs(mix)
        return self.fixed + (expected_groups(probs) * self.layers.to(probs)).sum()

    def of_choices(self, choices: Mapping[str, str]) -> float:
        groups = groups_of(config_of(choices, self.layer_names, self.tasks), len(self.tasks))
        return self.fixed + sum(float(c) * len(g) for c, g in zip(self.layers, groups))

    def bounds(self) -> tuple[float, float]:
        """Fully shared and fully task-specific."""
        total = float(self.layers.sum())
        return self.fixed + total, self.fixed + len(self.tasks) * total
