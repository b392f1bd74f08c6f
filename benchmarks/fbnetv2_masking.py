"""DMaskingNAS against naive DNAS: peak memory and time of a training step as channel / resolution options grow.

(a) masking: nascore's ``fbnetv2`` supernet, every option a mask over one max-width convolution (channels) or
    one shared block run on the subsampled input (resolution), a soft Gumbel-softmax mix of every decision;
(b) naive DNAS: the same configuration with one convolution block per option (FBNet-style), each candidate's
    output zero-padded to the largest width (channels) or placed back at full size (resolution) and summed
    with the same mix.

Both sides run forward + backward of ``out.square().mean()`` (the weights need gradients either way) with
``torch.set_num_threads(--threads)``. Peak memory is the most bytes of tensors alive at once during the step,
tracked per op by ``nascore.costs.memory.PeakTracker`` (parameters excluded; exact, not sampled). Times are
medians of ``torch.utils.benchmark`` blocks, the two sides alternating per option count.

    python benchmarks/fbnetv2_masking.py [--scope stage|supernet|both] [--threads 2]
"""
from __future__ import annotations

import argparse
import platform
import statistics

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
                Block("k3", cin, mid_channels(cin, p.expansions[0], cfg.divisor), c, p.stride, 1, False, True,
                      p.size, cfg.placement, cfg.divisor) for c in p.cout.values) for _ in p.resolutions))
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


def sides(config: dict, batch: int, seed: int = 0):
    """(masking step, naive step, input) for one configuration; the steps run blocks only (stem excluded)."""
    torch.manual_seed(seed)
    space = FBNetV2Space(config)
    supernet = space.supernet().train()
    naive = Naive(space).train()
    mix = gumbel(space, seed)
    supernet.set_mix(mix)
    naive.mix = [(mix[p.resolution] if p.resolution else torch.ones(1),
                  mix[p.cout.decision] if p.cout.decision else torch.ones(1)) for p in naive.plans]
    stem = max(naive.plans[0].cin.values)
    size = naive.plans[0].size
    x = torch.randn(batch, stem, *size)

    def masking():
        y = x
        for block in supernet.blocks:
            y = block(y)
        y.square().mean().backward()

    def naive_step():
        naive(x).square().mean().backward()

    excluded = {id(t.untyped_storage()) for m in (supernet, naive) for t in [*m.parameters(), *m.buffers()]}
    return masking, naive_step, x, excluded


def peak_bytes(step, excluded: set[int]) -> int:
    with PeakTracker(excluded) as tracker:
        step()
    return tracker.peak


def timed(step, threads: int, min_run_time: float) -> float:
    return Timer("step()", globals={"step": step}, num_threads=threads).blocked_autorange(
        min_run_time=min_run_time).median


def sweep(title: str, build, counts, batch: int, threads: int, min_run_time: float, rounds: int) -> None:
    """Memory once per side (it is exact); times in ``rounds`` round-robin passes over every option count and
    both sides, so that drift on a busy machine hits all of them alike; medians over the rounds."""
    print(f"\n{title}")
    configs = {n: sides(build(n), batch) for n in counts}
    memory = {n: (peak_bytes(m, ex), peak_bytes(nv, ex)) for n, (m, nv, _, ex) in configs.items()}  # + warm-up
    times: dict[int, tuple[list[float], list[float]]] = {n: ([], []) for n in counts}
    for _ in range(rounds):
        for n, (masking, naive, _, _) in configs.items():
            times[n][0].append(timed(masking, threads, min_run_time))
            times[n][1].append(timed(naive, threads, min_run_time))
    print(f"{'options':>7} | {'mask MiB':>8} {'mask ms':>8} | {'naive MiB':>9} {'naive ms':>8} | "
          f"{'mask mem/1':>10} {'mask time/1':>11} | {'naive/mask mem':>14} {'naive/mask time':>15}")
    first = counts[0]
    base_mem, base_t = memory[first][0], statistics.median(times[first][0])
    for n in counts:
        (m_mem, n_mem), m_t, n_t = memory[n], statistics.median(times[n][0]), statistics.median(times[n][1])
        print(f"{n:>7} | {m_mem / 2**20:8.2f} {m_t * 1e3:8.2f} | {n_mem / 2**20:9.2f} {n_t * 1e3:8.2f} | "
              f"{m_mem / base_mem:10.3f} {m_t / base_t:11.3f} | {n_mem / m_mem:14.2f} {n_t / m_t:15.2f}",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scope", choices=["stage", "supernet", "both"], default="both")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-run-time", type=float, default=0.5, help="seconds per timing block")
    parser.add_argument("--rounds", type=int, default=5, help="round-robin timing passes (medians are reported)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} thread(s), "
          f"batch {args.batch}, input {args.input_size}, {args.rounds} rounds of {args.min_run_time} s blocks")
    common = dict(batch=args.batch, threads=args.threads, min_run_time=args.min_run_time, rounds=args.rounds)
    if args.scope in ("stage", "both"):
        sweep("one stage (2 blocks, up to 128 channels), channel options per layer",
              lambda n: stage_config(n, 1, args.input_size), CHANNEL_COUNTS, **common)
        sweep("one stage, resolution options per block (4 channel options)",
              lambda n: stage_config(4, n, args.input_size), RESOLUTION_COUNTS, **common)
    if args.scope in ("supernet", "both"):
        sweep("whole supernet (8 blocks), channel options per layer",
              lambda n: supernet_config(n, 1, args.input_size), CHANNEL_COUNTS, **common)
        sweep("whole supernet, resolution options per block (4 channel options)",
              lambda n: supernet_config(4, n, args.input_size), RESOLUTION_COUNTS, **common)


if __name__ == "__main__":
    main()
