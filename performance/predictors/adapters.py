"""``aio-p-adapters``: an ``aio-p`` GNN with K-Adapters, and the transfer of a fitted predictor to a new task or
space with a few labelled archs (AIO-P, Mills et al., AAAI 2023, "K-Adapters for Knowledge Infusion" and
"Fine-Tuning").

The base is a fitted ``aio-p`` (its ``GraphRegressor``, label and node-feature scaling). An adapter pairs each of
the base's GraphConv layers with one of its own: adapter layer ``i`` takes ``concat(a[i-1], b[i])``, where ``b[i]``
is the output of base layer ``i`` and ``a[-1]`` is the base's node embedding (the paper re-uses the embedding
layer), so its input is ``2 * width`` and its output ``width``; tanh, then the base's readout (mean by default).
Its own MLP head (``mlp_layers`` hidden layers of ``width``) maps ``concat(base graph embedding, adapter graph
embedding)`` to one standardised label. With K adapters the prediction is the mean of their K heads (the base's
own MLP head is set aside); with none it is the base's head.

- ``adapt``: one new adapter and head trained on labelled archs of a source task or space, the base and the
  other adapters frozen (each adapter only sees the backbone, so their order does not matter).
- ``fine_tune``: a few labelled archs of the target; labels FLOPs-scaled and standardised with the target's own
  statistics (``AIOPPredictor.to_standard``), node features with the base's. ``train`` picks what learns:
  ``heads+base`` (the paper's choice: heads and base GNN, adapters frozen), ``heads``, ``heads+adapters``.

``transfer_file`` and ``adapt_file`` are ``nascore predictor transfer`` and ``adapt`` on predictor files.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn

from nascore import hookimpl
from nascore.errors import NascoreError, SpecError
from nascore.predictor import Predictor, Sample, State, labels
from nascore.progress import Progress, no_progress
from nascore.registry import get_registry
from nascore.spec import validate_component

from .aiop import AIOPPredictor, load_weights, ranking_loss
from .file import PredictorFile, TaskPredictors
from .fitting import baseline_names, task_samples

if TYPE_CHECKING:
    from nascore.performance.perfdata import PerfDataset
    from nascore.registry import Registry

    from .file import PredictorFile, TaskPredictors

#: what ``fine_tune`` may train; the first is AIO-P's (adapters frozen, base unfrozen)
TRAIN_MODES = ("heads+base", "heads", "heads+adapters")
#: options that are the base's: a file's base keeps them (``--set`` may change only the adapter and fine-tune ones)
BASE_OPTIONS = tuple(n for n in AIOPPredictor.Config.model_fields
                     if n not in ("device", "clip", "ranking_weight", "ranking_margin"))


class Adapter(nn.Module):
    """One K-Adapter: GraphConv(2 width -> width) per base layer, readout, MLP head over both graph embeddings."""
    def __init__(self, width: int, layers: int, mlp_layers: int, readout: str = "mean"):
        super().__init__()
        from .gnn import GraphConv, global_add_pool, global_mean_pool  # torch_geometric: only when one is made

        self.readout = global_add_pool if readout == "sum" else global_mean_pool
        self.convs = nn.ModuleList(GraphConv(2 * width, width) for _ in range(layers))
        mlp: list[nn.Module] = []
        size = 2 * width
        for _ in range(mlp_layers):
            mlp += [nn.Linear(size, width), nn.ReLU()]
            size = width
        self.head = nn.Sequential(*mlp, nn.Linear(size, 1))

    def forward(self, embedded: Tensor, base_layers: Sequence[Tensor], base_graph: Tensor, edge_index: Tensor,
                batch: Tensor) -> Tensor:
        a = embedded
        for conv, b in zip(self.convs, base_layers):
            a = torch.tanh(conv(torch.cat([a, b], -1), edge_index))
        return self.head(torch.cat([base_graph, self.readout(a, batch)], -1)).squeeze(-1)


class AdaptedPredictor(Predictor):
    """An ``aio-p`` base with K adapters; ``fit`` fits the base alone (K = 0), as ``aio-p`` does."""
    name: ClassVar[str] = "aio-p-adapters"

    class Config(AIOPPredictor.Config):
        adapter_epochs: int = Field(100, ge=1, description="epochs of training one adapter (adapt)")
        adapter_batch_size: int = Field(32, ge=1)
        adapter_lr: float = Field(1e-4, gt=0, description="Adam learning rate of adapter training")
        fine_tune_epochs: int = Field(100, ge=1, description="epochs of fine-tuning on the target's archs")
        fine_tune_batch_size: int = Field(1, ge=1)
        fine_tune_lr: float = Field(1e-4, gt=0, description="Adam learning rate of fine-tuning")

    def __init__(self, config=None):
        super().__init__(config)
        self.base = AIOPPredictor(self.config.model_dump(include=set(AIOPPredictor.Config.model_fields)))
        self.adapters = nn.ModuleList()
        self.sources: list[dict[str, Any]] = []  # per adapter: what it was trained on
        self.tuned: dict[str, Any] = {}  # what the last fine-tuning was

    @classmethod
    def of(cls, predictor: Predictor, options: dict[str, Any] | None = None) -> AdaptedPredictor:
        """A new adapted predictor from a fitted ``aio-p`` (K = 0) or a copy of an adapted one; ``options`` are
        its Config's, the base's options taken from ``predictor``."""
        if not isinstance(predictor, (AIOPPredictor, AdaptedPredictor)):
            raise TypeError(f"an {cls.name} predictor is made from aio-p or {cls.name}, not {predictor.name}")
        config = {**(options or {}), **predictor.config.model_dump(include=set(BASE_OPTIONS))}
        new = cls(config)
        state = predictor.state()
        new.load_state(state if isinstance(predictor, AdaptedPredictor) else {"base": state, "adapters": []})
        return new

    # -- the network ---------------------------------------------------------------------------------------
    def _adapter(self) -> Adapter:
        c = self.config
        return Adapter(c.width, c.layers, c.mlp_layers, c.readout)

    def _backbone(self, batch) -> tuple[Tensor, list[Tensor], Tensor]:
        """The base's node embedding, each GraphConv layer's output, and its graph embedding."""
        net = self.base.network
        h = embedded = net.embed(batch.x)
        layers = []
        for conv in net.convs:
            h = torch.tanh(conv(h, batch.edge_index))
            layers.append(h)
        return embedded, layers, net.readout(h, batch.batch)

    def _outputs(self, batch) -> Tensor:
        """Standardised predictions of each head (heads x graphs): the K adapters', or the base's if K = 0."""
        embedded, layers, graph = self._backbone(batch)
        if not len(self.adapters):
            return self.base.network.mlp(graph).squeeze(-1)[None]
        return torch.stack([a(embedded, layers, graph, batch.edge_index, batch.batch) for a in self.adapters])

    def _train(self, params: list[nn.Parameter], samples: Sequence[Sample], targets: Tensor,
               forward: Callable[[Any], Tensor], epochs: int, batch_size: int, lr: float,
               generator: torch.Generator, progress: Progress, what: str) -> None:
        """Adam on the MSE (and the ranking loss, if set) of ``forward`` with only ``params`` learning."""
        c = self.config
        modules = [self.base.network, self.adapters]
        trainable = {id(p) for p in params}
        for m in modules:
            m.to(c.device).train()
            for p in m.parameters():
                p.requires_grad_(id(p) in trainable)
        optimizer = torch.optim.Adam(params, lr=lr)
        try:
            with progress(epochs, what) as advance:
                for _ in range(epochs):
                    order = torch.randperm(len(samples), generator=generator).tolist()
                    for start in range(0, len(order), batch_size):
                        idx = order[start:start + batch_size]
                        batch = self.base._batch([samples[i] for i in idx], targets[idx])
                        pred = forward(batch)
                        loss = nn.functional.mse_loss(pred, batch.y)
                        if c.ranking_weight > 0 and len(idx) > 1:
                            loss = loss + c.ranking_weight * ranking_loss(pred, batch.y, c.ranking_margin)
                        optimizer.zero_grad(set_to_none=True)
                        loss.backward()
                        nn.utils.clip_grad_norm_(params, c.clip)
                        optimizer.step()
                    advance()
        finally:
            for m in modules:
                m.eval()
                for p in m.parameters():
                    p.requires_grad_(True)

    @staticmethod
    def _seeded(generator: torch.Generator, make: Callable[[], nn.Module]) -> nn.Module:
        seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return make()

    def _standardise(self, samples: Sequence[Sample], y: Tensor) -> None:
        """The label mean and deviation (after FLOPs scaling) become ``samples``'s, as ``aio-p``'s fit sets them."""
        self.base.mean, self.base.std = 0.0, 1.0
        scaled = self.base.to_standard(samples, y)  # with mean 0 and deviation 1: the FLOPs-scaled labels
        std = float(scaled.std()) if len(samples) > 1 else 0.0
        self.base.mean, self.base.std = float(scaled.mean()), std if std > 0 else 1.0

    # -- learning ------------------------------------------------------------------------------------------
    def fit(self, samples: Sequence[Sample], generator: torch.Generator, progress: Progress = no_progress) -> None:
        """The base alone, as ``aio-p`` fits it (K = 0)."""
        self.base.fit(samples, generator, progress)
        self.adapters, self.sources, self.tuned = nn.ModuleList(), [], {}

    def adapt(self, samples: Sequence[Sample], generator: torch.Generator, source: dict[str, Any] | None = None,
              progress: Progress = no_progress) -> None:
        """Train one more adapter and its head on ``samples`` (labelled archs of a source), everything else
        frozen. Their labels are standardised with their own statistics for this training only."""
        c = self.config
        y = labels(samples)
        mean, std = self.base.mean, self.base.std
        self._standardise(samples, y)
        targets = self.base.to_standard(samples, y)
        source = {**(source or {}), "archs": len(samples), "mean": self.base.mean, "std": self.base.std}
        self.base.mean, self.base.std = mean, std
        adapter = self._seeded(generator, self._adapter).to(c.device)
        self.adapters.append(adapter)

        def forward(batch):
            with torch.no_grad():
                embedded, layers, graph = self._backbone(batch)
            return adapter(embedded, layers, graph, batch.edge_index, batch.batch)

        try:
            self._train(list(adapter.parameters()), samples, targets, forward, c.adapter_epochs,
                        c.adapter_batch_size, c.adapter_lr, generator, progress, f"adapter {len(self.adapters)}")
        except BaseException:
            del self.adapters[-1]
            raise
        self.sources.append(source)

    def trainable(self, train: str) -> list[nn.Parameter]:
        """The parameters ``fine_tune`` trains in mode ``train`` (one of ``TRAIN_MODES``)."""
        if train not in TRAIN_MODES:
            raise ValueError(f"train must be one of {', '.join(TRAIN_MODES)}, not {train!r}")
        net = self.base.network
        heads = [p for a in self.adapters for p in a.head.parameters()] if len(self.adapters) else \
            list(net.mlp.parameters())
        if train == "heads+base":
            return heads + list(net.embed.parameters()) + list(net.convs.parameters())
        if train == "heads+adapters":
            return heads + [p for a in self.adapters for p in a.convs.parameters()]
        return heads

    def fine_tune(self, samples: Sequence[Sample], generator: torch.Generator, train: str = "heads+base",
                  progress: Progress = no_progress) -> None:
        """Fine-tune on the target's labelled ``samples`` (labels standardised with their own statistics) on the
        MSE of the mean of the heads. With no adapters the head is the base's MLP, and ``heads+adapters`` is
        ``heads``."""
        c = self.config
        params = self.trainable(train)
        y = labels(samples)
        self._standardise(samples, y)
        targets = self.base.to_standard(samples, y)
        self._train(params, samples, targets, lambda batch: self._outputs(batch).mean(0), c.fine_tune_epochs,
                    c.fine_tune_batch_size, c.fine_tune_lr, generator, progress, f"fine-tune {train}")
        self.tuned = {"train": train, "archs": len(samples)}

    # -- predicting ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def head_predictions(self, samples: Sequence[Sample]) -> list[list[float]]:
        """Each head's predictions (the K adapters', or the base's alone), in the label's units."""
        self.base.network.to(self.config.device).eval()
        self.adapters.to(self.config.device).eval()
        heads: list[list[float]] = [[] for _ in range(max(len(self.adapters), 1))]
        for start in range(0, len(samples), 256):
            part = samples[start:start + 256]
            z = self._outputs(self.base._batch(part)).double().cpu()
            for h, row in zip(heads, z):
                h += self.base.from_standard(part, row).tolist()
        return heads

    @torch.no_grad()
    def predict(self, samples: Sequence[Sample]) -> list[float]:
        if not samples:
            return []
        self.base.network.to(self.config.device).eval()
        self.adapters.to(self.config.device).eval()
        out: list[float] = []
        for start in range(0, len(samples), 256):
            part = samples[start:start + 256]
            z = self._outputs(self.base._batch(part)).double().mean(0).cpu()
            out += self.base.from_standard(part, z).tolist()
        return out

    def state(self) -> State:
        return {"base": self.base.state(),
                "adapters": [{"network": {k: v.cpu() for k, v in a.state_dict().items()}, "source": dict(s)}
                             for a, s in zip(self.adapters, self.sources)],
                "tuned": dict(self.tuned)}

    def load_state(self, state: State) -> None:
        self.base.load_state(state["base"])
        adapters = nn.ModuleList()
        for entry in state["adapters"]:
            with torch.device("meta"):  # no memory: the file's weights become its parameters
                adapter = self._adapter()
            load_weights(adapter, entry["network"])
            adapters.append(adapter)
        self.adapters = adapters
        self.sources = [dict(entry["source"]) for entry in state["adapters"]]
        self.tuned = dict(state.get("tuned") or {})


@hookimpl
def nascore_predictors():
    return [AdaptedPredictor]


# -- predictor files -----------------------------------------------------------------------------------------
def _options(file: PredictorFile, where: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The adapted predictor's options: the file's (an aio-p file's are the base's) with ``overrides``, which may
    not touch the base's."""

    fixed = sorted(set(overrides) & set(BASE_OPTIONS))
    if fixed:
        raise NascoreError(f"--set {', '.join(fixed)}: the base's option{'s' if len(fixed) > 1 else ''}, fixed by "
                           f"{where}; set the adapter_* and fine_tune_* options (e.g. --set fine_tune_epochs=200)")
    options = {**file.config, **overrides}
    try:
        validate_component(AdaptedPredictor, options, "")
    except SpecError as exc:
        raise NascoreError(f"options of predictor '{AdaptedPredictor.name}' (the file's and --set) are not valid:\n"
                           + "\n".join(f"  {line}" for line in exc.errors)) from None
    return options


