"""Why single-path training of FBNet's supernet stays at chance (BENCHMARKS.md, "Supernets that rank"): the same
supernet, data and optimiser (benchmarks/perfdata/fbnet_12ep.yaml's: SGD lr 0.2, Nesterov momentum 0.9, batch 64,
cosine over the epochs), changing one thing at a time, each over several seeds.

Experiments (``--only`` picks some):

- ``fixed``: one path, k3_e3 in every layer, every step (the reference: a plain network);
- ``uniform``: each layer draws k3_e1 or k3_e3 per step (separate weights: FBNet's supernet);
- ``twins``: each layer holds two copies of k3_e3 with the same initial weights and draws one per step: the paths
  compute the same function at the start, differing only by which steps updated each copy;
- ``twins-epoch``: the same, a copy drawn per layer once per epoch;
- ``twins-fair``: the same, both copies trained at every step (their gradients summed: FairNAS' rule);
- ``fair``: k3_e1 and k3_e3 both trained at every step;
- ``shared``: the nine options drawn per step, with ``shared_weights: true`` (the candidates are views of one set of
  weights);
- ``shared-kernel``: k3_e6 or k5_e6 per step with shared weights (the 3x3 kernel is the centre of the 5x5);
- ``shared-fair``: shared weights, k3/k5 x e3/e6 (the kernel and the hidden width vary), all four trained at every step;
- ``shared-fair-e1``: the same with k3_e1, k3_e3, k3_e6 (e1: a hidden width equal to the input's);
- ``shared-fair-skip``: the same with k3_e3, k3_e6, skip;
- ``shared-sandwich``: shared weights, the nine options, BigNAS' sandwich rule (the largest path k5_e6 on the labels,
  the smallest (``oneshot.extremes``: the cheapest option of each layer) and two uniform paths learning from the
  largest's output, gradients summed);
- ``shared-sandwich-noskip``: the same without skip (the random paths draw from the other eight, the smallest is
  k3_e1 everywhere);
- ``shared-sandwich-unit-scale``: ``shared-sandwich`` with the residual layers' last BatchNorm scale set to 1 at the
  start instead of 0;
- ``shared-uniform``: shared weights, k3/k5 x e3/e6 drawn uniformly per layer and step (SPOS' rule);
- ``shared-skip-residual``: the same, skip also drawn in the layers where it is an identity (stride 1, as many
  channels out as in: ProxylessNAS' "zero" op);
- ``shared-skip-reshape``: the same, skip also drawn in the layers that change the shape (where it is a strided 1x1
  conv of its own);
- ``shared-e1``: ``shared-uniform`` with k3_e1 and k5_e1 as well (no expansion conv: the depth-wise conv reads the
  input);
- ``shared-pure-e1``: shared weights, two paths every step: k3_e1 in every layer and k3_e3 in every layer;
- ``shared-fair-e1-e3``: k3_e1 and k3_e3 both trained every step (fair): two paths that mix them from layer to layer;
- ``shared-fair-e1-e3-untied``: the same with the expansion's first ``cin`` output channels trained like the others
  (the supernet before it made them the identity where e1 is a candidate);
- ``shared-fair-g2-e3``: k3_e1_g2 and k3_e3 both trained every step, mixed from layer to layer;
- ``shared-fair-e1-e6``, ``shared-fair-e3-e6``: two options both trained every step, mixed from layer to layer
  (the narrow option a sixth, or half, of the wide one's hidden width);
- ``shared-fair-nine``: the nine options, all trained every step (nine paths, their gradients summed: at the
  spec's lr 0.2 each step moves the shared weights about nine single-path steps' worth; ``--set train.lr=0.02``);
- ``shared-progressive``: once-for-all's progressive shrinking, one uniform path per step from the options of the
  current phase, the steps cut into four phases: k5_e6 only (the largest path), then k3/k5 x e6, then k3/k5 x
  e3/e6, then all nine (the loss of an epoch is its paths' loss, whatever phase).

Shared-weight supernets start their residual layers at zero scale (``spaces/fbnet_shared.py``); runs of the
``shared`` experiments before that (BENCHMARKS.md says which) had unit scale.

Printed per experiment and seed: the training loss of each epoch (the labels' cross-entropy of the path trained, of
the two uniform paths under the sandwich rule; ln 10 = 2.303 is chance on these 10 classes), and at the end the standard deviation of the logits over a batch of 256
training images (how much the prediction depends on the image: a head that ignores its features predicts the prior,
whatever the image) and, for twins, how far the copies moved apart (``|A - B| / |A|`` of each layer's weights, the
first, the middle and the last layer).

    python benchmarks/supernet_training.py --epochs 3 --seeds 0 1 2 --json supernet_training.json
"""
from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from nascore.data import loader
from nascore.loops import cosine_lr, set_lr, task_losses, weight_optimizer
from nascore.parts import Parts
from nascore.performance.oneshot import distillation, extremes
from nascore.spaces.fbnet_shared import SharedLayer
from nascore.spec import load_spec
from nascore.task import build_network

