"""End-to-end latency (``nascore measure``): of an arch, next to its lookup-table estimate, or of a file
``nascore export`` wrote (ONNX on ONNX Runtime, an exported program or TorchScript on PyTorch)."""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from nascore.arch import arch_space, resolve_arch
from nascore.costs.latency import LatencyConfig, LatencyCost
from nascore.costs.timing import OnnxRuntimeBackend, Timing, TorchBackend, device_name
from nascore.errors import NascoreError, first_line
from nascore.fileio import human_size
from nascore.progress import Progress, no_progress

from .export import Exported, load_module

#: the largest input an exported file is timed with (values): what its input axes declare is checked against it
MAX_INPUT_VALUES = 1 << 28


@dataclass(frozen=True)
class ArchLatency:
    """An arch's measured latency and its lookup-table estimate (ms), on ``device`` (the table's fingerprint)."""

    name: str
    device: str
    input_size: int
    timing: Timing
    estimate_ms: float


@dataclass(frozen=True)
class FileLatency:
    """An exported file's measured latency: on ``runtime`` (onnxruntime or torch) and ``device``, at ``shape``."""

    runtime: str
    device: str
    batch: int
    shape: tuple[int, ...]
    timing: Timing


def measure_arch(ref: str, config: LatencyConfig, input_size: int | None = None, min_run_time: float = 1.0,
                 progress: Progress = no_progress) -> ArchLatency:
    """Time the arch ``ref`` (a file or a named arch) end to end as ``config`` says, at ``input_size`` (else its
    space's), for ``min_run_time`` seconds; and estimate it from the table (operations it lacks measured first)."""
    arch = resolve_arch(ref)
    space = arch_space(arch, ref, input_size=input_size)
    size, cost = space.input_size, LatencyCost(config, progress=progress)
    ops = space.arch_operations(arch, size)
    estimate = sum(cost.price_all([(op.module, op.input_shape) for op in ops])) + cost.overhead()
    timing = cost.time_model(space.build(arch), (config.batch_size, 3, size, size), min_run_time)
    return ArchLatency(arch.name or ref, cost.table.fingerprint["device"], size, timing, estimate)


def measure_file(exported: Exported, backend: str | None = None, batch: int | None = None, threads: int = 1,
                 device: str = "cpu", min_run_time: float = 1.0) -> FileLatency:
    """Time an exported file on its runtime (``backend`` None, or that runtime's name): an image-batch input at its
    fixed batch, else at ``batch`` (default 1); any other input at its own shape."""
    runtime = "onnxruntime" if exported.format == "onnx" else "torch"
    if backend not in (None, runtime):
        raise NascoreError(f"--backend {backend}: a {exported.format} file runs on {runtime}")
    if runtime == "onnxruntime" and device != "cpu":
        raise NascoreError(f"--device {device}: an ONNX file is timed on ONNX Runtime's CPU execution provider")
    if len(exported.input_shape) == 4:  # a batch of images: the file's own batch, or --batch for a dynamic one
        flag = batch is not None and exported.batch is None
        batch = batch or exported.batch or 1
        if exported.batch is not None and batch != exported.batch:
            raise NascoreError(f"--batch {batch}: {exported.path} was exported with a fixed batch of "
                               f"{exported.batch}")
        shape = (batch, *exported.input_shape[1:])
    else:
        if batch not in (None, 1):
            raise NascoreError(f"--batch {batch}: {exported.path} takes one input of shape "
                               f"{exported.input_shape}, no batch")
        flag, batch, shape = False, 1, exported.input_shape
    values = math.prod(shape)
    if values > MAX_INPUT_VALUES:  # checked before the input is made
        what = f"--batch {batch}: {exported.path} would take" if flag else f"{exported.path} declares"
        raise NascoreError(f"{what} an input of {'x'.join(map(str, shape))} ({values:,} values); expected at most "
                           f"{MAX_INPUT_VALUES:,} ({human_size(4 * MAX_INPUT_VALUES)} of float32)")
    try:
        if runtime == "onnxruntime":
            onnxruntime = OnnxRuntimeBackend(threads)
            timing = onnxruntime.time_session(onnxruntime.load(str(exported.path)), shape, min_run_time,
                                              exported.input_name)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # moving a TorchScript module reads .grad of non-leaf tensors
                timing = TorchBackend(device, threads).time(load_module(exported.format, exported.path), shape,
                                                            min_run_time)
    except NascoreError:
        raise
    except Exception as exc:  # noqa: BLE001 - the runtime refuses the file or fails running it (e.g. an allocation
        # its graph asks for): say so
        raise NascoreError(f"{exported.path} cannot be run on {runtime}: {type(exc).__name__}: "
                           f"{first_line(exc)}") from None
    where = device_name(torch.device(device if runtime == "torch" else "cpu"))
    return FileLatency(runtime, where, batch, shape, timing)
