"""nascore: plugin-based neural architecture search for PyTorch."""
from .arch import Arch
from .component import Component, ComponentConfig
from .costs.base import CostModel
from .dataset import DataInfo, Dataset
from .errors import NascoreError
from .features import Backbone
from .hookspecs import hookimpl
from .space import SearchSpace
from .strategy import SearchContext, SearchStrategy
from .supernet import Choice, CostTable, Decision, Supernet
from .task import Network, Task
from .timm_models import register_timm_model

__version__ = "0.1.0"
__all__ = ["Arch", "Backbone", "Choice", "Component", "ComponentConfig", "CostModel", "CostTable", "DataInfo",
           "Dataset", "Decision", "NascoreError", "Network", "SearchContext", "SearchSpace", "SearchStrategy",
           "Supernet", "Task", "hookimpl", "register_timm_model"]


def _register_builtin_timm_models() -> None:
    """``timm.create_model("nascore_<name>")`` for the named archs of nascore's own spaces (plugin spaces'
    are registered when the registry loads them)."""
    from .spaces.fbnet import FBNetSpace
    from .spaces.fbnetv2 import FBNetV2Space
    from .timm_models import register_named_archs

    register_named_archs([FBNetSpace, FBNetV2Space])


_register_builtin_timm_models()
