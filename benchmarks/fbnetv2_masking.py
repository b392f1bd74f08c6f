"""DMaskingNAS against naive DNAS: peak memory and time of a training step as channel / resolution options grow.

(a) masking: nascore's ``fbnetv2`` supernet, every option a mask over one max-width convolution (channels) or
    one shared block run on the subsampled input (resolution), a soft Gumbel-softmax mix of every decision;
(b) naive DNAS: the same configuration with one convolution block per option (FBNet-style), each candidate's
    output zero-padded to the largest width (channels) or placed back at full size (resolution) and summed
    with the same mix;
(c) recompute: (a) with ``recompute_resolutions: true`` (resolution sweeps only): every subsampled resolution
    branch keeps only the block input and is recomputed in backward.

All sides run forward + backward of ``out.square().mean()`` (the weights need gradients either way) with
``torch.set_num_threads(--threads)``. Peak memory is the most bytes of tensors alive at once during the step,
tracked per op by ``nascore.costs.memory.PeakTracker`` (parameters excluded; exact, not sampled). Times are
medians of ``torch.utils.benchmark`` blocks (wall time, or the process's CPU time with ``--cpu-time``), the sides
alternating per option count.

    python benchmarks/fbnetv2_masking.py [--scope stage|supernet|both] [--sweeps channels|resolutions|both]
        [--threads 2] [--cpu-time]
    python benchmarks/fbnetv2_masking.py --smoke   # every sweep at batch 2, input 16, 1-2 options, 1 thread: seconds
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.benchmark import Timer

from nascore.costs.memory import PeakTracker
from nascore.spaces.fbnetv2 import Block, FBNetV2Space, plan
from nascore.spaces.fbnetv2_blocks import mid_channels, out_size, place, subsample

CHANNEL_COUNTS = (1, 2, 4, 8, 16, 32)
RESOLUTION_COUNTS = (1, 2, 3, 4)


def options(largest: int, n: int, step: int = 4) -> list[int]:
    """``n`` channel options evenly spaced up to ``largest`` (multiples of ``step``)."""
    return sorted({max(step, round(largest * (i + 1) / n / step) * step) for i in range(n)})


def stage_config(n_channels: int, n_res: int, input_size: int) -> dict:
    """One searchable stage: 2 blocks of 128 channels (k3, expansion 3) after a 64-channel stem."""
    return {"input_size": input_size, "stem": 64, "head_channels": 64, "stages": [
        {"channels": options(128, n_channels), "blocks": 2, "stride": 1, "expansions": [3.0], "types": ["k3"],
         "resolutions": list(range(1, n_res + 1))}]}


def supernet_config(n_channels: int, n_res: int, input_size: int) -> dict:
    """A whole supernet: five stages (strides 1-2-2-2-1), widths up to 32 / 64 / 96 / 128 / 160."""
    widths, strides, blocks = (32, 64, 96, 128, 160), (1, 2, 2, 2, 1), (1, 2, 2, 2, 1)
    return {"input_size": input_size, "stem": 16, "head_channels": 256, "stages": [
        {"channels": options(w, n_channels), "blocks": b, "stride": s, "expansions": [3.0], "types": ["k3"],
         "resolutions": list(range(1, n_res + 1))} for w, s, b in zip(widths, strides, blocks)]}


class Naive(nn.Module):
    """Naive DNAS on the same configuration: per block, one built block per (resolution, channel) option."""

    def __init__(self, space: FBNetV2Space):
        super().__init__()
        cfg = space.config
        _, self.plans, _ = plan(cfg)
        self.blocks = nn.ModuleList()
        for p in self.plans:
            cin = max(p.cin.values)  # every candidate reads the previous layer's zero-padded max-width output
            self.blocks.append(nn.ModuleList(nn.ModuleList(
                Block("k3", cin, mid_channels(cin, p.expansions[0], cfg.divisor), c, p.stride, residual=False,
                      divisor=cfg.divisor) for c in p.cout.values) for _ in p.resolutions))
        self.mix: list[tuple[Tensor, Tensor]] = []

    def forward(self, x: Tensor) -> Tensor:
        for p, per_res, (w_res, w_ch) in zip(self.plans, self.blocks, self.mix):
            full, width, y = out_size(tuple(x.shape[-2:]), p.stride), max(p.cout.values), None
            for r, (factor, candidates) in enumerate(zip(p.resolutions, per_res)):
                xs = subsample(x, factor)
                for i, block in enumerate(candidates):
                    b = w_res[r] * w_ch[i] * F.pad(place(block(xs), factor, full), (0, 0, 0, 0, 0,
                                                                                     width - block_width(block)))
                    y = b if y is None else y + b
            x = x + y if p.residual else y
        return x


def block_width(block: Block) -> int:
    return block.layers[-1].conv.out_channels


def gumbel(space: FBNetV2Space, seed: int) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {d.name: F.softmax(-torch.empty(len(d.options)).exponential_(generator=g).log(), 0)
            for d in space.decisions()}


def sides(config: dict, batch: int, recompute: bool, seed: int = 0):
    """({side: step}, excluded storages) for one configuration: masking, [recompute,] naive; the steps run blocks
    only (stem excluded), all on one input and one mix."""
    torch.manual_seed(seed)
    space = FBNetV2Space(config)
    supernets = {"mask": space.supernet().train()}
    if recompute:
        supernets["recompute"] = FBNetV2Space({**config, "recompute_resolutions": True}).supernet().train()
        supernets["recompute"].load_state_dict(supernets["mask"].state_dict())
    naive = Naive(space).train()
    mix = gumbel(space, seed)
    for supernet in supernets.values():
        supernet.set_mix(mix)
    naive.mix = [(mix[p.resolution] if p.resolution else torch.ones(1),
                  mix[p.cout.decision] if p.cout.decision else torch.ones(1)) for p in naive.plans]
    x = torch.randn(batch, max(naive.plans[0].cin.values), *naive.plans[0].size)

    def masking(supernet):
        def step():
            y = x
            for block in supernet.blocks:
                y = block(y)
            y.square().mean().backward()
        return step

    def naive_step():
        naive(x).square().mean().backward()

    steps = {name: masking(supernet) for name, supernet in supernets.items()} | {"naive": naive_step}
    excluded = {id(t.untyped_storage()) for m in (*supernets.values(), naive)
                for t in [*m.parameters(), *m.buffers()]}
    return steps, excluded


def peak_bytes(step, excluded: set[int]) -> int:
    with PeakTracker(excluded) as tracker:
        step()
    return tracker.peak


def timed(step, threads: int, min_run_time: float, cpu_time: bool) -> float:
    clock = {"timer": time.process_time} if cpu_time else {}
    timer = Timer("step()", globals={"step": step}, num_threads=threads, **clock)
    return timer.timeit(1).median if min_run_time <= 0 else timer.blocked_autorange(min_run_time=min_run_time).median


def sweep(title: str, build, counts, batch: int, threads: int, min_run_time: float, rounds: int, cpu_time: bool,
          recompute: bool = False) -> None:
    """Memory once per side (it is exact); times in ``rounds`` round-robin passes over every option count and
    every side, so that drift on a busy machine hits all of them alike; medians over the rounds. Ratios "/1"
    are to masking at the first option count."""
    print(f"\n{title}")
    configs = {n: sides(build(n), batch, recompute) for n in counts}
    names = list(configs[counts[0]][0])
    memory = {n: {s: peak_bytes(step, ex) for s, step in steps.items()} for n, (steps, ex) in configs.items()}
    times: dict[int, dict[str, list[float]]] = {n: {s: [] for s in names} for n in counts}  # memory was the warm-up
    for _ in range(rounds):
        for n, (steps, _) in configs.items():
            for s, step in steps.items():
                times[n][s].append(timed(step, threads, min_run_time, cpu_time))
    med = {n: {s: statistics.median(t) for s, t in per.items()} for n, per in times.items()}
    base_mem, base_t = memory[counts[0]]["mask"], med[counts[0]]["mask"]
    head = [f"{'options':>7}"] + [f"{s + ' MiB':>13} {s + ' ms':>12}" for s in names]
    head += [f"{s + ' mem/1':>15} {s + ' time/1':>15}" for s in names if s != "naive"]
    head += ["recompute/mask time"] if recompute else []
    head += ["naive/mask mem naive/mask time"]
    print(" | ".join(head))
    for n in counts:
        m, t = memory[n], med[n]
        row = [f"{n:>7}"] + [f"{m[s] / 2**20:13.2f} {t[s] * 1e3:12.2f}" for s in names]
        row += [f"{m[s] / base_mem:15.3f} {t[s] / base_t:15.3f}" for s in names if s != "naive"]
        row += [f"{t['recompute'] / t['mask']:19.3f}"] if recompute else []
        row += [f"{m['naive'] / m['mask']:14.2f} {t['naive'] / t['mask']:15.2f}"]
        print(" | ".join(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scope", choices=["stage", "supernet", "both"], default="both")
    parser.add_argument("--sweeps", choices=["channels", "resolutions", "both"], default="both")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-run-time", type=float, default=0.5, help="seconds per timing block (0: one step)")
    parser.add_argument("--rounds", type=int, default=5, help="round-robin timing passes (medians are reported)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time steps by the process's CPU time, not wall time: on a busy machine, time spent "
                        "waiting for a core is not counted (use with --threads 1, where it is the step's work)")
    parser.add_argument("--smoke", action="store_true",
                        help="a check that every part runs: batch 2, input 16, 1-2 options, one thread, one timed step per side")
    args = parser.parse_args()
    channel_counts, resolution_counts = CHANNEL_COUNTS, RESOLUTION_COUNTS
    if args.smoke:
        # one thread: on a busy machine, two threads waiting on each other make tiny steps 5x slower
        args.batch, args.input_size, args.rounds, args.min_run_time, args.threads = 2, 16, 1, 0.0, 1
        channel_counts, resolution_counts = CHANNEL_COUNTS[:2], RESOLUTION_COUNTS[:2]
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} thread(s), "
          f"batch {args.batch}, input {args.input_size}, {args.rounds} rounds of {args.min_run_time} s blocks"
          f"{', CPU time' if args.cpu_time else ''}")
    common = dict(batch=args.batch, threads=args.threads, min_run_time=args.min_run_time, rounds=args.rounds,
                  cpu_time=args.cpu_time)
    channels, resolutions = args.sweeps in ("channels", "both"), args.sweeps in ("resolutions", "both")
    # scope -> (its name, with its size, in the channel sweep's title), its config of (channel, resolution) options
    scopes = {"stage": ("one stage", " (2 blocks, up to 128 channels)", stage_config),
              "supernet": ("whole supernet", " (8 blocks)", supernet_config)}
    for scope, (name, size, config) in scopes.items():
        if args.scope not in (scope, "both"):
            continue
        if channels:
            sweep(f"{name}{size}, channel options per layer",
                  lambda n, config=config: config(n, 1, args.input_size), channel_counts, **common)
        if resolutions:
            sweep(f"{name}, resolution options per block (4 channel options)",
                  lambda n, config=config: config(4, n, args.input_size), resolution_counts, recompute=True, **common)


if __name__ == "__main__":
    main()
