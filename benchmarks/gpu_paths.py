"""Every CUDA path of nascore in one prepared run (issue 29, "every GPU path ready to run"): on a machine with one
GPU it runs in under 8 minutes, writes its numbers to one JSON file, and stops at the first path that breaks (exit 1,
the check named, its error or its command's output). In order:

  precision  DNAS steps on the FBNet supernet (the soft mixture of every candidate, as DNAS trains it) at 224 px,
             width 1.0, batch 32, through ``nascore.loops.train_step``: float32, fp16 AMP (GradScaler), bf16 AMP,
             channels_last float32 and channels_last bf16; steps per second and the ratio to float32.
  syncbn     ``distributed.sync_batchnorm``: which BatchNorm layers SyncBatchNorm converts in each supernet (FBNet,
             FBNet ``shared_weights``, FBNetV2) and that a converted supernet's sliced layers go through
             ``nascore.batchnorm`` (the global-batch statistics themselves are tested on CPU with two gloo ranks:
             tests/test_batchnorm.py; one GPU cannot hold two NCCL ranks).
  torchrun   ``python -m nascore.torchrun --nproc_per_node 1 -m nascore run``: a small DNAS search and training on
             the device, NCCL on CUDA (gloo on CPU), SyncBatchNorm on CUDA, AMP bf16 on CUDA.
  export     ``nascore export`` of that CUDA-trained run to ONNX (its own check compares ONNX Runtime with torch).
  latency    a latency table timed on the device (``cost: latency``, torch backend) and its fidelity against
             end-to-end timings of random archs (as benchmarks/latency_fidelity.py measures it on CPU).
  ray        ``nascore run --executor ray`` of a random search whose archs train as Ray tasks on the device (one GPU
             each).

    python benchmarks/gpu_paths.py --out gpu_paths.json      # on the GPU machine

The smoke run (tests/test_benchmarks.py; tiny sizes, numbers meaningless) runs every path but the CUDA-only parts
(NCCL, SyncBatchNorm in a run) on CPU, Ray's alone left to benchmarks/ray_collect.py's smoke run (a Ray start is slow):

    python benchmarks/gpu_paths.py --device cpu --smoke --only precision syncbn torchrun export latency \
        --out /tmp/gpu_paths.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from latency_fidelity import evaluate  # benchmarks/ is the script's folder, so on sys.path
from torch import nn

from nascore.dataset import DataInfo
from nascore.loops import train_step
from nascore.precision import Precision
from nascore.spaces.fbnet import FBNetSpace
from nascore.spaces.fbnetv2 import FBNetV2Space
from nascore.spec_model import AmpConfig
from nascore.task import build_network
from nascore.tasks.classification import Classification

NUM_CLASSES = 10


class Check:
    """The state the checks share: the options, the scratch folder, the numbers so far."""

    def __init__(self, args: argparse.Namespace, work: Path):
        self.args, self.work, self.device = args, work, torch.device(args.device)
        self.cuda = self.device.type == "cuda"
        self.results: dict[str, Any] = {"device": str(self.device), "torch": torch.__version__,
                                        "gpu": torch.cuda.get_device_name(self.device) if self.cuda else None,
                                        "smoke": args.smoke, "checks": {}}

    def command(self, argv: list[str], what: str) -> str:
        env = {**os.environ, "NASCORE_CACHE": str(self.work / "cache")}
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{what}: {' '.join(argv)} exited {done.returncode}\n{done.stdout[-4000:]}\n"
                               f"{done.stderr[-4000:]}")
        return done.stdout

    def spec(self, name: str, **blocks: Any) -> Path:
        """A small spec on the device: digit-scenes at 32 px, FBNet width 0.25, a train block of 2 epochs."""
        spec = {"seed": 0, "device": self.args.device,
                "dataset": {"name": "digit-scenes", "image_size": 32, "num_train": 256 if not self.args.smoke else 32,
                            "num_val": 64 if not self.args.smoke else 16},
                "tasks": [{"name": "classification"}],
                "space": {"name": "fbnet", "width": 0.25, "input_size": 32, "head_channels": 64},
                "cost": {"name": "flops", "loss": {"form": "budget", "target": 1.5e6}},
                "train": {"epochs": 2, "batch_size": 16, "lr": 0.05, "references": False},
                "pareto": {"samples": 0}, **blocks}
        path = self.work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(spec))
        return path


def timed_steps(network: nn.Module, task: Classification, precision: Precision, images: torch.Tensor,
                targets: dict[str, torch.Tensor], steps: int, device: torch.device) -> float:
    """Steps per second of ``train_step`` (after two warm-up steps)."""
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.9)
    for step in range(steps + 2):
        if step == 2:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
        train_step(network, images, targets, [task], optimizer, device, 0, step, precision=precision)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps / (time.perf_counter() - start)


def precision(c: Check) -> dict[str, Any]:
    smoke = c.args.smoke
    width, size, batch, steps = (0.25, 32, 4, 2) if smoke else (1.0, 224, 32, 10)
    space = FBNetSpace({"width": width, "input_size": size})
    task = Classification({"num_classes": NUM_CLASSES})
    info = DataInfo(in_channels=3, image_size=size, num_classes={"label": NUM_CLASSES})
    images = torch.randn(batch, 3, size, size)
    targets = {"label": torch.randint(0, NUM_CLASSES, (batch,))}
    modes = {"float32": (None, False), "fp16": ("fp16", False), "bf16": ("bf16", False),
             "channels_last float32": (None, True), "channels_last bf16": ("bf16", True)}
    out: dict[str, Any] = {"width": width, "input_size": size, "batch": batch, "steps": steps}
    for mode, (dtype, channels_last) in modes.items():
        torch.manual_seed(0)
        supernet = space.supernet()
        supernet.set_mix({d.name: torch.full((len(d.options),), 1 / len(d.options)) for d in supernet.decisions()})
        p = Precision(AmpConfig(dtype=dtype) if dtype else None, channels_last, c.device)
        network = p.network(build_network(supernet, [task], info).to(c.device).train())
        out[mode] = {"steps_per_s": timed_steps(network, task, p, images, targets, steps, c.device)}
        if c.cuda:
            out[mode]["peak_gib"] = torch.cuda.max_memory_allocated(c.device) / 2 ** 30
            torch.cuda.reset_peak_memory_stats(c.device)
        out[mode]["vs_float32"] = out[mode]["steps_per_s"] / out["float32"]["steps_per_s"]
    return out


def syncbn(c: Check) -> dict[str, Any]:
    """BatchNorm layers before and after ``convert_sync_batchnorm`` per supernet, and the layers a converted
    supernet normalises through ``nascore.batchnorm`` (sliced) in one training forward of a random path."""
    spaces = {"fbnet": FBNetSpace({"width": 0.25, "input_size": 32}),
              "fbnet shared_weights": FBNetSpace({"width": 0.25, "input_size": 32, "shared_weights": True}),
              "fbnetv2": FBNetV2Space({"input_size": 32})}
    out = {}
    for name, space in spaces.items():
        supernet = space.supernet()
        before = sum(isinstance(m, nn.BatchNorm2d) for m in supernet.modules())
        converted = nn.SyncBatchNorm.convert_sync_batchnorm(supernet).to(c.device).train()
        after = sum(isinstance(m, nn.SyncBatchNorm) for m in converted.modules())
        seen = sliced_calls(converted, c.device)
        if after != before or not all(seen):
            raise RuntimeError(f"{name}: SyncBatchNorm converted {after} of {before} BatchNorm layers; "
                               f"{seen.count(False)} sliced calls on an unconverted layer")
        out[name] = {"batchnorm_layers": before, "converted": after, "sliced_calls": len(seen)}
    return out


def sliced_calls(supernet: nn.Module, device: torch.device) -> list[bool]:
    """For each call of ``nascore.batchnorm.sliced_batch_norm`` in one training forward of a random path of
    ``supernet``: whether its layer is a SyncBatchNorm."""
    import nascore.batchnorm as batchnorm

    seen: list[bool] = []
    original = batchnorm.sliced_batch_norm

    def spy(bn: nn.BatchNorm2d, *rest: Any, **kw: Any) -> torch.Tensor:
        seen.append(isinstance(bn, nn.SyncBatchNorm))
        return original(bn, *rest, **kw)

    modules = [sys.modules[n] for n in ("nascore.spaces.fbnet_shared", "nascore.spaces.fbnetv2_blocks")]
    for module in modules:
        module.sliced_batch_norm = spy
    try:
        g = torch.Generator().manual_seed(0)
        supernet.set_choices({d.name: d.options[int(torch.randint(len(d.options), (1,), generator=g))]
                              for d in supernet.decisions()})
        supernet(torch.randn(4, 3, 32, 32, device=device))
    finally:
        for module in modules:
            module.sliced_batch_norm = original
    return seen


def torchrun(c: Check) -> dict[str, Any]:
    blocks: dict[str, Any] = {"strategy": {"name": "dnas", "epochs": 2, "warmup_epochs": 1, "batch_size": 16,
                                           "max_steps": 2 if c.args.smoke else 8}}
    if c.cuda:
        blocks.update(distributed={"sync_batchnorm": True}, amp={"dtype": "bf16"})
    spec = c.spec("torchrun", **blocks)
    out = c.work / "torchrun-run"
    start = time.perf_counter()
    c.command([sys.executable, "-m", "nascore.torchrun", "--standalone", "--nproc_per_node=1", "-m", "nascore",
               "run", str(spec), "--out", str(out)], "torchrun")
    summary = json.loads((out / "summary.json").read_text())
    return {"seconds": time.perf_counter() - start, "backend": "nccl" if c.cuda else "gloo",
            "sync_batchnorm": c.cuda, "amp": "bf16" if c.cuda else None, "summary_archs": list(summary["archs"])}


def export(c: Check) -> dict[str, Any]:
    onnx = c.work / "model.onnx"
    start = time.perf_counter()
    text = c.command([sys.executable, "-m", "nascore", "export", str(c.work / "torchrun-run"), "--format", "onnx",
                      "--out", str(onnx)], "export")
    return {"seconds": time.perf_counter() - start, "bytes": onnx.stat().st_size, "output": text.strip()[-500:]}


def latency(c: Check) -> dict[str, Any]:
    smoke = c.args.smoke
    width, size, archs = (0.25, 32, 3) if smoke else (1.0, 224, 20)
    op, model = (0.001, 0.001) if smoke else (0.05, 0.1)
    row = evaluate("torch", width, size, archs, 0, c.work / "luts", op, model, 2 if smoke else 8, 2,
                   device=c.args.device)
    return {k: row[k] for k in ("width", "size", "ops", "build_s", "calibrate_s", "retest_rho", "calibrated")}


def ray(c: Check) -> dict[str, Any]:
    spec = c.spec("ray", strategy={"name": "random", "archs": 2,
                                   "train": {"epochs": 1, "batch_size": 16, "lr": 0.05}})
    start = time.perf_counter()
    c.command([sys.executable, "-m", "nascore", "run", str(spec), "--out", str(c.work / "ray-run"),
               "--executor", "ray"], "ray")
    return {"seconds": time.perf_counter() - start}


CHECKS: dict[str, Callable[[Check], dict[str, Any]]] = {
    "precision": precision, "syncbn": syncbn, "torchrun": torchrun, "export": export, "latency": latency, "ray": ray}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (seconds; numbers meaningless)")
    p.add_argument("--only", nargs="+", choices=list(CHECKS), help="run these checks alone")
    p.add_argument("--out", required=True, help="JSON file of the numbers (written after every check)")
    args = p.parse_args()
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        print("gpu_paths: --device cuda but CUDA is not available here", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="gpu_paths-") as tmp:
        check = Check(args, Path(tmp))
        for name in args.only or list(CHECKS):
            start = time.perf_counter()
            try:
                check.results["checks"][name] = {**CHECKS[name](check), "check_seconds": time.perf_counter() - start}
            except Exception:  # noqa: BLE001 - the first broken path stops the run, named, with its error
                check.results["failed"] = {"check": name, "error": traceback.format_exc()[-6000:]}
                Path(args.out).write_text(json.dumps(check.results, indent=1))
                print(f"gpu_paths: check '{name}' FAILED\n{traceback.format_exc()}", file=sys.stderr)
                return 1
            Path(args.out).write_text(json.dumps(check.results, indent=1))
            print(f"[{name}] ok in {time.perf_counter() - start:.1f} s: "
                  f"{json.dumps(check.results['checks'][name], default=str)[:400]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
