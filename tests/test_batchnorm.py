"""SyncBatchNorm in the weight-sharing supernets (``nascore.batchnorm``): their narrower paths slice a BatchNorm's
parameters and call ``F.batch_norm`` themselves, which ``nn.SyncBatchNorm`` never sees. Two gloo processes, each
with half of a batch, must compute what one process computes on the whole batch: outputs, gradients and running
statistics."""
from __future__ import annotations

import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from nascore.batchnorm import sliced_batch_norm
from nascore.spaces.fbnet_shared import SharedCandidate, SharedLayer
from nascore.spaces.fbnetv2_blocks import SlimConvBN

BATCH, WORLD = 8, 2


def modules() -> nn.ModuleDict:
    """A shared FBNet layer and an FBNetV2 slim layer, every parameter random (seeded)."""
    torch.manual_seed(0)
    mods = nn.ModuleDict({"layer": SharedLayer(("k3_e3", "k5_e6", "skip"), 8, 8, 1, 8, "relu"),
                          "slim": SlimConvBN(8, 16, 3, 1, "relu")})
    with torch.no_grad():
        for p in mods.parameters():
            p.normal_()
    return mods.train()


def outputs(mods: nn.ModuleDict, x: torch.Tensor) -> list[torch.Tensor]:
    """Every sliced BatchNorm path: two candidates of the shared layer, the slim layer sliced and masked."""
    layer, slim = mods["layer"], mods["slim"]
    mask = torch.linspace(0.2, 1.0, 16)
    return [SharedCandidate("k3_e3", layer)(x), SharedCandidate("k5_e6", layer)(x), slim(x, cout=12),
            slim(x, mask=mask)]


def inputs() -> tuple[torch.Tensor, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, 8, 6, 6, generator=g) * 3 + 1
    weights = [torch.randn(BATCH, c, 6, 6, generator=g) for c in (8, 8, 12, 16)]
    return x, weights


def state(mods: nn.ModuleDict, outs: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    grads = {f"grad.{n}": p.grad for n, p in mods.named_parameters() if p.grad is not None}
    buffers = {f"buffer.{n}": b for n, b in mods.named_buffers()}
    return {**grads, **buffers, **{f"out{i}": o.detach() for i, o in enumerate(outs)}}


def _rank(rank: int, port: int, result: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    mods = nn.SyncBatchNorm.convert_sync_batchnorm(modules())
    x, weights = inputs()
    part = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
    outs = outputs(mods, x[part])
    sum((o * w[part]).sum() for o, w in zip(outs, weights)).backward()
    for p in mods.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
    gathered = []
    for o in outs:
        pieces = [torch.empty_like(o) for _ in range(WORLD)]
        dist.all_gather(pieces, o.detach().contiguous())
        gathered.append(torch.cat(pieces))
    if rank == 0:
        torch.save(state(mods, gathered), result)
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_with_half_the_batch_each_compute_the_whole_batch(tmp_path: Path):
    result = tmp_path / "rank0.pt"
    mp.spawn(_rank, args=(free_port(), str(result)), nprocs=WORLD, join=True)
    synced = torch.load(result, weights_only=True)
    mods = modules()
    x, weights = inputs()
    outs = outputs(mods, x)
    sum((o * w).sum() for o, w in zip(outs, weights)).backward()
    whole = state(mods, outs)
    assert synced.keys() == whole.keys()
    for key, value in whole.items():
        torch.testing.assert_close(synced[key], value, rtol=1e-4, atol=1e-4, msg=key)


def test_outside_torchrun_a_sync_batchnorm_slice_is_plain_batch_norm():
    """Without a process group (and in eval), the slice is ``F.batch_norm`` on the first channels, running
    statistics updated in place as a BatchNorm's (momentum None: the cumulative average)."""
    bn = nn.SyncBatchNorm(6)
    bn.momentum = None
    reference = nn.BatchNorm2d(4, momentum=None)
    with torch.no_grad():
        bn.weight.normal_(), bn.bias.normal_()
        reference.weight.copy_(bn.weight[:4]), reference.bias.copy_(bn.bias[:4])
    for _ in range(3):
        y = torch.randn(5, 4, 3, 3)
        torch.testing.assert_close(sliced_batch_norm(bn, y), reference(y))
    torch.testing.assert_close(bn.running_mean[:4], reference.running_mean)
    torch.testing.assert_close(bn.running_var[:4], reference.running_var)
    assert bn.running_mean[4:].eq(0).all() and bn.running_var[4:].eq(1).all()
    bn.eval(), reference.eval()
    y = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(sliced_batch_norm(bn, y), F.batch_norm(y, reference.running_mean,
                                                                      reference.running_var, reference.weight,
                                                                      reference.bias))
