"""``nascore bench collect``: a performance dataset (``perfdata``) of a spec's space.

Archs are drawn stratified over multiply-adds: a seeded pool of distinct random archs (20 per wanted arch) is
sorted by MACs and cut into N equal strata, one arch drawn from each, and the N shuffled (so a collection cut
short still covers the range). Each arch is trained from scratch with the spec's ``train`` block on each of the
spec's tasks on its own (a network of the arch's backbone and that task's head, seeded by the spec's seed, as
``nascore train`` trains), and its record is written atomically when every task is done. A collection that is
stopped resumes from its records and the plan stored in ``dataset.json`` (the same spec, seed and count give
the same plan; a nascore whose draw changed since resumes the stored one). Archs train where the executor says
(``nascore.executor``: in this process, in ``--workers`` processes or as Ray tasks); each record is written here
as its arch finishes.
"""
from __future__ import annotations

import json
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from nascore.arch import Arch
from nascore.costs.flops import FlopsCost, count_macs, count_params
from nascore.data import loader
from nascore.errors import NascoreError, NonFiniteLossError
from nascore.executor import Executor, LocalExecutor
from nascore.lock import LOCK_FILE, one_writer
from nascore.loops import weight_optimizer
from nascore.parts import Parts
from nascore.progress import Reporter
from nascore.protocols import CostEstimate
from nascore.spec import validate_spec
from nascore.spec_model import RunSpec
from nascore.supernet import random_choices
from nascore.task import Network, Task, build_network
from nascore.train import train_epoch, validate

from .graph import build_graph, graph_record
from .perfdata import (
    MANIFEST,
    Manifest,
    PerfDataset,
    Record,
    finite,
    read_manifest,
    write_manifest,
    write_record,
)
from .proxies import naswot, synflow

POOL_PER_ARCH = 20
NASWOT_BATCH = 32
#: the file that marks a folder of pseudo-labels (``nascore.performance.pseudolabel``), which ``collect`` does not
#: add to
PSEUDO_LABELS = "pseudolabel.json"


def draw(parts: Parts, n: int, seed: int) -> list[dict[str, str]]:
    """``n`` distinct archs of the run's space, stratified over multiply-adds; the same arguments, the same list."""
    space = parts.space
    supernet = space.supernet()
    decisions = supernet.decisions()
    owned = [d.name for d in decisions if d.task is not None]
    if owned:
        raise NascoreError(f"space '{space.name}' has per-task decisions ({', '.join(owned[:3])}, ...); bench "
                           "collect draws archs that every task shares")
    table = supernet.price(FlopsCost(), space.input_size, parts.info.in_channels)
    g = torch.Generator().manual_seed(seed)
    pool: dict[str, dict[str, str]] = {}
    want = POOL_PER_ARCH * n
    for _ in range(20 * want):  # small spaces run out of distinct archs: stop drawing at some point
        if len(pool) >= want:
            break
        choices = random_choices(decisions, g)
        pool.setdefault(json.dumps(supernet.canonical(choices), sort_keys=True), choices)
    if len(pool) < n:
        raise NascoreError(f"--archs {n}: space '{space.name}' gave only {len(pool)} distinct archs")
    ranked = sorted(pool.items(), key=lambda kv: (table.of_choices(kv[1]), kv[0]))
    edges = [round(i * len(ranked) / n) for i in range(n + 1)]
    picks = [ranked[lo + int(torch.randint(hi - lo, (1,), generator=g))][1] for lo, hi in zip(edges, edges[1:])]
    return [picks[i] for i in torch.randperm(n, generator=g).tolist()]


def measure_arch(backbone: torch.nn.Module, input_size: int, in_channels: int, images: torch.Tensor
                 ) -> dict[str, Any]:
    """What a record holds of an untrained backbone: ``macs``, ``params``, ``proxies`` (``naswot`` on ``images``)
    and ``graph`` (``nascore.performance.graph.graph_record``)."""
    device = next(backbone.parameters()).device
    shape = torch.zeros(1, in_channels, input_size, input_size, device=device)
    return {"macs": count_macs(backbone, shape), "params": count_params(backbone),
            "proxies": {"synflow": finite(synflow(backbone, input_size, in_channels)),
                        "naswot": finite(naswot(backbone, images))},
            "graph": graph_record(build_graph(backbone, input_size, in_channels))}