SPEC = Path(__file__).parent / "perfdata" / "fbnet_12ep.yaml"
EXPERIMENTS = ("fixed", "uniform", "twins", "twins-epoch", "twins-fair", "fair", "shared", "shared-kernel", "shared-fair",
               "shared-fair-e1", "shared-fair-skip", "shared-sandwich", "shared-sandwich-noskip",
               "shared-sandwich-unit-scale", "shared-uniform", "shared-skip-residual", "shared-skip-reshape",
               "shared-e1", "shared-pure-e1", "shared-fair-e1-e3", "shared-fair-e1-e3-untied",
               "shared-fair-g2-e3", "shared-fair-e1-e6", "shared-fair-e3-e6", "shared-fair-nine", "shared-progressive")
NINE_BUT_SKIP = ["k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6"]
KERNEL_EXPANSION = ["k3_e3", "k3_e6", "k5_e3", "k5_e6"]
#: shared-progressive's phases: the options each draws from (None: all nine)
PHASES = (["k5_e6"], ["k3_e6", "k5_e6"], KERNEL_EXPANSION, None)
TWIN = "k3_e1"  # the label whose candidate becomes the second copy of k3_e3 in the twins experiments


def build(experiment: str, seed: int, overrides: list[str]):
    shared = experiment.startswith("shared")
    spec = load_spec(SPEC, [*overrides, f"space.shared_weights={'true' if shared else 'false'}", f"seed={seed}"])
    parts = Parts.build(spec, torch.device("cpu"))
    torch.manual_seed(seed)
    supernet = parts.space.supernet()
    if experiment.startswith("twins"):
        for op in supernet.mixed_ops():
            op.candidates[TWIN] = copy.deepcopy(op.candidates["k3_e3"])
            op._ops = list(op.candidates.values())
    if experiment.endswith("-untied"):
        untie(supernet)
    network = build_network(supernet, parts.tasks, parts.info)
    return spec, parts, supernet, network


def options(experiment: str) -> list[str] | None:
    """The options each layer draws from (None: all nine)."""
    return {"fixed": ["k3_e3"], "shared": None, "shared-kernel": ["k3_e6", "k5_e6"],
            "shared-fair": KERNEL_EXPANSION, "shared-fair-e1": ["k3_e1", "k3_e3", "k3_e6"],
            "shared-fair-skip": ["k3_e3", "k3_e6", "skip"], "shared-sandwich": None,
            "shared-sandwich-unit-scale": None, "shared-sandwich-noskip": NINE_BUT_SKIP,
            "shared-uniform": KERNEL_EXPANSION, "shared-skip-residual": KERNEL_EXPANSION,
            "shared-skip-reshape": KERNEL_EXPANSION, "shared-e1": [*KERNEL_EXPANSION, "k3_e1", "k5_e1"],
            "shared-pure-e1": ["k3_e1", "k3_e3"], "shared-fair-e1-e3": ["k3_e1", "k3_e3"],
            "shared-fair-e1-e3-untied": ["k3_e1", "k3_e3"], "shared-fair-g2-e3": ["k3_e1_g2", "k3_e3"],
            "shared-fair-e1-e6": ["k3_e1", "k3_e6"], "shared-fair-e3-e6": ["k3_e3", "k3_e6"],
            "shared-fair-nine": [*NINE_BUT_SKIP, "skip"], "shared-progressive": None,
            }.get(experiment, [TWIN, "k3_e3"])


