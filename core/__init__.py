"""nascore: plugin-based neural architecture search for PyTorch."""
from .arch import Arch
from .component import Component, ComponentConfig
from .costs.base import CostModel
from .data import loader, to_device
from .dataset import DataInfo, Dataset
from .errors import NascoreError
from .features import Backbone
from .hookspecs import hookimpl
from .loops import check_finite, task_losses
from .space import SearchSpace
from .strategy import SearchContext, SearchStrategy, evaluate_arch
from .supernet import Choice, CostTable, Decision, Supernet
from .task import Network, Task
from .timm_models import register_timm_model

__version__ = "0.1.0"
# check_finite, evaluate_arch, loader, task_losses, to_device: what a search strategy's loop is made of
# (CONTRIBUTING.md, "Part 2: a search strategy")
__all__ = ["Arch", "Backbone", "Choice", "Component", "ComponentConfig", "CostModel", "CostTable", "DataInfo",
           "Dataset", "Decision", "NascoreError", "Network", "SearchContext", "SearchSpace", "SearchStrategy",
           "Supernet", "Task", "check_finite", "evaluate_arch", "hookimpl", "loader", "register_timm_model",
           "task_losses", "to_device"]


def _register_builtin_timm_models() -> None:
    """``timm.create_model("nascore_<name>")`` for the named archs of nascore's own spaces (plugin spaces'
    are registered when the registry loads them)."""
    from .spaces.fbnet import FBNetSpace
    from .spaces.fbnetv2 import FBNetV2Space
    from .timm_models import register_named_archs

    register_named_archs([FBNetSpace, FBNetV2Space])


_register_builtin_timm_models()
