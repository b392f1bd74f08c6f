"""Task components: a head over backbone features, a loss, and metrics."""
from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .component import Component
from .dataset import DataInfo
from .errors import NascoreError
from .features import Backbone, PreLogits
from .protocols import MultiTaskBackbone
from .supernet import Supernet


class Task(Component):
    kind: ClassVar[str] = "task"
    #: key of the targets dict this task learns from
    target: ClassVar[str]
    #: name of the metric that ranks models (a key of ``compute_metrics``' result)
    primary_metric: ClassVar[str]
    #: whether a larger primary metric is better (accuracy) or worse (an error)
    higher_is_better: ClassVar[bool] = True

    @abstractmethod
    def build_head(self, feature_info: list[dict], pre_logits: PreLogits | None, data: DataInfo) -> nn.Module:
        """The task's head over features described by ``feature_info``; ``pre_logits`` is the backbone's
        classifier widening (classification heads use it, dense heads may ignore it)."""

    def configured_classes(self) -> int | None:
        """The number of classes the task's config sets, None for the dataset's: a task with a ``num_classes``
        option returns it."""
        return None

    def num_classes(self, data: DataInfo | None) -> int:
        """``configured_classes()`` when set, else the dataset's for ``target``."""
        configured = self.configured_classes()
        if configured is not None:
            return configured
        if data is None:
            raise ValueError("num_classes is needed when no dataset is given")
        return data.num_classes[self.target]

    @abstractmethod
    def loss(self, output: Any, targets: dict[str, Any]) -> Tensor:
        """The scalar loss of the head's ``output`` against the batch's ``targets``."""

    @abstractmethod
    def metrics(self, device: torch.device) -> Any:
        """A fresh torchmetrics Metric/MetricCollection; updated with ``update_metrics``."""

    def update_metrics(self, metrics: Any, output: Any, targets: dict[str, Any]) -> None:
        metrics.update(output, targets[self.target])

    def compute_metrics(self, metrics: Any) -> dict[str, float]:
        out = metrics.compute()
        if isinstance(out, dict):
            return {k: float(v) for k, v in out.items()}
        return {self.primary_metric: float(out)}


class Network(nn.Module):
    """A backbone (supernet or built model) with one head per task; returns outputs by task name.

    A :class:`~nascore.protocols.MultiTaskBackbone` returns its features as a dict by task name and each head
    reads its own; otherwise every head reads the one list of feature levels.
    """

    def __init__(self, backbone: Backbone | Supernet, heads: dict[str, nn.Module]):
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict(heads)
        self.per_task = isinstance(backbone, MultiTaskBackbone)

    def forward(self, x: Tensor) -> dict[str, Any]:
        features = self.backbone(x)
        if self.per_task:
            return {name: head(features[name]) for name, head in self.heads.items()}
        return {name: head(features) for name, head in self.heads.items()}


def build_network(backbone: Backbone | Supernet, tasks: list[Task], data: DataInfo) -> Network:
    if isinstance(backbone, MultiTaskBackbone) and sorted(backbone.tasks) != sorted(t.name for t in tasks):
        raise NascoreError(f"the backbone computes features for tasks {', '.join(backbone.tasks)}, but the spec's "
                           f"tasks are {', '.join(t.name for t in tasks)}; list the same tasks")
    return Network(backbone, {t.name: t.build_head(backbone.feature_info, backbone.pre_logits, data) for t in tasks})