def plan_manifest(spec: RunSpec, parts: Parts, n: int, seed: int) -> Manifest:
    """The manifest of a collection of ``n`` archs of ``spec`` (whose parts are ``parts``) drawn with ``seed`` (it
    holds the plan)."""
    info, space = parts.info, parts.space
    if spec.train is None:
        raise NascoreError(f"{spec.source}: bench collect trains every arch with the spec's train: block; the spec "
                           "has none")
    if space.input_size != info.image_size:
        raise NascoreError(f"{spec.source}: space.input_size {space.input_size} differs from the dataset's image size "
                           f"{info.image_size}; a collection measures archs at the size they train at")
    tasks = {t.name: {"label": f"val/{t.name}/{t.cls.primary_metric}", "higher_is_better": t.cls.higher_is_better}
             for t in spec.tasks}
    plan = [{"index": i, "choices": c} for i, c in enumerate(draw(parts, n, seed))]
    return Manifest.model_validate({
        "format": "nascore-performance-dataset", "version": 1, "seed": seed, "archs": n,
        "space": {"name": space.name, "config": space.arch_config()},
        "input_size": info.image_size, "in_channels": info.in_channels, "tasks": tasks, "spec": spec.dump(),
        "plan": plan})


class Collector:
    """Trains and measures the archs of a collection (``bench pseudo-label`` measures its archs with it too) with
    the parts of the manifest's spec: those of the command that planned it, or, in another process (an executor's
    worker, which gets the manifest alone), built there once."""

    def __init__(self, manifest: Manifest, parts: Parts | None = None):
        self.manifest = manifest
        self.spec = validate_spec(manifest.spec, source=f"the spec in {MANIFEST}")
        self.parts = parts or Parts.build(self.spec)
        spec, space = self.spec, self.parts.space
        self.latency: CostEstimate | None = None
        if spec.cost is not None:
            cost_model = spec.cost.cls(spec.cost.config)
            if cost_model.unit == "ms":
                self.latency = space.supernet().price(cost_model, space.input_size, self.parts.info.in_channels)

    def __reduce__(self) -> tuple[Any, ...]:
        return _worker, (self.manifest.model_dump_json(),)  # to another process: the manifest alone

    def arch(self, index: int) -> Arch:
        """Plan entry ``index`` as an arch of the space."""
        return Arch(space=self.parts.space.name, config=self.manifest.space.config,
                    choices=self.manifest.plan[index].choices)

    def measured(self, index: int) -> dict[str, Any]:
        """Record ``index`` without its task entries: arch, latency and ``measure_arch`` of the untrained backbone."""
        parts = self.parts
        arch = self.arch(index)
        torch.manual_seed(parts.seed)
        backbone = parts.space.build(arch).to(parts.device)
        images, _ = next(iter(loader(parts.train_set, NASWOT_BATCH, parts.collate, shuffle=True, seed=parts.seed)))
        latency = self.latency.of_choices(arch.choices) if self.latency is not None else None
        return {"format": "nascore-performance-record", "version": 1, "index": index,
                "arch": arch.model_dump(mode="json", exclude={"task", "name"}), "latency_ms": latency,
                **measure_arch(backbone, parts.info.image_size, parts.info.in_channels, images), "tasks": {}}

    def trained(self, index: int, task: Task) -> tuple[Network, list[float]]:
        """Plan entry ``index`` with ``task``'s head, trained from scratch with the spec's ``train`` block (seeded
        by the spec's seed), and its mean training loss per epoch; a NonFiniteLossError if the training diverged."""
        parts, cfg = self.parts, self.spec.train  # plan_manifest refused a spec without one
        torch.manual_seed(parts.seed)
        network = build_network(parts.space.build(self.arch(index)), [task], parts.info).to(parts.device)
        optimizer = weight_optimizer(network.parameters(), cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)
        losses = [train_epoch(network, optimizer, [task], parts.train_set, parts.collate, cfg, parts.seed, epoch,
                              parts.device)[1] for epoch in range(cfg.epochs)]
        return network, losses

    def record(self, index: int) -> Record:
        parts, m, cfg = self.parts, self.manifest, self.spec.train
        record = self.measured(index)
        for task in parts.tasks:
            start = time.perf_counter()
            try:
                network, _ = self.trained(index, task)
            except NonFiniteLossError as exc:  # the arch is recorded without a label; the collection goes on
                record["tasks"][task.name] = {"metrics": {}, "label": None,
                                              "seconds": round(time.perf_counter() - start, 3),
                                              "note": f"training diverged (non-finite loss at epoch {exc.epoch}, "
                                                      f"step {exc.step})"}
                continue
            metrics = validate(network, parts.val_set, parts.collate, [task], cfg, parts.device)
            label = m.tasks[task.name].label
            record["tasks"][task.name] = {"metrics": {k: finite(v) for k, v in metrics.items()},
                                          "label": finite(metrics.get(label)),
                                          "seconds": round(time.perf_counter() - start, 3)}
        return Record.model_validate(record)