def _base(file: PredictorFile, where: str, base_task: str | None) -> tuple[str, TaskPredictors]:
    """The file's task entry to start from (``base_task``, or its only one), with an aio-p or adapted predictor."""
    if file.name not in (AIOPPredictor.name, AdaptedPredictor.name):
        raise NascoreError(f"{where} holds a '{file.name}' predictor; adapters and transfer start from an "
                           f"'{AIOPPredictor.name}' or '{AdaptedPredictor.name}' file (nascore predictor fit)")
    if base_task is None and len(file.tasks) == 1:
        base_task = next(iter(file.tasks))
    if base_task not in file.tasks:
        raise NascoreError(f"--base-task {base_task or '(none)'}: {where} predicts {', '.join(file.tasks)}; "
                           "name one of them")
    return base_task, file.tasks[base_task]


def _target(datasets: Sequence[PerfDataset], file: PredictorFile, where: str, task: str | None
            ) -> tuple[str, dict[str, Any], list[tuple[Sample, str]]]:
    """The datasets' task (``task``, or their only one): its label definition and labelled samples with keys;
    the datasets must measure archs at the file's input size."""

    for ds in datasets:
        m = ds.manifest
        if (m.input_size, m.in_channels) != (file.input_size, file.in_channels):
            raise NascoreError(f"{ds.directory} measured archs at {m.in_channels}x{m.input_size}x{m.input_size}, "
                               f"{where} was fitted at {file.in_channels}x{file.input_size}x{file.input_size}; "
                               "graphs of another input size are not the ones it learned")
    found = task_samples(datasets)
    if task is None and len(found) == 1:
        task = next(iter(found))
    if task not in found:
        raise NascoreError(f"--task {task or '(none)'}: the datasets label {', '.join(found)}; name one of them")
    definition, pairs = found[task]
    return task, definition, pairs


