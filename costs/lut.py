"""Latency lookup tables: measured latency per (operation configuration, input shape), stored as JSON with
the fingerprint of what measured them (device, runtime version, threads, dtype, batch size)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nascore.errors import NascoreError
from nascore.fileio import LUT_MAX_BYTES, atomic_write_text, load_user_json
from nascore.validation import format_validation_error

FORMAT = "nascore-latency-lut"


class LutEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    median_ms: float = Field(ge=0)
    p90_ms: float = Field(ge=0)
    runs: int = Field(ge=1)


class Calibration(BaseModel):
    """``measured = scale * estimate``, ``scale`` the median ratio over archs timed end to end (``nascore lut
    build --calibrate N``): what isolated timings miss, e.g. caches that are cold inside a whole network."""

    model_config = ConfigDict(extra="forbid")
    scale: float = Field(gt=0)
    archs: int = Field(ge=2)
    #: median |relative error| on those archs before and after calibrating
    error_before: float = Field(ge=0)
    error_after: float = Field(ge=0)


class LatencyTable(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal["nascore-latency-lut"] = FORMAT
    version: Literal[1] = 1
    fingerprint: dict[str, Any]
    #: latency of a call that computes nothing (the runtime's per-call cost), measured with the table
    overhead_ms: float | None = Field(None, ge=0)
    #: ``entry_key(op, shape)`` -> timing
    entries: dict[str, LutEntry] = Field(default_factory=dict)
    calibration: Calibration | None = None

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, self.model_dump_json(indent=1) + "\n")


def entry_key(op_key: str, input_shape: tuple[int, ...]) -> str:
    return f"{op_key} @ {'x'.join(str(d) for d in input_shape)}"


def load_table(path: str | Path) -> LatencyTable:
    """Read a table; a missing, unreadable, truncated or malformed file is a NascoreError naming it."""
    path = Path(path)
    hint = f"rebuild it with `nascore lut build SPEC --out {path}`"
    if not os.path.lexists(path):
        raise NascoreError(f"latency table {path} does not exist; build it with `nascore lut build SPEC`")
    try:
        data = load_user_json(path, "latency table", LUT_MAX_BYTES, finite=True)
    except NascoreError as exc:
        raise NascoreError(f"{exc}; {hint}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise NascoreError(f"latency table {path} is not a nascore latency table (expected \"format\": "
                           f"\"{FORMAT}\"); {hint}")
    try:
        return LatencyTable.model_validate(data)
    except ValidationError as exc:
        lines = format_validation_error(exc, model=LatencyTable)
        raise NascoreError(f"latency table {path} is malformed ({hint}):\n"
                           + "\n".join(f"  {line}" for line in lines[:10])) from None


def fingerprint_differences(table: dict[str, Any], here: dict[str, Any]) -> list[str]:
    """``field: table X, here Y`` for every fingerprint field that differs."""
    return [f"{k}: table {table.get(k)!r}, here {here.get(k)!r}"
            for k in sorted(set(table) | set(here)) if table.get(k) != here.get(k)]
