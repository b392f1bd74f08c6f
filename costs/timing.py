"""Latency backends: time a module on PyTorch eager (CPU or CUDA) or on ONNX Runtime.

Both use ``torch.utils.benchmark.Timer.blocked_autorange`` (warm-up, repeated blocks, CUDA sync); the
median and 90th percentile are taken over the blocks' per-call times.
"""
from __future__ import annotations

import copy
import ctypes
import io
import logging
import platform
import statistics
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from nascore.errors import NascoreError

BackendName = Literal["torch", "onnxruntime"]
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
WARMUP_CALLS = 3


@dataclass(frozen=True)
class Timing:
    median_ms: float
    p90_ms: float
    runs: int


def device_name(device: torch.device) -> str:
    """What the latency belongs to: the GPU's name, or the CPU's model and architecture."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return f"cpu: {model} ({platform.machine()})"


def _blocks(stmt: str, scope: dict[str, Any], threads: int, min_run_time: float) -> Timing:
    # imported here, its CUDA_HOME warning silenced: it is about building C++ extensions, which we never do
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    import torch.utils.benchmark as benchmark  # torch.utils.benchmark: only when timing

    measurement = benchmark.Timer(stmt, globals=scope, num_threads=threads).blocked_autorange(
        min_run_time=min_run_time)
    times = sorted(measurement.times)
    p90 = statistics.quantiles(times, n=10, method="inclusive")[-1] if len(times) > 1 else times[0]
    return Timing(measurement.median * 1e3, p90 * 1e3, len(times) * measurement.number_per_run)


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory in the process instead of returning it to the OS; True if it applied.

    By default glibc unmaps freed blocks over ~128 KiB and maps them anew on the next allocation, so eager
    PyTorch, which allocates every output, pays page faults whose cost varies from run to run: one model's
    timings spread 1.2-1.9x on our 2-core VM, and within 1.06x with this (as with a server's allocator that
    reuses memory). Process-wide and kept: it only stops memory from being handed back to the OS.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from malloc.h
    return bool(libc.mallopt(m_mmap_threshold, 32 * 2**20) and libc.mallopt(m_trim_threshold, 2**31 - 1))


class TorchBackend:
    """PyTorch eager, inference mode, on ``device`` with ``threads`` intra-op threads."""

    name: BackendName = "torch"

    def __init__(self, device: str = "cpu", threads: int = 1, dtype: str = "float32"):
        self.device, self.threads, self.dtype = torch.device(device), threads, DTYPES[dtype]
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise NascoreError("latency device 'cuda' was asked for but CUDA is not available on this machine")
        self.malloc = "keeps freed memory" if self.device.type == "cpu" and keep_freed_memory() else "default"

    def fingerprint(self) -> dict[str, Any]:
        return {"backend": self.name, "device": device_name(self.device), "torch": torch.__version__,
                "threads": self.threads, "malloc": self.malloc}

    def time(self, module: nn.Module, input_shape: tuple[int, ...], min_run_time: float) -> Timing:
        model = copy.deepcopy(module).to(self.device, self.dtype).eval()
        x = torch.randn(input_shape, generator=torch.Generator().manual_seed(0)).to(self.device, self.dtype)
        call = torch.inference_mode()(model)
        for _ in range(WARMUP_CALLS):
            call(x)
        return _blocks("call(x)", {"call": call, "x": x}, self.threads, min_run_time)


class OnnxRuntimeBackend:
    """ONNX Runtime's CPU execution provider on a graph exported with ``torch.onnx.export``."""

    name: BackendName = "onnxruntime"

    def __init__(self, threads: int = 1):
        try:
            import onnxruntime  # ONNX Runtime: only when a file runs on it
        except ImportError:
            raise NascoreError("ONNX Runtime is needed here but the onnxruntime package (a dependency of nascore) "
                               "does not import: pip install onnxruntime") from None
        self.ort, self.threads = onnxruntime, threads

    def fingerprint(self) -> dict[str, Any]:
        return {"backend": self.name, "device": device_name(torch.device("cpu")),
                "onnxruntime": self.ort.__version__, "threads": self.threads}

    def load(self, model: bytes | str):
        """An inference session of an ONNX model (its bytes or its file) with this backend's threads."""
        options = self.ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = self.threads, 1
        options.log_severity_level = 3
        return self.ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    def session(self, module: nn.Module, input_shape: tuple[int, ...]):
        model = copy.deepcopy(module).cpu().float().eval()
        buffer = io.BytesIO()
        # the TorchScript exporter (dynamo=False) exports one block in ~0.1 s; the dynamo exporter takes
        # 4-6 s, too slow for tables of hundreds of operations
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (torch.zeros(input_shape),), buffer, dynamo=False, input_names=["input"])
        return self.load(buffer.getvalue())

    def time(self, module: nn.Module, input_shape: tuple[int, ...], min_run_time: float) -> Timing:
        return self.time_session(self.session(module, input_shape), input_shape, min_run_time)

    def time_session(self, session: Any, input_shape: tuple[int, ...], min_run_time: float,
                     input_name: str = "input") -> Timing:
        """Time ``run_with_iobinding`` with the input and every output bound to preallocated buffers, as a
        deployment does; ``session.run`` would add an output allocation and a NumPy copy to every call."""
        x = torch.randn(input_shape, generator=torch.Generator().manual_seed(0)).numpy()
        binding = session.io_binding()
        # OrtValues made from NumPy arrays borrow their memory: the arrays stay referenced while timing; output
        # shapes from one call, as a file with a dynamic batch axis declares them symbolically
        arrays = [x] + [np.empty_like(out) for out in session.run(None, {input_name: x})]
        binding.bind_ortvalue_input(input_name, self.ort.OrtValue.ortvalue_from_numpy(x))
        for out, array in zip(session.get_outputs(), arrays[1:]):
            binding.bind_ortvalue_output(out.name, self.ort.OrtValue.ortvalue_from_numpy(array))
        for _ in range(WARMUP_CALLS):
            session.run_with_iobinding(binding)
        return _blocks("session.run_with_iobinding(binding)",
                       {"session": session, "binding": binding, "arrays": arrays}, self.threads, min_run_time)


def make_backend(name: BackendName, device: str = "cpu", threads: int = 1, dtype: str = "float32"):
    if name == "onnxruntime":
        return OnnxRuntimeBackend(threads)
    return TorchBackend(device, threads, dtype)