@lru_cache(maxsize=1)
def _worker(manifest_json: str) -> Collector:
    """The collector of a manifest in an executor's worker process: built once per process."""
    return Collector(Manifest.model_validate_json(manifest_json))


def collect_one(collector: Collector, index: int) -> Record:
    """Plan entry ``index`` trained and measured (an executor's job)."""
    return collector.record(index)


def check_plan(manifest: Manifest, parts: Parts, path: Path) -> None:
    """Every plan entry of ``manifest`` (read from ``path``, which checked their indices) an arch of the space."""
    for entry in manifest.plan:
        try:
            parts.space.check_arch(Arch(space=parts.space.name, config=manifest.space.config, choices=entry.choices))
        except NascoreError as exc:
            raise NascoreError(f"{path}: plan[{entry.index}].{exc}") from None


def open_collection(spec: RunSpec, parts: Parts, out_dir: Path, n: int, seed: int, reporter: Reporter
                    ) -> tuple[Manifest, list[int]]:
    """The manifest of the collection in ``out_dir`` (written if new) and the plan indices still to collect.

    An existing ``dataset.json`` must be of the same spec, seed and count, else nothing is touched; its stored plan
    is resumed."""
    manifest = plan_manifest(spec, parts, n, seed)
    if (out_dir / MANIFEST).exists() or (out_dir / MANIFEST).is_symlink():
        existing = read_manifest(out_dir)
        differs = [k for k in ("seed", "archs", "space", "tasks", "spec")
                   if getattr(existing, k) != getattr(manifest, k)]
        if differs:
            raise NascoreError(f"{out_dir / MANIFEST} is a collection of another plan (its {', '.join(differs)} "
                               "differ); pass another --out, or the same spec, --seed and --archs to resume it")
        # the stored plan is the collection's: a nascore whose draw changed since (another sampling of the same
        # spec and seed) resumes it as planned, once every entry is checked to be an arch of the space
        check_plan(existing, parts, out_dir / MANIFEST)
        if existing.plan != manifest.plan:
            reporter.log(f"{out_dir / MANIFEST}: its plan differs from this nascore's draw for the same spec and "
                         "seed; resuming the stored plan")
        done = {r.index for r in PerfDataset.read(out_dir).records}
        return existing, [i for i in range(n) if i not in done]
    if out_dir.exists() and (not out_dir.is_dir() or any(p.name != LOCK_FILE for p in out_dir.iterdir())):
        raise NascoreError(f"--out {out_dir} exists and is not an empty folder or a collection ({MANIFEST} "
                           "missing); pass a new folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_manifest(out_dir, manifest)
    return manifest, list(range(n))


@one_writer("out_dir")
def collect(spec: RunSpec, out_dir: Path, n: int, seed: int, executor: Executor | None = None,
            reporter: Reporter | None = None) -> dict[str, Any]:
    """Collect (or resume) ``n`` archs into ``out_dir``, its one writer (``nascore.lock``); returns counts and
    timing."""
    reporter = reporter or Reporter()
    if (out_dir / PSEUDO_LABELS).exists():
        raise NascoreError(f"--out {out_dir} holds pseudo-labels (nascore bench pseudo-label, {PSEUDO_LABELS}); "
                           "trained labels go in another folder")
    parts = Parts.build(spec)
    manifest, todo = open_collection(spec, parts, out_dir, n, seed, reporter)
    if len(todo) < n:
        reporter.log(f"resuming {out_dir}: {n - len(todo)} of {n} archs collected already")
    return run_plan(Collector(manifest, parts), out_dir, todo, executor, reporter)


def run_plan(collector: Collector, out_dir: Path, todo: list[int], executor: Executor | None = None,
             reporter: Reporter | None = None) -> dict[str, Any]:
    """Train and record the plan entries ``todo`` of the collector's manifest (whose ``dataset.json`` is in
    ``out_dir``), each record written as its arch finishes (default executor: this process)."""
    reporter = reporter or Reporter()
    manifest = collector.manifest
    start = time.perf_counter()
    with reporter.progress(len(todo), f"collect {len(todo)} archs x {len(manifest.tasks)} tasks") as advance:
        for _, record in (executor or LocalExecutor()).run(collect_one, [(i,) for i in todo], collector):
            write_record(out_dir, record)
            advance()
    seconds = time.perf_counter() - start
    return {"collected": len(todo), "archs": manifest.archs, "seconds": seconds,
            "archs_per_hour": len(todo) / seconds * 3600 if todo and seconds > 0 else None}
