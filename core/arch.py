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

#: the largest network (parameters) and input (pixels a side) an arch may describe: checked before it is built
MAX_PARAMETERS = 1 << 30
MAX_INPUT_SIZE = 8192


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
    _check_size(space, arch, where)
    return space


def _check_size(space, arch: Arch, where: str) -> None:
    """Refuse an arch whose sizes (its space's config: channels, blocks, input size) describe a network larger than
    ``MAX_PARAMETERS`` or an input larger than ``MAX_INPUT_SIZE``; the network is built on the meta device, which
    allocates nothing. Counted: the backbone and the pre-logits conv that a classifier adds to it."""
    import torch  # only where an arch is checked: `nascore --help` loads no torch

    from .features import Backbone

    if space.input_size > MAX_INPUT_SIZE:
        raise NascoreError(f"{where}: input_size {space.input_size}; expected at most {MAX_INPUT_SIZE}")
    try:
        with torch.device("meta"):
            backbone = space.build(arch)
    except Exception:  # noqa: BLE001 - a space that cannot build on the meta device: its real build says what fails
        return
    n = sum(p.numel() for p in backbone.parameters())
    if isinstance(backbone, Backbone) and backbone.pre_logits is not None:
        n += backbone.feature_info[-1]["num_chs"] * backbone.pre_logits.num_features
    if n > MAX_PARAMETERS:
        raise NascoreError(f"{where} describes a network of {n:,} parameters; expected at most {MAX_PARAMETERS:,}")
