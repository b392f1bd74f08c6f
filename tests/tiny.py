"""Tiny fixtures shared by the tests: FBNetV5 specs that search in seconds on digit-scenes (space, reinforce
strategy, dense tasks), an all-keep backbone, a few training steps; the end-to-end tests' DNAS spec; whether a step
on one path of a weight-sharing supernet moves another."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from nascore.arch import Arch
from nascore.spaces.fbnetv5 import FBNetV5Space

SPACE = {"name": "fbnetv5", "input_size": 32, "width": 0.25, "blocks": [1, 1, 1, 1], "head_channels": 64}
REINFORCE = {"name": "reinforce", "epochs": 2, "warmup_epochs": 1, "batch_size": 16, "max_steps": 2,
             "bn_batches": 1}
FLOPS = {"name": "flops", "loss": {"form": "additive", "lambda": 0.1, "scale": 1.0e6}}


def search(tmp_path: Path, tasks: list[dict], strategy: dict, **extra: Any) -> Path:
    """Write a spec over 48 digit-scenes images at 32 px and ``nascore run`` it; returns the run directory."""
    from nascore.cli import main

    spec = {"seed": 0,
            "dataset": {"name": "digit-scenes", "image_size": 32, "num_train": 48, "num_val": 16, "num_test": 8,
                        "cache_dir": str(tmp_path / "cache")},
            "tasks": tasks, "space": SPACE, "strategy": strategy, **extra}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 0
    return tmp_path / "run"


def dnas_spec(cache: Path, **strategy: Any) -> dict:
    """DNAS on fbnet over 64 digit-scenes images at 32 px: 3 search epochs (the first weights only) of 2 steps,
    then 2 training epochs of the found arch."""
    return {
        "seed": 3,
        "dataset": {"name": "digit-scenes", "image_size": 32, "num_train": 64, "num_val": 16, "num_test": 8,
                    "cache_dir": str(cache)},
        "tasks": [{"name": "classification"}],
        "space": {"name": "fbnet", "width": 0.25, "input_size": 32, "head_channels": 64},
        "strategy": {"name": "dnas", "epochs": 3, "warmup_epochs": 1, "batch_size": 16, "max_steps": 2,
                     **strategy},
        "cost": {"name": "flops", "loss": {"form": "multiplicative", "alpha": 0.2, "beta": 0.6}},
        "train": {"epochs": 2, "batch_size": 16, "lr": 0.05},
    }


def all_keep_backbone(input_size: int) -> torch.nn.Module:
    space = FBNetV5Space({"width": 0.25, "input_size": input_size, "blocks": [1, 1, 1, 1]})
    choices = {d.name: "keep" for d in space.decisions()}
    return space.build(Arch(space="fbnetv5", config=space.config.model_dump(mode="json"), choices=choices))


def train_losses(net: torch.nn.Module, task: Any, images: torch.Tensor, targets: dict, steps: int) -> list[float]:
    """``steps`` Adam steps (lr 3e-3) on one batch; the task's loss before each."""
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        loss = task.loss(net(images)[task.name], targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def predictor_file(folder: Path) -> Path:
    """An ``aio-p`` predictor file for fbnet at width 0.25 on 32 px images, fitted briefly (5 epochs) on the shipped
    FBNet performance dataset (benchmarks/perfdata/fbnet_12ep.tar.gz); made once per folder."""
    import tarfile

    from nascore.performance.perfdata import PerfDataset
    from nascore.performance.predictors.fitting import fit_file

    path = folder / "fbnet.predictor.pt"
    if not path.exists():
        with tarfile.open(Path(__file__).parents[1] / "benchmarks" / "perfdata" / "fbnet_12ep.tar.gz") as tar:
            tar.extractall(folder / "perfdata", filter="data")
        data = PerfDataset.read(folder / "perfdata" / "fbnet_12ep")
        fit_file([data], "aio-p", {"epochs": 5}).save(path)
    return path


#: the fbnet space options a one-shot supernet trains with (BENCHMARKS.md, "Supernets that rank")
ONE_SHOT_SPACE = {"shared_weights": True, "candidates": ["k3_e3", "k3_e6", "k5_e3", "k5_e6", "skip"],
                  "skip_in": "identity"}


def standalone_spec(cache: Path, strategy: dict) -> dict:
    """fbnet over 64 digit-scenes images at 32 px, archs within 1.5 M multiply-adds, each trained one epoch by the
    ``random`` or ``predictor`` strategy ``strategy``; the found arch trained one epoch again."""
    budget = {"epochs": 1, "batch_size": 16, "lr": 0.05}
    return {"seed": 0,
            "dataset": {"name": "digit-scenes", "image_size": 32, "num_train": 64, "num_val": 16, "num_test": 8,
                        "cache_dir": str(cache)},
            "tasks": [{"name": "classification"}],
            "space": {"name": "fbnet", "width": 0.25, "input_size": 32, "head_channels": 64},
            "strategy": {"train": budget, **strategy},
            "cost": {"name": "flops", "loss": {"form": "budget", "target": 1.5e6}},
            "train": {**budget, "references": False}}


def moves(supernet: torch.nn.Module, x: torch.Tensor, trained: dict[str, str], read: dict[str, str],
          searched: list[torch.nn.Parameter]) -> bool:
    """Whether one SGD step on the path ``trained``, over the ``searched`` layers' weights only (the stem and the rest
    frozen, the BatchNorm statistics its forward gathered put back), changes the output of the path ``read`` on
    ``x`` (in eval mode) at all: true where the two paths read weights in common, false where they read none."""
    supernet.eval().set_choices(read)
    with torch.no_grad():
        before = supernet(x)[-1].clone()
    buffers = {k: v.clone() for k, v in supernet.named_buffers()}
    supernet.train().set_choices(trained)
    optimizer = torch.optim.SGD(searched, lr=0.1)
    supernet(x)[-1].square().mean().backward()
    optimizer.step()
    with torch.no_grad():
        for k, v in supernet.named_buffers():
            v.copy_(buffers[k])
    supernet.eval().set_choices(read)
    with torch.no_grad():
        return not torch.equal(supernet(x)[-1], before)
