"""Component base classes: every plugin contribution has a unique ``name`` and a pydantic ``Config``."""
from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class ComponentConfig(BaseModel):
    """Base of every component's ``Config``: unknown keys are errors, so typos in a spec are caught."""

    model_config = ConfigDict(extra="forbid")


class Component:
    """A named, configurable plugin contribution. Subclasses set ``name`` and ``Config``."""

    kind: ClassVar[str] = "component"
    name: ClassVar[str]
    Config: ClassVar[type[ComponentConfig]] = ComponentConfig

    def __init__(self, config: ComponentConfig | dict[str, Any] | None = None):
        if config is None or isinstance(config, dict):
            config = self.Config.model_validate(config or {})
        self.config = config
