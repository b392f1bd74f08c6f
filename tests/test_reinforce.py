"""REINFORCE with importance sampling (FBNetV5): unbiased per-task estimates from one proposal sample,
convergence on a toy reward, and a search from a spec."""
from __future__ import annotations

import itertools

import pytest
import torch

from nascore.strategies.reinforce import Policies, policy_loss
from nascore.supernet import Decision

DECISIONS = [Decision("a", ("x", "y", "z")), Decision("b", ("keep", "skip"))]


def toy_policies() -> Policies:
    policies = Policies(["seg", "det"], DECISIONS)
    with torch.no_grad():  # two different, non-uniform policies
        policies.theta["seg"]["a"].copy_(torch.tensor([1.0, -0.5, 0.2]))
        policies.theta["seg"]["b"].copy_(torch.tensor([0.3, -0.3]))
        policies.theta["det"]["a"].copy_(torch.tensor([-1.0, 0.7, 0.0]))
        policies.theta["det"]["b"].copy_(torch.tensor([-0.8, 0.4]))
    return policies


def loss_of(task: str, arch: dict[str, int]) -> float:
    """A task's loss on each of the 6 archs; the best arch differs per task: seg (y, skip), det (z, keep)."""
    table = {"seg": [[2.0, 1.2], [1.5, 0.3], [3.0, 2.0]], "det": [[2.0, 3.0], [1.5, 2.5], [0.1, 1.0]]}
    return table[task][arch["a"]][arch["b"]]


def all_archs():
    return [{"a": i, "b": j} for i, j in itertools.product(range(3), range(2))]


def test_importance_makes_one_proposal_sample_unbiased_for_every_task():
    policies = toy_policies()
    # analytic: E_{a ~ p_t}[loss_t(a)] and its gradient in theta_t
    expected, grads = {}, {}
    for t in policies.tasks:
        value = sum(torch.exp(policies.log_prob(t, a)) * loss_of(t, a) for a in all_archs())
        grads[t] = torch.autograd.grad(value, list(policies.theta[t].values()))
        expected[t] = value.item()
    # Monte Carlo: archs from the proposal q only, scaled by their importance p_t(a) / q(a)
    generator = torch.Generator().manual_seed(0)
    n = 20000
    est = {t: 0.0 for t in policies.tasks}
    grad_est = {t: [torch.zeros(3), torch.zeros(2)] for t in policies.tasks}
    for _ in range(n):
        arch = policies.sample(generator)
        w = policies.importance(arch)
        for t in policies.tasks:
            est[t] += w[t] * loss_of(t, arch) / n
            g = torch.autograd.grad(policies.log_prob(t, arch), list(policies.theta[t].values()))
            for acc, gi in zip(grad_est[t], g):
                acc += w[t] * loss_of(t, arch) * gi / n
    for t in policies.tasks:
        assert est[t] == pytest.approx(expected[t], rel=0.03)
        for mc, exact in zip(grad_est[t], grads[t]):
            torch.testing.assert_close(mc, exact, atol=0.06, rtol=0.1)


def test_proposal_is_the_mixture_of_the_policies():
    policies = toy_policies()
    for arch in all_archs():
        p = {t: torch.exp(policies.log_prob(t, arch)).item() for t in policies.tasks}
        q = sum(p.values()) / 2
        w = policies.importance(arch)
        assert w["seg"] == pytest.approx(p["seg"] / q) and w["det"] == pytest.approx(p["det"] / q)
    assert sum(policies.importance({"a": 0, "b": 0}).values()) == pytest.approx(2.0)  # sums to T


def test_policies_converge_each_to_its_tasks_best_arch():
    policies = Policies(["seg", "det"], DECISIONS)
    opt = torch.optim.Adam(policies.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(1)
    baselines = {t: None for t in policies.tasks}
    for _ in range(600):
        arch = policies.sample(generator)
        importance = policies.importance(arch)
        advantages = {}
        for t in policies.tasks:
            reward = -loss_of(t, arch)
            advantages[t] = 0.0 if baselines[t] is None else reward - baselines[t]
            baselines[t] = reward if baselines[t] is None else 0.9 * baselines[t] + 0.1 * reward
        opt.zero_grad()
        policy_loss(policies, arch, advantages, importance, entropy=0.0).backward()
        opt.step()
    assert policies.argmax("seg") == {"a": "y", "b": "skip"}
    assert policies.argmax("det") == {"a": "z", "b": "keep"}


def test_entropy_term_keeps_policies_spread():
    policies = toy_policies()
    before = policies.entropy("seg").item()
    opt = torch.optim.SGD(policies.parameters(), lr=0.5)
    for _ in range(50):
        opt.zero_grad()
        policy_loss(policies, {"a": 0, "b": 0}, {"seg": 0.0, "det": 0.0}, {"seg": 1.0, "det": 1.0},
                    entropy=1.0).backward()
        opt.step()
    assert policies.entropy("seg").item() > before
    assert policies.entropy("seg").item() == pytest.approx(torch.log(torch.tensor(3.0 * 2.0)).item(), rel=0.01)


@pytest.mark.slow
def test_reinforce_searches_from_a_spec_and_writes_one_arch_per_task(tmp_path):
    from nascore.arch import Arch
    from tiny import FLOPS, REINFORCE, search

    search(tmp_path, [{"name": "classification"}], dict(REINFORCE, epochs=3, max_steps=3), cost=FLOPS,
           pareto={"samples": 2, "bn_batches": 1})
    arch = Arch.load(tmp_path / "run" / "arch_classification.json")
    assert arch.task == "classification" and set(arch.choices.values()) <= {"keep", "skip"}
    rows = [line for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert '"entropy/classification"' in rows[-1] and '"derived_cost/classification"' in rows[-1]
