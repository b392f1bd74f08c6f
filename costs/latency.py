"""Latency cost model (FBNet's lookup table): every candidate operation is timed at its real input shape
on the target backend, once; the table lives in a JSON file with the fingerprint of the setup it was
measured on, so later searches reuse it and a table from another machine is not used by mistake.

A network's estimate is ``sum(op - overhead) + overhead``: each isolated measurement pays the runtime's
per-call cost (``overhead``, the time of a call that computes nothing) which a whole network pays once.
A table may also carry a calibration from a few whole archs timed end to end (``scale * estimate``), for
what isolated timings miss, e.g. caches that are cold inside a whole network.
"""
from __future__ import annotations

import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from nascore.arch import Arch
from nascore.component import ComponentConfig, TorchDevice
from nascore.cost import CostModel, op_key
from nascore.errors import NascoreError
from nascore.hookspecs import hookimpl
from nascore.lock import WriteLock
from nascore.parts import Parts
from nascore.progress import Progress, no_progress
from nascore.space import SearchSpace

from .lut import Calibration, LatencyTable, LutEntry, entry_key, fingerprint_differences, load_table
from .timing import BackendName, Timing, make_backend

if TYPE_CHECKING:
    from nascore.spec_model import RunSpec

#: input of the do-nothing call that measures a backend's per-call overhead
OVERHEAD_SHAPE = (1, 1, 1)


class LatencyConfig(ComponentConfig):
    lut: str | None = Field(None, description="lookup table file (JSON): read when it exists; entries it "
                                              "lacks are measured and written back")
    backend: BackendName = Field("torch", description="torch (eager) or onnxruntime (CPU execution provider)")
    device: TorchDevice = Field("cpu", description="device the torch backend times on (cpu, cuda, cuda:1)")
    threads: int = Field(1, ge=1, description="intra-op threads while timing")
    batch_size: int = Field(1, ge=1)
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    min_run_time: float = Field(0.2, gt=0, description="seconds of timing per operation")
    measure_missing: bool = Field(True, description="measure operations the table lacks (else: an error "
                                                    "naming them)")
    allow_other_fingerprint: bool = Field(False, description="use a table measured on another setup")
    subtract_overhead: bool = Field(True, description="count the per-call overhead once per network, not "
                                                      "once per operation")
    calibrated: bool = Field(True, description="apply the table's end-to-end calibration when it has one")

    @field_validator("lut")
    @classmethod
    def _readable_table(cls, value: str | None) -> str | None:
        """A table that exists must be a valid one (a missing one is created by measuring)."""
        if value is not None and os.path.lexists(value):
            try:
                load_table(value)
            except NascoreError as exc:
                raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _backend_options(self) -> LatencyConfig:
        if self.backend == "onnxruntime" and (torch.device(self.device).type != "cpu" or self.dtype != "float32"):
            raise ValueError("backend onnxruntime times float32 on the CPU execution provider; "
                             f"device {self.device!r} and dtype {self.dtype!r} need backend torch")
        return self


