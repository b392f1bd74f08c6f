"""``Arch``: plain data naming a space, its config, and the chosen option per decision (``arch.json``)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import NascoreError
from .fileio import ARCH_MAX_BYTES, atomic_write_text, load_user_json
from .registry import get_registry, unknown_name_message
from .validation import format_validation_error


class Arch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    space: str = Field(min_length=1)
    config: dict[str, Any] = Field(default_factory=dict)
    choices: dict[str, str]
    task: str | None = None  # the owner: a task, or None (nascore.SHARED) for an arch all tasks share
    name: str | None = None

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, self.model_dump_json(indent=2, exclude_none=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Arch:
        path = Path(path)
        data = load_user_json(path, "arch file", ARCH_MAX_BYTES)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise NascoreError(f"arch file {path} is not a valid arch:\n"
                               + "\n".join(f"  {line}" for line in format_validation_error(exc, model=cls))) from None


def is_arch_file(ref: str) -> bool:
    """``ref`` names a file (anything at that path, a dangling symlink too, or a .json name), not a named arch."""
    return Path(ref).suffix == ".json" or os.path.lexists(ref)


def resolve_arch(ref: str, registry=None) -> Arch:
    """An arch from a JSON file path or a named arch of any installed space (e.g. ``fbnet_c``)."""
    if is_arch_file(ref):
        return Arch.load(ref)
    registry = registry or get_registry()
    named: dict[str, Arch] = {}
    for space_name in registry.names("space"):
        named.update(registry.get("space", space_name).named_archs())
    if ref in named:
        return named[ref]
    raise NascoreError(f"'{ref}' is neither an arch file nor a named arch; "
                       + unknown_name_message("named arch", ref, sorted(named)).split("; ", 1)[1])


def arch_space(arch: Arch, ref: str, registry=None, input_size: int | None = None):
    """The space instance ``arch`` was found in (at ``input_size`` when given), after
    checking the arch against it; errors name the arch (``ref``: its file or name) and the field."""

    registry = registry or get_registry()
    where = f"arch file {ref}" if is_arch_file(ref) else f"arch '{ref}'"
    try:
        space_cls = registry.get("space", arch.space)
    except NascoreError as exc:
        raise NascoreError(f"{where}: space: {exc}") from None
    overrides = {"input_size": input_size} if input_size else {}
    try:
        space = space_cls.for_arch(arch, **overrides)
        space.check_arch(arch)
    except NascoreError as exc:
        raise NascoreError(f"{where}: {exc}") from None
    return space
