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

__version__ = "0.1.0"
__all__ = ["Arch", "Backbone", "Choice", "Component", "ComponentConfig", "CostModel", "CostTable", "DataInfo",
           "Dataset", "Decision", "NascoreError", "Network", "SearchContext", "SearchSpace", "SearchStrategy",
           "Supernet", "Task", "hookimpl"]