def _source(datasets: Sequence[PerfDataset], task: str) -> dict[str, Any]:
    return {"task": task, "spaces": sorted({ds.manifest.space.name for ds in datasets}),
            "data": [str(ds.directory) for ds in datasets]}


def adapt_file(file: PredictorFile, where: str, datasets: Sequence[PerfDataset], task: str | None = None,
               base_task: str | None = None, overrides: dict[str, Any] | None = None, seed: int = 0,
               progress: Progress = no_progress) -> PredictorFile:
    """``file``'s predictor of ``base_task`` with one more adapter, trained on every labelled arch of ``task`` in
    ``datasets``; an ``aio-p-adapters`` file of that one base task (its label, baselines and fitted archs)."""

    base_task, entry = _base(file, where, base_task)
    options = _options(file, where, overrides or {})
    task, _, pairs = _target(datasets, file, where, task)
    if len(pairs) < 2:
        raise NascoreError(f"task '{task}': {len(pairs)} labelled archs in the datasets; an adapter needs at least 2")
    predictor = AdaptedPredictor.of(entry.predictor, options)
    predictor.adapt([s for s, _ in pairs], torch.Generator().manual_seed(seed), _source(datasets, task), progress)
    return PredictorFile(AdaptedPredictor.name, predictor.config.model_dump(mode="json"), file.input_size,
                         file.in_channels, file.dataset,
                         {base_task: TaskPredictors(entry.label, entry.higher_is_better, predictor, entry.baselines,
                                                    set(entry.fitted))})


