"""Search-space components: decisions, a supernet for searching, and standalone models for archs."""
from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

from pydantic import Field, ValidationError

from .arch import Arch
from .component import Component, ComponentConfig
from .errors import NascoreError
from .features import Backbone
from .supernet import Decision, Operation, Supernet
from .validation import format_validation_error

#: most stages, blocks per stage and options per list that a space's config may declare: a spec's or arch file's
#: word (a run directory's spec.yaml too), checked before a list of decisions or a network is made of it
MAX_STAGES, MAX_BLOCKS, MAX_OPTIONS = 32, 64, 64


class SpaceConfig(ComponentConfig):
    """Base of every space's ``Config``: the input resolution its costs are priced at (and built archs are sized for).

    A space redeclares ``input_size`` with its own default and bounds where it wants; its fields keep the order the
    space declares them in (pydantic puts a base's fields first), so config dumps and ``nascore schema`` read as the
    space wrote them."""

    input_size: int = Field(224, ge=1, description="input resolution the costs are priced at")

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        own = list(cls.__dict__.get("__annotations__", {}))
        if "input_size" in own:
            fields = cls.__pydantic_fields__
            cls.__pydantic_fields__ = {name: fields[name] for name in own} | fields
            cls.model_rebuild(force=True)


class SearchSpace(Component):
    kind: ClassVar[str] = "space"
    Config: ClassVar[type[SpaceConfig]] = SpaceConfig
    #: file name of a found arch that all tasks share (per-task archs are ``arch_<task>.json``)
    arch_file: ClassVar[str] = "arch.json"

    @abstractmethod
    def decisions(self) -> list[Decision]:
        """The space's decisions, as its supernet lists them."""

    @abstractmethod
    def supernet(self) -> Supernet:
        """A fresh supernet of the space, every decision's options in it."""

    @abstractmethod
    def build(self, arch: Arch) -> Backbone:
        """A standalone backbone for ``arch`` with no supernet code in it."""

    def arch_operations(self, arch: Arch, input_size: int, in_channels: int = 3) -> list[Operation]:
        """The operations ``arch`` runs, at their input shapes (batch 1), as a cost table prices them: by default
        the supernet's fixed parts and the candidates the arch chose."""
        return [op for op in self.supernet().operations(input_size, in_channels)
                if op.decision is None or arch.choices[op.decision] == op.option]

    def reference_archs(self) -> dict[str, dict[str, str]]:
        """Choices of archs a found arch is compared against, trained with the same budget (``train.references``);
        the first is the baseline of the relative task performance. None by default."""
        return {}

    def describe(self, arch: Arch) -> list[tuple[str, str]]:
        """Rows (decision, choice) that show ``arch`` to a user; by default its choices."""
        return list(arch.choices.items())

    def arch_config(self) -> dict[str, Any]:
        """The config an arch file records: every field of the space's config but those that shape only the supernet
        (declared with ``json_schema_extra={"arch": False}``), so archs found either way are equal."""
        fields = type(self.config).model_fields
        return self.config.model_dump(mode="json", exclude={name for name, f in fields.items()
                                                            if isinstance(f.json_schema_extra, dict)
                                                            and f.json_schema_extra.get("arch") is False})

    @property
    def input_size(self) -> int:
        return self.config.input_size

    @classmethod
    def named_archs(cls) -> dict[str, Arch]:
        """Published architectures of this space by name (e.g. ``fbnet_c``)."""
        return {}

    @classmethod
    def for_arch(cls, arch: Arch, **overrides) -> SearchSpace:
        """The space instance an arch was found in, its config optionally overridden (e.g. input size)."""
        if arch.space != cls.name:
            raise NascoreError(f"arch belongs to space '{arch.space}', not '{cls.name}'")
        try:
            config = cls.Config.model_validate({**arch.config, **overrides})
        except ValidationError as exc:
            raise NascoreError("arch config is not valid for space "
                               f"'{cls.name}':\n" + "\n".join(f"  {line}" for line in
                                                              format_validation_error(exc, "config", model=cls.Config))) from None
        return cls(config)

    def check_arch(self, arch: Arch) -> None:
        """Raise a NascoreError naming the first decision an arch gets wrong."""
        known = {d.name: d for d in self.decisions()}
        for name in arch.choices:
            if name not in known:
                raise NascoreError(f"choices.{name}: not a decision of space '{self.name}'")
        for d in known.values():
            if d.name not in arch.choices:
                raise NascoreError(f"choices.{d.name}: missing (options: {', '.join(d.options)})")
            if arch.choices[d.name] not in d.options:
                raise NascoreError(f"choices.{d.name}: {arch.choices[d.name]!r} is not one of "
                                   f"{', '.join(d.options)}")
