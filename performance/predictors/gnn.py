"""The GNN of the ``aio-p`` predictor, with torch_geometric (imported only where a predictor is made)."""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn

with warnings.catch_warnings():  # torch_geometric's import warns about torch.jit.script, which it uses
    warnings.simplefilter("ignore", FutureWarning)
    from torch_geometric.data import Batch, Data
    from torch_geometric.nn import GraphConv, global_add_pool, global_mean_pool


class GraphRegressor(nn.Module):
    """Embedding, GraphConv x ``layers`` with tanh, mean (or sum) readout, MLP: one number per graph."""

    def __init__(self, in_features: int, width: int, layers: int, mlp_layers: int, readout: str = "mean"):
        super().__init__()
        self.readout = global_add_pool if readout == "sum" else global_mean_pool
        self.embed = nn.Linear(in_features, width)
        self.convs = nn.ModuleList(GraphConv(width, width) for _ in range(layers))
        mlp: list[nn.Module] = []
        for _ in range(mlp_layers):
            mlp += [nn.Linear(width, width), nn.ReLU()]
        self.mlp = nn.Sequential(*mlp, nn.Linear(width, 1))

    def embedding(self, x: Tensor, edge_index: Tensor, batch: Tensor) -> Tensor:
        """The graph embeddings (graphs x width)."""
        h = self.embed(x)
        for conv in self.convs:
            h = torch.tanh(conv(h, edge_index))
        return self.readout(h, batch)

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor) -> Tensor:
        return self.mlp(self.embedding(x, edge_index, batch)).squeeze(-1)


def batch_of(graphs: Sequence) -> Batch:
    """One batch of graphs (their ``x`` and ``edge_index`` only)."""
    return Batch.from_data_list([Data(x=g.x, edge_index=g.edge_index, num_nodes=g.num_nodes) for g in graphs])