class LatencyCost(CostModel):
    """Latency in milliseconds from a measured lookup table (``lut``), measured on demand."""

    name: ClassVar[str] = "latency"
    unit: ClassVar[str] = "ms"
    Config: ClassVar[type[LatencyConfig]] = LatencyConfig

    def __init__(self, config=None, progress: Progress = no_progress):
        super().__init__(config, progress)
        self._backend = None
        self._table: LatencyTable | None = None
        self._foreign = False  # the table was measured on another setup (allowed by the config)

    @property
    def backend(self):
        if self._backend is None:
            cfg = self.config
            self._backend = make_backend(cfg.backend, cfg.device, cfg.threads, cfg.dtype)
        return self._backend

    def fingerprint(self) -> dict[str, Any]:
        return {**self.backend.fingerprint(), "dtype": self.config.dtype, "batch_size": self.config.batch_size}

    @property
    def table(self) -> LatencyTable:
        if self._table is None:
            self._table = self._open()
        return self._table

    def _open(self) -> LatencyTable:
        path, here = self.config.lut, self.fingerprint()
        if path is None or not os.path.lexists(path):
            return LatencyTable(fingerprint=here)
        table = load_table(path)
        differences = fingerprint_differences(table.fingerprint, here)
        if differences and not self.config.allow_other_fingerprint:
            raise NascoreError(f"latency table {path} was measured on another setup:\n"
                               + "\n".join(f"  {d}" for d in differences)
                               + "\nmeasure one here (`nascore lut build SPEC --out NEW.json`), or set "
                                 "cost.allow_other_fingerprint: true to use it anyway")
        self._foreign = bool(differences)
        return table

    def _shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (self.config.batch_size, *input_shape[1:])

    def save(self) -> None:
        """Write the table to ``lut`` (atomically); without a ``lut`` it lives in memory only."""
        if self.config.lut is not None:
            self.table.save(self.config.lut)

    # -- pricing -----------------------------------------------------------------------------
    def _call_overhead(self) -> float:
        """The runtime's per-call cost, timed once per table (0 without ``subtract_overhead``)."""
        if not self.config.subtract_overhead:
            return 0.0
        table = self.table
        if table.overhead_ms is None:
            self._check_measurable(["the per-call overhead"])
            table.overhead_ms = self.backend.time(nn.Identity(), self._shape(OVERHEAD_SHAPE),
                                                  self.config.min_run_time).median_ms
            self.save()
        return table.overhead_ms

    def _scale(self) -> float:
        c = self.table.calibration
        return c.scale if c is not None and self.config.calibrated else 1.0

    def overhead(self) -> float:
        return self._scale() * self._call_overhead()

    def price(self, module: nn.Module, input_shape: tuple[int, ...]) -> float:
        return self.price_all([(module, input_shape)])[0]

    def price_all(self, items: Sequence[tuple[nn.Module, tuple[int, ...]]]) -> list[float]:
        keyed = self._keyed(items)
        self._measure(keyed)
        overhead, scale = self._call_overhead(), self._scale()
        return [scale * max(self.table.entries[key].median_ms - overhead, 0.0) for key, _, _ in keyed]

    def _measure(self, keyed: list[tuple[str, nn.Module, tuple[int, ...]]]) -> int:
        todo: dict[str, tuple[nn.Module, tuple[int, ...]]] = {}
        for key, module, shape in keyed:
            if key not in self.table.entries:
                todo.setdefault(key, (module, shape))
        if not todo:
            return 0
        self._check_measurable(list(todo))
        with self.progress(len(todo), f"measuring latency ({self.config.backend})") as advance:
            for key, (module, shape) in todo.items():
                t = self.backend.time(module, shape, self.config.min_run_time)
                self.table.entries[key] = LutEntry(median_ms=t.median_ms, p90_ms=t.p90_ms, runs=t.runs)
                self.save()  # a killed build keeps what it measured
                advance()
        return len(todo)

    def _keyed(self, items: Sequence[tuple[nn.Module, tuple[int, ...]]]
               ) -> list[tuple[str, nn.Module, tuple[int, ...]]]:
        """(table key, module, input shape at the configured batch size) per item."""
        keyed = []
        for module, shape in items:
            shape = self._shape(shape)
            keyed.append((entry_key(op_key(module), shape), module, shape))
        return keyed

    def _check_measurable(self, what: list[str]) -> None:
        shown = "\n".join(f"  {k}" for k in what[:5]) + (f"\n  ... and {len(what) - 5} more" if len(what) > 5
                                                          else "")
        where = f"latency table {self.config.lut}" if self.config.lut else "the latency table"
        if self._foreign:
            raise NascoreError(f"{where} was measured on another setup and lacks {len(what)} entries, which "
                               f"cannot be measured here:\n{shown}")
        if not self.config.measure_missing:
            raise NascoreError(f"{where} lacks {len(what)} entries and cost.measure_missing is false:\n{shown}\n"
                               "measure them with `nascore lut build SPEC`")

    # -- whole networks ----------------------------------------------------------------------
    def time_model(self, model: nn.Module, input_shape: tuple[int, ...],
                   min_run_time: float | None = None) -> Timing:
        """End-to-end latency of a built network (batch from the config)."""
        return self.backend.time(model, self._shape(input_shape), min_run_time or self.config.min_run_time)

    def measure(self, module: nn.Module, input_shape: tuple[int, ...]) -> float:
        return self.time_model(module, input_shape).median_ms


