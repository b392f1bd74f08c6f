"""``aio-p``: the GNN performance predictor of AIO-P (Mills et al., AAAI 2023), in PyTorch with torch_geometric.

A linear embedding of each node's features (``nascore.performance.graph``: op one-hot and shape numbers) to
``width``, then ``layers`` ``GraphConv`` layers (Morris et al.'s k-GNN, as the reference code) with tanh, a mean over
nodes, and an MLP of ``mlp_layers`` hidden layers of ``width`` with ReLU. The numeric node features are z-scored with
the fitting graphs' statistics first (``standardize_features``): ``nascore.performance.graph``'s fixed scales suit
224-pixel ImageNet networks, and the graphs of small inputs differ by a few hundredths in them. Trained with Adam on
the MSE of scaled labels, gradients clipped to norm 5 (as the reference). Labels are scaled by AIO-P's Eq. 5,
``y / (log10(GFLOPs + 1) + 1)`` (``flops_scaling``), then standardised with the fitting labels' mean and standard
deviation (Eq. 4); predictions are mapped back with the arch's own FLOPs. ``ranking_weight`` adds a pairwise
hinge loss on the batch's pairs (an arch with the higher label must be predicted higher by ``ranking_margin``, in
standardised units), for the ranking a search needs.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from nascore import hookimpl
from nascore.component import ComponentConfig, TorchDevice
from nascore.performance.graph import FEATURE_WIDTH, OPS
from nascore.predictor import Predictor, Sample, State, labels
from nascore.progress import Progress, no_progress

#: most GraphConv layers and MLP layers (each a module object: a file's config is checked against this first)
MAX_LAYERS = 64


def flops_scale(gflops: Tensor) -> Tensor:
    """AIO-P's Eq. 5 divisor: ``log10(GFLOPs + 1) + 1``."""
    return torch.log10(gflops + 1) + 1


