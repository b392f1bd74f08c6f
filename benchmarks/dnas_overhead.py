"""Framework overhead of nascore's search steps on the FBNet supernet, against plain PyTorch.

Four training steps, timed in one process with interleaved blocks (A B B A A B ...) so that drift on a
busy machine hits both sides of a ratio alike:

  (a) nascore DNAS step: a Gumbel-softmax mix of every decision from theta, ``Supernet.set_mix``,
      forward through ``build_network``'s network, the task's cross-entropy, ``CostTable.expected``
      (priced once with ``FlopsCost``), FBNet's ``Multiplicative`` objective, backward, Adam on theta and
      SGD on the weights (what ``DNAS._arch_pass`` does, plus the weight step, in one forward/backward);
  (b) the same step written as a minimal plain-PyTorch mixed-op supernet: the same blocks
      (``make_block`` over ``layer_plan``), each layer ``sum(w_i * op_i(x))`` taking its mix as an
      argument, the same head, the cost as ``sum(w_i * c_i)`` over plain tensors, the same loss and
      optimisers; weights copied from (a) and the losses checked equal before timing;
  (c) a sampled single-path step through nascore: ``Supernet.set_choices`` (a one-hot mix without
      grad), forward, cross-entropy, backward, SGD step (the REINFORCE / evaluation path);
  (d) a standalone training step of that child: ``space.build(arch)`` + the same head, weights copied
      from the supernet's chosen blocks, losses checked equal before timing.

Targets: a/b <= 1.05 and c/d <= 1.2 (ratios of medians). Run from the repository root:

    python benchmarks/dnas_overhead.py            # width 0.25, input 32, batch 64, 2 threads
    python benchmarks/dnas_overhead.py --profile  # also print where the time of each step goes

Smoke run (tests/test_benchmarks.py; tiny sizes, numbers meaningless):

    python benchmarks/dnas_overhead.py --batch 2 --head-channels 32 --threads 1 --repeats 2 --warmup 1 \
        --block-seconds 0.01
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import timeit

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nascore.arch import Arch
from nascore.costs.flops import FlopsCost
from nascore.dataset import DataInfo
from nascore.features import ClassifierHead
from nascore.loops import check_finite
from nascore.objective import Multiplicative
from nascore.spaces.fbnet import FBNetSpace, layer_plan
from nascore.spaces.fbnet_blocks import conv_bn, make_block
from nascore.strategies.dnas import DNAS
from nascore.task import build_network
from nascore.tasks.classification import Classification

NUM_CLASSES = 10
TAU = DNAS.Config().temperature.initial  # the first epoch's temperature
TARGETS = {"a/b": 1.05, "c/d": 1.2}


# -- (b): a minimal plain-PyTorch mixed-op supernet with the same blocks --------------------------
class MixedOp(nn.Module):
    def __init__(self, ops: list[nn.Module]):
        super().__init__()
        self.ops = nn.ModuleList(ops)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        out = w[0] * self.ops[0](x)  # sum(w_i * op_i(x)) without Python sum's extra ``0 +`` kernel
        for i in range(1, len(self.ops)):
            out = out + w[i] * self.ops[i](x)
        return out


class PlainSupernet(nn.Module):
    def __init__(self, plan, labels, divisor, head: nn.Module):
        super().__init__()
        self.stem = conv_bn(3, plan[0][0], 3, 2)
        self.layers = nn.ModuleList(MixedOp([make_block(lb, cin, cout, s, divisor) for lb in labels])
                                    for cin, cout, s in plan)
        self.head = head

    def forward(self, x: Tensor, mix: list[Tensor]) -> Tensor:
        x = self.stem(x)
        for layer, w in zip(self.layers, mix):
            x = layer(x, w)
        return self.head([x])


# -- building the four setups -------------------------------------------------------------------
def build(args):
    torch.manual_seed(0)
    space = FBNetSpace({"width": args.width, "input_size": args.input_size, "head_channels": args.head_channels})
    cfg, decisions = space.config, space.decisions()
    task = Classification({"num_classes": NUM_CLASSES})
    data = DataInfo(in_channels=3, image_size=args.input_size, num_classes={"label": NUM_CLASSES})
    dnas = DNAS.Config()
    objective = Multiplicative()

    def sgd(params):
        return torch.optim.SGD(params, lr=dnas.weights.lr, momentum=dnas.weights.momentum,
                               weight_decay=dnas.weights.weight_decay)

    def adam(params):
        return torch.optim.Adam(params, lr=dnas.arch.lr, weight_decay=dnas.arch.weight_decay)

    # (a) nascore
    supernet = space.supernet()
    net_a = build_network(supernet, [task], data).train()
    table = supernet.price(FlopsCost(), args.input_size)
    theta_a = {d.name: torch.zeros(len(d.options), requires_grad=True) for d in decisions}
    a = dict(net=net_a, supernet=supernet, theta=theta_a, table=table, w_opt=sgd(net_a.parameters()),
             a_opt=adam(theta_a.values()))

    # (b) plain PyTorch, weights copied from (a)
    labels = list(decisions[0].options)
    assert all(d.options == decisions[0].options for d in decisions)
    head_b = ClassifierHead(supernet.feature_info[-1]["num_chs"], NUM_CLASSES, supernet.pre_logits)
    net_b = PlainSupernet(layer_plan(cfg), labels, cfg.divisor, head_b).train()
    src = {"stem": supernet.stem, "head": net_a.heads[task.name]}
    dst = {"stem": net_b.stem, "head": net_b.head}
    for i, mixed in enumerate(supernet.layers):
        for j, label in enumerate(labels):
            src[f"{i}.{j}"], dst[f"{i}.{j}"] = mixed.candidates[label], net_b.layers[i].ops[j]
    for k in src:
        dst[k].load_state_dict(src[k].state_dict())
    theta_b = [torch.zeros(len(labels), requires_grad=True) for _ in decisions]
    costs_b = [table.options[d.name].clone() for d in decisions]
    b = dict(net=net_b, theta=theta_b, fixed=torch.tensor(table.fixed), costs=costs_b,
             w_opt=sgd(net_b.parameters()), a_opt=adam(theta_b))

    # (c) a sampled single path through the supernet (its own copy, so (a)'s optimiser state is untouched)
    rng = random.Random(0)
    arch = Arch(space=space.name, config=cfg.model_dump(), name="sampled",
                choices={d.name: rng.choice(d.options) for d in decisions})
    net_c = build_network(space.supernet(), [task], data).train()
    net_c.load_state_dict(net_a.state_dict())
    c = dict(net=net_c, supernet=net_c.backbone, choices=arch.choices, opt=sgd(net_c.parameters()))

    # (d) the standalone child of that arch, weights copied from the supernet's chosen blocks
    child = space.build(arch)
    net_d = build_network(child, [task], data).train()
    net_d.backbone.stem.load_state_dict(net_c.backbone.stem.state_dict())
    for i, d in enumerate(decisions):
        net_d.backbone.layers[i].load_state_dict(net_c.backbone.layers[i].candidates[arch.choices[d.name]].state_dict())
    net_d.heads.load_state_dict(net_c.heads.state_dict())
    d_ = dict(net=net_d, opt=sgd(net_d.parameters()))

    x = torch.randn(args.batch, 3, args.input_size, args.input_size)
    targets = {"label": torch.randint(0, NUM_CLASSES, (args.batch,))}
    return dict(a=a, b=b, c=c, d=d_, task=task, objective=objective, x=x, targets=targets, arch=arch)


def make_steps(s):
    a, b, c, d, task, objective, x, targets = (s[k] for k in ("a", "b", "c", "d", "task", "objective", "x",
                                                              "targets"))
    y = targets["label"]
    alpha, beta = objective.alpha, objective.beta

    def step_a() -> Tensor:
        mix = {n: F.gumbel_softmax(t, tau=TAU, hard=False) for n, t in a["theta"].items()}
        a["supernet"].set_mix(mix)
        task_loss = task.loss(a["net"](x)[task.name], targets)
        loss = objective(task_loss, a["table"].expected(mix))
        check_finite(loss, 0, 0)
        a["a_opt"].zero_grad(set_to_none=True)
        a["w_opt"].zero_grad(set_to_none=True)
        loss.backward()
        a["a_opt"].step()
        a["w_opt"].step()
        return loss

    def step_b() -> Tensor:
        mix = [F.gumbel_softmax(t, tau=TAU, hard=False) for t in b["theta"]]
        task_loss = F.cross_entropy(b["net"](x, mix), y)
        cost = b["fixed"]
        for w, c_ in zip(mix, b["costs"]):
            cost = cost + (w * c_).sum()
        loss = task_loss * alpha * torch.log(cost.clamp_min(1.0 + 1e-6)) ** beta
        b["a_opt"].zero_grad(set_to_none=True)
        b["w_opt"].zero_grad(set_to_none=True)
        loss.backward()
        b["a_opt"].step()
        b["w_opt"].step()
        return loss

    def step_c() -> Tensor:
        c["supernet"].set_choices(c["choices"])
        loss = task.loss(c["net"](x)[task.name], targets)
        check_finite(loss, 0, 0)
        c["opt"].zero_grad(set_to_none=True)
        loss.backward()
        c["opt"].step()
        return loss

    def step_d() -> Tensor:
        loss = F.cross_entropy(d["net"](x)[task.name], y)
        d["opt"].zero_grad(set_to_none=True)
        loss.backward()
        d["opt"].step()
        return loss

    return dict(a=step_a, b=step_b, c=step_c, d=step_d)


def check_equal(steps, first: str, second: str, n: int = 2) -> float:
    """Run ``n`` steps of both on the same seeds; the losses must agree (same weights, same noise)."""
    worst = 0.0
    for i in range(n):
        torch.manual_seed(100 + i)
        l1 = float(steps[first]().detach())
        torch.manual_seed(100 + i)
        l2 = float(steps[second]().detach())
        diff = abs(l1 - l2) / max(abs(l2), 1e-12)
        print(f"  check step {i}: loss ({first}) {l1:.6f}  ({second}) {l2:.6f}  rel diff {diff:.1e}")
        if not diff <= 1e-4:
            raise SystemExit(f"losses of ({first}) and ({second}) differ: {l1} vs {l2}")
        worst = max(worst, diff)
    return worst


def interleaved(steps, first: str, second: str, args) -> dict[str, list[float]]:
    """Seconds per step of each timed block, blocks alternating between ``first`` and ``second``.

    Plain ``timeit`` blocks (what ``torch.utils.benchmark.Timer`` wraps) with the thread count fixed by
    ``torch.set_num_threads``: ``Timer.timeit`` runs two untimed warm-up calls before every block,
    which would triple the cost of the supernet blocks (one step of a few seconds each).
    """
    timers = {k: timeit.Timer(steps[k]) for k in (first, second)}
    for k in (first, second):  # warm-up (allocator, autograd caches, optimiser state)
        for _ in range(args.warmup):
            steps[k]()
    t0 = time.perf_counter()
    steps[first]()
    number = max(1, round(args.block_seconds / (time.perf_counter() - t0)))
    out: dict[str, list[float]] = {first: [], second: []}
    for r in range(args.repeats):
        order = (first, second) if r % 2 == 0 else (second, first)  # A B B A A B ...: no side always first
        for k in order:
            out[k].append(timers[k].timeit(number) / number)
        print(f"  block {r + 1}/{args.repeats}: ({first}) {out[first][-1] * 1e3:.1f} ms, "
              f"({second}) {out[second][-1] * 1e3:.1f} ms per step ({number} steps per block)", file=sys.stderr)
    return out


def profile(steps, keys, args, rows: int = 18) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for k in keys:
        for _ in range(2):
            steps[k]()
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.profile_steps):
                steps[k]()
        print(f"\n-- profile of step ({k}), {args.profile_steps} steps, by self CPU time --")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--head-channels", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10, help="timed blocks per setup (median over them)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per setup before timing")
    p.add_argument("--block-seconds", type=float, default=0.4, help="approximate length of one timed block")
    p.add_argument("--profile", action="store_true", help="also profile each step with torch.profiler")
    p.add_argument("--profile-steps", type=int, default=5)
    args = p.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # progress shows when piped to a file
    torch.set_num_threads(args.threads)

    t_start = time.perf_counter()
    setup = build(args)
    steps = make_steps(setup)
    n_skip = sum(v == "skip" for v in setup["arch"].choices.values())
    print(f"FBNet supernet: width {args.width}, input {args.input_size}, batch {args.batch}, head "
          f"{args.head_channels}, {args.threads} threads, torch {torch.__version__}; "
          f"params supernet {sum(p.numel() for p in setup['a']['net'].parameters()):,}, "
          f"child {sum(p.numel() for p in setup['d']['net'].parameters()):,} ({n_skip} skip layers)")
    print("correctness: nascore DNAS step (a) vs plain mixed-op supernet (b)")
    check_equal(steps, "a", "b")
    print("correctness: nascore sampled path (c) vs standalone child (d)")
    check_equal(steps, "c", "d")

    results = {}
    results.update(interleaved(steps, "a", "b", args))
    results.update(interleaved(steps, "c", "d", args))
    med = {k: statistics.median(v) * 1e3 for k, v in results.items()}

    config = f"w{args.width:g} in{args.input_size} b{args.batch} t{args.threads}"
    rows = [("a/b", "DNAS step: nascore / plain mixed-op", "a", "b"),
            ("c/d", "single path: nascore / standalone child", "c", "d")]
    print(f"\n{'config':<20} {'comparison':<42} {'nascore ms':>11} {'plain ms':>9} {'ratio':>6} "
          f"{'pair ratio p25-p75':>19} {'target':>7}  result")
    for name, label, k1, k2 in rows:
        ratio = med[k1] / med[k2]
        pairs = sorted(x / y for x, y in zip(results[k1], results[k2]))
        q = statistics.quantiles(pairs, n=4) if len(pairs) > 1 else [pairs[0]] * 3
        verdict = "PASS" if ratio <= TARGETS[name] else "MISS"
        print(f"{config:<20} {label:<42} {med[k1]:>11.2f} {med[k2]:>9.2f} {ratio:>6.3f} "
              f"{q[0]:>9.3f}-{q[2]:<9.3f} {'<= ' + format(TARGETS[name], 'g'):>7}  {verdict}")
    print(f"(median over {args.repeats} interleaved blocks per setup; pair ratio = per-block ratio spread; "
          f"total {time.perf_counter() - t_start:.0f} s)")

    if args.profile:
        profile(steps, ("a", "b", "c", "d"), args)


if __name__ == "__main__":
    main()
