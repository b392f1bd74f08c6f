"""FBNetV5's search step against the number of tasks: one importance-sampled pass vs one pass per task.

(a) one pass: ``Reinforce.step`` — one arch drawn from the mixture of the task policies, one forward through
    the supernet and every task's head, one backward of ``sum_t w_t * loss_t`` (``w_t``: the arch's importance
    for task t), one weight step, the policy step of every task (what ``nascore run`` does per batch);
(b) one pass per task: for each task t, an arch drawn from ``p_t``, a forward through the supernet and task
    t's head only, a backward, a weight step and task t's policy step (the estimator FBNetV5 replaces).

Both run on the space and tasks of ``examples/fbnetv5.yaml`` (digit-scenes 32x32 since 2026-12-06, 64x64
before; batch 32, fbnetv5 width 0.5, blocks [1, 2, 2, 1], FLOPs in the reward) with
``torch.set_num_threads(--threads)``. Each timed block is ``--steps`` steps from the same policies and generator
state; the configurations alternate block by block (round robin) so that drift on a busy machine hits them alike;
a time is the median over ``--rounds`` blocks of the mean step time. Target: 3 tasks in one pass at most 1.3x the
1-task step, heads included.

    python benchmarks/fbnetv5_step.py [--threads 2] [--rounds 7] [--steps 6]

Smoke run (tests/test_benchmarks.py; tiny sizes, numbers meaningless):

    python benchmarks/fbnetv5_step.py --threads 1 --rounds 1 --steps 1 --warmup 0 --set dataset.image_size=32 \
        --set space.input_size=32 --set dataset.num_train=10 --set dataset.num_val=4 --set strategy.batch_size=2
"""
from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time
from pathlib import Path

import torch

from nascore.data import loader
from nascore.parts import Parts
from nascore.spec import load_spec
from nascore.strategies.reinforce import policy_loss
from nascore.strategy import SearchContext
from nascore.task import build_network

SPEC = Path(__file__).resolve().parents[1] / "examples" / "fbnetv5.yaml"
TASK_SETS = (("classification",), ("segmentation",), ("detection",), ("classification", "segmentation"),
             ("classification", "segmentation", "detection"))
TARGET = 1.3


class Setup:
    """A search context over a subset of the spec's tasks, with a ``Reinforce`` strategy set up on it."""

    def __init__(self, spec, task_names: tuple[str, ...], batch: tuple, seed: int):
        dataset = spec.dataset.create()
        info = dataset.info()
        self.tasks = [t.create() for t in spec.tasks if t.name in task_names]
        space = spec.space.create()
        torch.manual_seed(seed)
        self.supernet = space.supernet()
        cost = spec.cost.create()
        table = self.supernet.price(cost, space.input_size, info.in_channels)
        self.network = build_network(self.supernet, self.tasks, info)
        self.strategy = spec.strategy.create()
        parts = Parts(torch.device("cpu"), dataset, info, dataset.split("train"), dataset.split("val"), self.tasks,
                      space, seed)
        self.strategy.setup(SearchContext(parts, self.network, self.supernet, cost, table, spec.objective))
        self.images, self.targets = batch
        self.start = self._state()

    def _state(self) -> dict:
        s = self.strategy
        return copy.deepcopy({"net": self.network.state_dict(), "theta": s.policies.theta,
                              "gen": s.generator.get_state(), "base": dict(s.baselines)})

    def reset(self) -> None:
        """The same weights, policies and generator at the start of every block."""
        s = self.strategy
        self.network.load_state_dict(self.start["net"])
        with torch.no_grad():
            for t, per in self.start["theta"].items():
                for k, v in per.items():
                    s.policies.theta[t][k].copy_(v)
        s.generator.set_state(self.start["gen"])
        s.baselines = dict(self.start["base"])

    def one_pass(self) -> None:
        self.strategy.step(self.images, self.targets, learn=True)

    def per_task(self) -> None:
        """One forward/backward per task, each on an arch from that task's own policy."""
        s, net = self.strategy, self.network
        for task in self.tasks:
            arch = s.policies.sample_from(task.name, s.generator)
            choices = s.policies.labels(arch)
            self.supernet.set_choices(choices)
            loss = task.loss(net.heads[task.name](net.backbone(self.images)), self.targets)
            s.w_opt.zero_grad(set_to_none=True)
            loss.backward()
            s.w_opt.step()
            cost = s.ctx.cost_table.of_choices(choices)
            reward = -float(s.ctx.objective(loss.detach(), torch.tensor(cost)))
            base = s.baselines[task.name]
            s.baselines[task.name] = reward if base is None else 0.9 * base + 0.1 * reward
            advantages = {t.name: 0.0 for t in self.tasks} | {task.name: 0.0 if base is None else reward - base}
            # task t's own draw: importance 1 for it, the other tasks learn nothing
            importance = {t.name: float(t is task) for t in self.tasks}
            s.p_opt.zero_grad(set_to_none=True)
            policy_loss(s.policies, arch, advantages, importance, s.config.policy.entropy).backward()
            s.p_opt.step()


def block_time(setup: Setup, method: str, steps: int) -> float:
    setup.reset()
    fn = getattr(setup, method)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per configuration before timing")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override of examples/fbnetv5.yaml (as nascore's --set)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = load_spec(SPEC, args.overrides)
    dataset = spec.dataset.create()
    batch_size = spec.strategy.create().config.batch_size
    batch = next(iter(loader(dataset.split("train"), batch_size, dataset.collate, shuffle=True, seed=0)))
    setups = {names: Setup(spec, names, batch, spec.seed) for names in TASK_SETS}
    runs = [(names, m) for names in TASK_SETS for m in (("one_pass",) if len(names) == 1 else ("one_pass", "per_task"))]
    for names, method in runs if args.warmup else ():  # warm-up: allocator, one-time kernels
        block_time(setups[names], method, args.warmup)
    times: dict[tuple, list[float]] = {r: [] for r in runs}
    for _ in range(args.rounds):
        for r in runs:
            times[r].append(block_time(setups[r[0]], r[1], args.steps))
    med = {r: statistics.median(v) for r, v in times.items()}
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} threads, "
          f"batch {batch_size}, input {spec.dataset.config.image_size}; median of {args.rounds} blocks of "
          f"{args.steps} steps")
    one = {n[0]: med[(n, "one_pass")] for n in TASK_SETS if len(n) == 1}
    print("| tasks | one pass (ms) | one pass per task (ms) | one pass / cls-only | per task / cls-only |")
    print("|---|---|---|---|---|")
    base = one["classification"]
    for names in TASK_SETS:
        a = med[(names, "one_pass")]
        b = med.get((names, "per_task"), a)
        print(f"| {' + '.join(names)} | {a * 1e3:.0f} | {b * 1e3:.0f} | {a / base:.2f}x | {b / base:.2f}x |")
    three = med[(TASK_SETS[-1], "one_pass")]
    worst = max(one, key=one.get)
    print(f"3 tasks one pass / slowest 1-task step ({worst}): {three / one[worst]:.2f}x; "
          f"/ mean 1-task step: {three / statistics.mean(one.values()):.2f}x (target <= {TARGET}x); "
          f"naive 3 tasks / one pass: {med[(TASK_SETS[-1], 'per_task')] / three:.2f}x")


if __name__ == "__main__":
    main()
