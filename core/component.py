"""Component base classes: every plugin contribution has a unique ``name`` and a pydantic ``Config``."""
from __future__ import annotations

from abc import ABC
from typing import Annotated, Any, ClassVar

import torch
from pydantic import AfterValidator, BaseModel, ConfigDict

#: the distribution whose plugin registered each component class (the registry fills it as it loads plugins): how
#: a message about what a component handed back names the plugin (``nascore.checks``)
DISTRIBUTIONS: dict[type, str] = {}

def _torch_device(value: str) -> str:
    """A device torch understands (whether it is present is checked when it is used)."""
    try:
        torch.device(value)
    except (RuntimeError, ValueError):
        raise ValueError(f"'{value}' is not a torch device; expected e.g. cpu, cuda, cuda:1, mps") from None
    return value


#: a device name for spec fields and component options, checked by ``torch.device``
TorchDevice = Annotated[str, AfterValidator(_torch_device)]


class ComponentConfig(BaseModel):
    """Base of every component's ``Config``: unknown keys are errors, so typos in a spec are caught."""

    model_config = ConfigDict(extra="forbid")


class Component(ABC):
    """A named, configurable plugin contribution. Subclasses set ``name`` and ``Config``; each family's base class
    (``SearchSpace``, ``Task``, ...) declares what a component of it implements as abstract methods."""

    kind: ClassVar[str] = "component"
    name: ClassVar[str]
    Config: ClassVar[type[ComponentConfig]] = ComponentConfig

    def __init__(self, config: ComponentConfig | dict[str, Any] | None = None):
        if config is None or isinstance(config, dict):
            config = self.Config.model_validate(config or {})
        self.config = config