class AIOPPredictor(Predictor):
    name: ClassVar[str] = "aio-p"

    class Config(ComponentConfig):
        width: int = Field(32, ge=1, description="node embedding and MLP width")
        layers: int = Field(6, ge=1, le=MAX_LAYERS, description="GraphConv layers")
        mlp_layers: int = Field(4, ge=0, le=MAX_LAYERS, description="hidden layers of the regressor MLP")
        epochs: int = Field(300, ge=1)
        batch_size: int = Field(32, ge=1)
        lr: float = Field(1e-4, gt=0, description="Adam learning rate")
        clip: float = Field(5.0, gt=0, description="gradient norm clipping")
        flops_scaling: bool = Field(True, description="divide labels by log10(GFLOPs + 1) + 1 (AIO-P Eq. 5)")
        standardize_features: bool = Field(True, description="z-score each numeric node feature with the fitting "
                                           "graphs' mean and deviation")
        readout: Literal["mean", "sum"] = Field("mean", description="how node embeddings become the graph's")
        ranking_weight: float = Field(0.0, ge=0, description="weight of the pairwise ranking hinge loss")
        ranking_margin: float = Field(0.1, ge=0, description="margin of the ranking loss, in standard deviations")
        device: TorchDevice = "cpu"

    def __init__(self, config=None):
        super().__init__(config)
        with torch.device("meta"):  # no memory: fit builds the network, load_state takes the file's weights
            self.network = self._network()
        self.mean, self.std = 0.0, 1.0
        self.feature_mean, self.feature_std = torch.zeros(FEATURE_WIDTH), torch.ones(FEATURE_WIDTH)

    def _network(self) -> nn.Module:
        from .gnn import GraphRegressor  # torch_geometric: imported when a predictor is made, not when listed

        c = self.config
        return GraphRegressor(FEATURE_WIDTH, c.width, c.layers, c.mlp_layers, c.readout)

    def _scale(self, samples: Sequence[Sample]) -> Tensor:
        gflops = torch.tensor([s.gflops for s in samples], dtype=torch.float64)
        return flops_scale(gflops) if self.config.flops_scaling else torch.ones_like(gflops)

    def to_standard(self, samples: Sequence[Sample], y: Tensor) -> Tensor:
        """Labels -> the standardised, FLOPs-scaled targets the network learns."""
        return (y / self._scale(samples) - self.mean) / self.std

    def from_standard(self, samples: Sequence[Sample], z: Tensor) -> Tensor:
        """The network's outputs -> labels in their own units (the inverse of ``to_standard``)."""
        return (z * self.std + self.mean) * self._scale(samples)

    def _batch(self, samples: Sequence[Sample], targets: Tensor | None = None):
        from .gnn import batch_of  # torch_geometric: as above

        batch = batch_of([s.graph for s in samples])
        batch.x = (batch.x - self.feature_mean) / self.feature_std
        batch = batch.to(self.config.device)
        if targets is not None:
            batch.y = targets.to(self.config.device, torch.float32)
        return batch

    def fit(self, samples: Sequence[Sample], generator: torch.Generator, progress: Progress = no_progress) -> None:
        c = self.config
        y = labels(samples)
        scaled = y / self._scale(samples)
        self.mean = float(scaled.mean())
        self.std = float(scaled.std()) if len(samples) > 1 and float(scaled.std()) > 0 else 1.0
        targets = self.to_standard(samples, y)
        self.feature_mean, self.feature_std = torch.zeros(FEATURE_WIDTH), torch.ones(FEATURE_WIDTH)
        if c.standardize_features:  # numeric columns only: the op one-hot stays 0/1
            x = torch.cat([s.graph.x for s in samples])
            numeric = slice(len(OPS), FEATURE_WIDTH)
            self.feature_mean[numeric] = x[:, numeric].mean(0)
            std = x[:, numeric].std(0)
            self.feature_std[numeric] = torch.where(std > 1e-6, std, torch.ones_like(std))  # constant: centred only
        seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.network = self._network()
        self.network.to(c.device).train()
        optimizer = torch.optim.Adam(self.network.parameters(), lr=c.lr)
        with progress(c.epochs, f"fit {self.name}") as advance:
            for _ in range(c.epochs):
                order = torch.randperm(len(samples), generator=generator).tolist()
                for start in range(0, len(order), c.batch_size):
                    idx = order[start:start + c.batch_size]
                    batch = self._batch([samples[i] for i in idx], targets[idx])
                    pred = self.network(batch.x, batch.edge_index, batch.batch)
                    loss = nn.functional.mse_loss(pred, batch.y)
                    if c.ranking_weight > 0 and len(idx) > 1:
                        loss = loss + c.ranking_weight * ranking_loss(pred, batch.y, c.ranking_margin)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    nn.utils.clip_grad_norm_(self.network.parameters(), c.clip)
                    optimizer.step()
                advance()
        self.network.eval()

    @torch.no_grad()
    def predict(self, samples: Sequence[Sample]) -> list[float]:
        if not samples:
            return []
        self.network.to(self.config.device).eval()
        out = []
        for start in range(0, len(samples), 256):
            part = samples[start:start + 256]
            batch = self._batch(part)
            z = self.network(batch.x, batch.edge_index, batch.batch).double().cpu()
            out += self.from_standard(part, z).tolist()
        return out

    def state(self) -> State:
        return {"network": {k: v.cpu() for k, v in self.network.state_dict().items()}, "mean": self.mean,
                "std": self.std, "feature_mean": self.feature_mean, "feature_std": self.feature_std,
                "vocab": list(OPS)}

    def load_state(self, state: State) -> None:
        if list(state["vocab"]) != list(OPS):
            raise ValueError("it was fitted on graphs of another op vocabulary; refit it with this nascore")
        load_weights(self.network, state["network"])
        self.mean, self.std = float(state["mean"]), float(state["std"])
        self.feature_mean, self.feature_std = state["feature_mean"].float(), state["feature_std"].float()
        if self.feature_mean.shape != (FEATURE_WIDTH,) or self.feature_std.shape != (FEATURE_WIDTH,) or \
                not bool((self.feature_std > 0).all()):
            raise ValueError(f"its feature mean and deviation must be {FEATURE_WIDTH} numbers, the deviations positive")
        if not (math.isfinite(self.mean) and math.isfinite(self.std) and self.std > 0):
            raise ValueError("its label mean and standard deviation must be finite, the deviation positive")


def load_weights(network: nn.Module, weights: dict[str, Tensor]) -> None:
    """A copy of ``weights`` becomes ``network``'s parameters, built on the meta device: their names and shapes
    are checked against the network (torch's "size mismatch for ...") before anything is allocated, so a config
    that declares a larger network than its weights allocates nothing."""
    network.load_state_dict({k: v.to(torch.float32, copy=True) for k, v in weights.items()}, assign=True)


def ranking_loss(pred: Tensor, target: Tensor, margin: float) -> Tensor:
    """Mean hinge over ordered pairs: ``relu(margin - (pred_i - pred_j))`` where ``target_i > target_j``."""
    better = target[:, None] > target[None, :]
    if not better.any():
        return pred.sum() * 0
    gaps = pred[:, None] - pred[None, :]
    return torch.relu(margin - gaps[better]).mean()


@hookimpl
def nascore_predictors():
    return [AIOPPredictor]