def fit_calibration(estimates: Sequence[float], measured: Sequence[float]) -> Calibration:
    """The median of measured / estimate: one robust parameter, as a few end-to-end timings on a busy machine
    are too noisy to fit more (a fitted offset made held-out archs worse in benchmarks/latency_fidelity.py)."""
    est, meas = np.asarray(estimates, dtype=float), np.asarray(measured, dtype=float)
    if len(est) < 2 or (est <= 0).any():
        raise NascoreError("calibration needs at least 2 archs with positive estimates")
    scale = float(np.median(meas / est))

    def error(pred: np.ndarray) -> float:
        return float(np.median(np.abs(pred - meas) / meas))

    return Calibration(scale=scale, archs=len(est), error_before=error(est), error_after=error(scale * est))


def calibrate(cost: LatencyCost, space: SearchSpace, archs: int, seed: int = 0, in_channels: int = 3
              ) -> Calibration:
    """Time ``archs`` random archs of ``space`` end to end and fit the table's calibration to them (stored in
    the table and saved)."""
    cost.table.calibration = None  # fit against the uncalibrated estimate
    size, decisions = space.input_size, space.decisions()
    table = space.supernet().price(cost, size, in_channels)
    rng = random.Random(seed)
    config = space.config.model_dump(mode="json")
    estimates, measured = [], []
    with cost.progress(archs, "calibrating on whole archs") as advance:
        for _ in range(archs):
            choices = {d.name: rng.choice(d.options) for d in decisions}
            model = space.build(Arch(space=space.name, config=config, choices=choices))
            estimates.append(table.of_choices(choices))
            measured.append(cost.time_model(model, (1, in_channels, size, size)).median_ms)
            advance()
    cost.table.calibration = fit_calibration(estimates, measured)
    cost.save()
    return cost.table.calibration


@dataclass(frozen=True)
class TableBuild:
    """What :func:`build_table` did: the table it wrote to ``path``, the operations it measured and those the table
    held already, and the seconds it took."""

    path: str
    table: LatencyTable
    measured: int
    before: int
    seconds: float


def build_table(spec: RunSpec, where: str, out: str | None = None, calibrate_archs: int = 8,
                progress: Progress = no_progress) -> TableBuild:
    """Time every candidate operation of ``spec``'s space that the table lacks (``out``, else the spec's cost.lut;
    an existing table is resumed), saving as it goes, then time ``calibrate_archs`` random archs end to end to fit
    the table's calibration (0: none; a table that has one keeps it). ``where``: the spec's file, for messages."""
    cost = spec.cost.create() if spec.cost else None
    if not isinstance(cost, LatencyCost):
        raise NascoreError(f"{where}: cost: `nascore lut build` needs a cost: {{name: latency, ...}} block, "
                           f"not {'none' if cost is None else repr(cost.name)}")
    out = out or cost.config.lut
    if out is None:
        raise NascoreError(f"{where}: give the table file with --out FILE or cost.lut in the spec")
    config = cost.config.model_copy(update={"lut": out, "measure_missing": True})  # building is measuring
    parts = Parts.build(spec)
    space, in_channels = parts.space, parts.info.in_channels
    with WriteLock.of_file(out):  # the table's one writer
        cost = type(cost)(config, progress=progress)
        before, start = len(cost.table.entries), time.perf_counter()
        space.supernet().price(cost, space.input_size, in_channels)  # measures what the table lacks, saving as it goes
        measured = len(cost.table.entries) - before
        cost.save()
        if calibrate_archs and cost.table.calibration is None:
            calibrate(cost, space, calibrate_archs, spec.seed, in_channels)
    return TableBuild(out, cost.table, measured, before, time.perf_counter() - start)


@hookimpl
def nascore_cost_models():
    return [LatencyCost]