def draw_labelled(pairs: Sequence[tuple[Sample, str]], n: int, generator: torch.Generator
                  ) -> list[tuple[Sample, str]]:
    """``n`` of ``pairs`` drawn with ``generator`` (the same ``n`` for the same seed and pairs)."""
    return [pairs[i] for i in torch.randperm(len(pairs), generator=generator)[:n].tolist()]


def transfer_file(file: PredictorFile, where: str, datasets: Sequence[PerfDataset], n_labels: int = 20,
                  task: str | None = None, base_task: str | None = None, train: str = "heads+base",
                  overrides: dict[str, Any] | None = None, seed: int = 0, registry: Registry | None = None,
                  progress: Progress = no_progress) -> PredictorFile:
    """``file``'s predictor of ``base_task`` fine-tuned on ``n_labels`` labelled archs of ``task`` in
    ``datasets`` (a seeded draw), and every baseline fitted on the same archs: a predictor file for ``task``
    whose fitted archs are those."""


    registry = registry or get_registry()
    if train not in TRAIN_MODES:
        raise NascoreError(f"--train {train}: expected one of {', '.join(TRAIN_MODES)}")
    base_task, entry = _base(file, where, base_task)
    options = _options(file, where, overrides or {})
    task, definition, pairs = _target(datasets, file, where, task)
    if not 2 <= n_labels <= len(pairs):
        raise NascoreError(f"--labels {n_labels}: task '{task}' has {len(pairs)} labelled archs in the datasets; "
                           f"draw between 2 and {len(pairs)}")
    generator = torch.Generator().manual_seed(seed)
    chosen = draw_labelled(pairs, n_labels, generator)
    samples = [s for s, _ in chosen]
    predictor = AdaptedPredictor.of(entry.predictor, options)
    predictor.fine_tune(samples, generator, train, progress)
    predictor.tuned.update(task=task, base_task=base_task, seed=seed)
    baselines = {}
    for b in baseline_names(registry):
        baselines[b] = registry.get("predictor", b)()
        baselines[b].fit(samples, generator)
    first = datasets[0].manifest
    return PredictorFile(AdaptedPredictor.name, predictor.config.model_dump(mode="json"), first.input_size,
                         first.in_channels, first.spec["dataset"],
                         {task: TaskPredictors(definition["label"], definition["higher_is_better"], predictor,
                                               baselines, {k for _, k in chosen})})


def summary(predictor: AdaptedPredictor) -> str:
    """``K adapters (task on spaces, ...)`` for messages."""
    k = len(predictor.adapters)
    if not k:
        return "no adapters"
    return f"{k} adapter{'s' if k > 1 else ''} (" + "; ".join(
        f"{s.get('task')} on {', '.join(s.get('spaces', []))}, {s.get('archs')} archs" for s in predictor.sources) + ")"

