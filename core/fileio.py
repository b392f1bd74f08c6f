"""Atomic file writes (temp file in the same directory + rename) and safe checkpoint loading."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .errors import NascoreError


def _atomic(path: str | Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    _atomic(path, lambda f: f.write(text.encode()))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    _atomic(path, lambda f: f.write(data))


def save_checkpoint(obj: dict[str, Any], path: str | Path) -> None:
    _atomic(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; a missing or corrupt file is a NascoreError."""
    path = Path(path)
    if not path.is_file():
        raise NascoreError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle, zip and EOF errors all mean the same to a user
        raise NascoreError(f"checkpoint {path} is corrupt or not a nascore checkpoint: {exc}") from None
    if not isinstance(obj, dict):
        raise NascoreError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict")
    return obj