def untie(supernet: nn.Module) -> None:
    """The expansion's first ``cin`` output channels trained like the others (a fresh conv of every channel)."""
    for m in supernet.modules():
        if isinstance(m, SharedLayer) and m.pw_identity is not None:
            m.pw = nn.Conv2d(m.cin, m.pw_bn.num_features, 1, bias=False)
            m.pw_identity = None


def layer_options(experiment: str, supernet, labels: list[str] | None) -> dict[str, list[str]]:
    """Each decision's options to draw from: ``labels`` (all of a layer's options when None), with skip added in the
    identity layers or in the shape-changing ones for the ``shared-skip-*`` experiments."""
    drawn = {}
    for decision, op in zip(supernet.decisions(), supernet.mixed_ops(), strict=True):
        layer = op.candidates["skip"].layer if experiment.startswith("shared-") else None
        identity = layer is not None and layer.skip is None
        extra = (experiment == "shared-skip-residual" and identity) or (experiment == "shared-skip-reshape"
                                                                         and layer is not None and not identity)
        drawn[decision.name] = [*(labels or decision.options), *(["skip"] if extra else [])]
    return drawn


def sandwich(experiment: str, supernet, parts: Parts) -> tuple[dict[str, str], dict[str, str]]:
    """The largest and the smallest path of the sandwich experiments."""
    largest, smallest = extremes(supernet, parts.space.input_size, parts.info.in_channels)
    if experiment == "shared-sandwich-noskip":
        smallest = {name: "k3_e1" for name in smallest}
    if experiment == "shared-sandwich-unit-scale":
        for m in supernet.modules():
            if isinstance(m, SharedLayer):
                nn.init.ones_(m.pwl_bn.weight)
    return largest, smallest


def run(experiment: str, seed: int, epochs: int, overrides: list[str]) -> dict:
    spec, parts, supernet, network = build(experiment, seed, overrides)
    cfg, decisions = spec.train, supernet.decisions()
    labels = options(experiment)
    drawn = layer_options(experiment, supernet, labels)
    optimizer = weight_optimizer(network.parameters(), cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)
    rng = random.Random(seed)
    losses, largest, began = [], [], time.perf_counter()
    task = parts.tasks[0].name
    epoch_path, extreme = None, None
    if "sandwich" in experiment:
        extreme = sandwich(experiment, supernet, parts)
    per_epoch = len(loader(parts.train_set, cfg.batch_size, parts.collate, shuffle=True))
    for epoch in range(epochs):
        set_lr(optimizer, cosine_lr(cfg.lr, epoch, epochs))
        network.train()
        if experiment == "twins-epoch":
            epoch_path = {d.name: rng.choice(labels) for d in decisions}
        total, sampled, steps = 0.0, 0.0, 0
        for images, targets in loader(parts.train_set, cfg.batch_size, parts.collate, shuffle=True, seed=seed,
                                      epoch=epoch, stream=0):
            if experiment in ("twins-fair", "fair") or experiment.startswith("shared-fair"):
                orders = {d.name: rng.sample(labels, len(labels)) for d in decisions}
                paths = [{name: order[k] for name, order in orders.items()} for k in range(len(labels))]
            elif experiment == "shared-pure-e1":
                paths = [{d.name: label for d in decisions} for label in labels]
            elif extreme is not None:
                paths = [*extreme, *({name: rng.choice(o) for name, o in drawn.items()} for _ in range(2))]
            elif epoch_path is not None:
                paths = [epoch_path]
            elif experiment == "shared-progressive":
                phase = PHASES[min(len(PHASES) - 1, (epoch * per_epoch + steps) * len(PHASES) // (epochs * per_epoch))]
                paths = [{name: rng.choice([o for o in drawn_options if phase is None or o in phase])
                          for name, drawn_options in drawn.items()}]
            else:
                paths = [{name: rng.choice(o) for name, o in drawn.items()}]
            optimizer.zero_grad(set_to_none=True)
            teacher, random_paths = None, []
            for k, path in enumerate(paths):
                supernet.set_choices(path)
                output = network(images)
                loss = sum(task_losses(output, targets, parts.tasks).values())
                if extreme is not None and k:  # the sandwich's other paths learn from the largest path's output
                    distilled = distillation(output[task], teacher)
                    distilled.backward()
                    if k >= 2:
                        random_paths.append(loss.item())
                    continue
                loss.backward()
                if k == 0:
                    total += loss.item()
                    teacher = output[task].detach()
            if random_paths:
                sampled += sum(random_paths) / len(random_paths)
            optimizer.step()
            steps += 1
        losses.append(round((sampled if extreme is not None else total) / steps, 3))
        largest.append(round(total / steps, 3))
    extra = {"largest_path_loss": largest} if extreme is not None else {}
    return {"experiment": experiment, "seed": seed, "loss": losses, **extra,
            "seconds": round(time.perf_counter() - began, 1),
            **diagnostics(experiment, parts, supernet, network, labels, rng)}


@torch.no_grad()
def diagnostics(experiment: str, parts: Parts, supernet: nn.Module, network: nn.Module, labels, rng) -> dict:
    images, _ = next(iter(loader(parts.train_set, 256, parts.collate, shuffle=False)))
    network.train()  # batch statistics, as in training
    state = {k: v.clone() for k, v in network.state_dict().items()}
    spreads = []
    for _ in range(3):
        supernet.set_choices({d.name: rng.choice(labels or d.options) for d in supernet.decisions()})
        logits = network(images)[parts.tasks[0].name]
        spreads.append(float(logits.std(0).mean()))
    network.load_state_dict(state)
    out = {"logit_std": round(statistics.mean(spreads), 3)}
    if experiment.startswith("twins"):
        gaps = []
        for op in supernet.mixed_ops():
            a = torch.cat([p.flatten() for p in op.candidates["k3_e3"].parameters()])
            b = torch.cat([p.flatten() for p in op.candidates[TWIN].parameters()])
            gaps.append(float((a - b).norm() / a.norm()))
        out["copy_gap_first_mid_last"] = [round(gaps[0], 3), round(gaps[len(gaps) // 2], 3), round(gaps[-1], 3)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="+", choices=EXPERIMENTS, default=list(EXPERIMENTS))
    parser.add_argument("--set", action="append", default=[], help="spec overrides, e.g. train.lr=0.02")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for experiment in args.only:
        for seed in args.seeds:
            row = run(experiment, seed, args.epochs, args.set)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n| experiment | loss per epoch (mean over seeds {args.seeds}) | final loss min-max | logit std |")
    print("|---|---|---|---|")
    for experiment in args.only:
        mine = [r for r in rows if r["experiment"] == experiment]
        curve = [round(statistics.mean(r["loss"][e] for r in mine), 3) for e in range(args.epochs)]
        final = [r["loss"][-1] for r in mine]
        spread = round(statistics.mean(r["logit_std"] for r in mine), 3)
        print(f"| {experiment} | {' -> '.join(map(str, curve))} | {min(final)}-{max(final)} | {spread} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
