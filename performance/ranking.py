"""``nascore bench supernet-rank``: how well a supernet's shared weights rank the archs of a performance dataset,
against the dataset's trained labels and beside the zero-cost baselines of the same archs.

The spec's supernet is trained one-shot (:mod:`nascore.performance.oneshot`: ``epochs`` epochs of the spec's
``train`` block on its first task, under a sampling rule), or taken from ``--supernet``. Each arch of the dataset
is then scored on the shared weights: the supernet fixed to the arch's path, its BatchNorm statistics re-estimated
on that path (``bn_batches`` training batches), evaluated on the spec's val split; the score is the dataset's label
metric (``val/<task>/<primary metric>``). Spearman's rho and Kendall's tau of the scores against the labels are
printed beside those of the dataset's own measurements of each arch (multiply-adds, parameters, latency, each
zero-cost proxy of its records).

``--supernet`` takes the ``supernet.pt`` of another such folder (the same spec, epochs and rule), the supernet file
a ``oneshot`` run keeps, or a run's ``checkpoints/search.pt`` (the supernet a DNAS search decided on; either trained
for the spec's space, data and tasks, the run's ``spec.yaml`` read for it; its scores are tied to that file's
digest).

The labels' own ceiling: with ``--labels-again`` (a performance dataset of the same archs trained again with
another seed and otherwise the same spec, as ``benchmarks/label_noise.py`` writes one), the agreement of the two
seeds' labels is printed as the ranker ``labels, another seed``: no ranker is expected to agree with the labels
more than they agree with themselves.

The spec must describe the dataset's archs: its space, the space's config (but options that shape only the
supernet, such as fbnet's ``shared_weights``), its data (the labels were measured on that val split) and input.

The folder (its one writer: ``nascore.lock``)::

    DIR/supernet.pt           the supernet's checkpoint, after every epoch (a rerun resumes it)
    DIR/scores/<index>.json   one arch's score and the digest of its supernet, written atomically as it is done (a
                              rerun skips it; a score of another supernet is refused)
    DIR/ranking.json          the options, the supernet's seconds, and each ranker's correlations

Scoring runs where the executor says (``--workers``, ``--executor ray``), each worker building the supernet from
the checkpoint once.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from nascore.errors import NascoreError
from nascore.executor import Executor, LocalExecutor
from nascore.fileio import atomic_write_text, load_checkpoint, load_user_json, save_checkpoint
from nascore.lock import one_writer
from nascore.loops import recalibrate_batchnorm
from nascore.parts import Parts
from nascore.progress import Reporter
from nascore.spec import spec_changes, validate_spec
from nascore.spec_model import RunSpec
from nascore.task import Network, build_network
from nascore.train import validate

from . import supernet_file
from .oneshot import OneShot, batches, check_fingerprint, supernet_fingerprint, train_supernet
from .perfdata import PerfDataset, finite, record_path
from .predictors.scoring import scores
from .proxies import PROXIES, scale

SUPERNET_FILE, SCORES, RANKING = "supernet.pt", "scores", "ranking.json"
LABELS_AGAIN = "labels, another seed"  # the ranker that is the labels of --labels-again
ADOPTED = "adopted"  # the key of a checkpoint holding another file's supernet (a oneshot run's, a search's): its path
SCORE_MAX_BYTES = 1 << 20
BN_STREAM = 19  # the random stream (nascore.data.epoch_seed) of the recalibration batches


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: supernet epochs (None: the train block's)
    epochs: int | None = Field(None, ge=1)
    rule: OneShot = OneShot()
    #: training batches that re-estimate a path's BatchNorm statistics
    bn_batches: int = Field(8, ge=1)


class Score(BaseModel):
    """``scores/<index>.json``."""

    model_config = ConfigDict(extra="forbid")
    format: Literal["nascore-supernet-score"] = "nascore-supernet-score"
    version: Literal[1] = 1
    index: int = Field(ge=0)
    #: which supernet scored it (a digest of what the supernet was trained for)
    supernet: str
    choices: dict[str, str]
    score: float | None
    metrics: dict[str, float | None]
    seconds: float = Field(ge=0)


def check_dataset(spec: RunSpec, parts: Parts, data: PerfDataset) -> str:
    """That ``spec`` describes ``data``'s archs (space, config, data, input); returns the label key of the spec's
    first task. A NascoreError names the first field that differs."""
    manifest, where = data.manifest, data.directory / "dataset.json"
    space = parts.space
    if manifest.space.name != space.name:
        raise NascoreError(f"{where}: space '{manifest.space.name}' is not the spec's space '{space.name}'")
    ours = space.arch_config()
    for key in sorted(set(ours) | set(manifest.space.config)):
        if manifest.space.config.get(key) != ours.get(key):
            raise NascoreError(f"{where}: space.config.{key} is {manifest.space.config.get(key)!r}, the spec's "
                               f"space.{key} is {ours.get(key)!r}; the spec must describe the dataset's archs")
    if (manifest.input_size, manifest.in_channels) != (parts.info.image_size, parts.info.in_channels):
        raise NascoreError(f"{where}: input_size {manifest.input_size} x {manifest.in_channels} channels, the spec's "
                           f"data {parts.info.image_size} x {parts.info.in_channels}")
    theirs, data_of = manifest.spec.get("dataset"), parts.dataset.without_locations
    if not isinstance(theirs, dict) or data_of(theirs) != data_of(spec.dump()["dataset"]):
        raise NascoreError(f"{where}: its labels were measured on another dataset than the spec's (spec.dataset "
                           "differs); the supernet is scored on the spec's val split")
    options = {d.name: d.options for d in parts.space.decisions()}
    for record in data.records:  # the spec's space may offer fewer blocks (FBNet's candidates) than the dataset's
        wrong = next((name for name, choice in record.arch.choices.items() if choice not in options.get(name, ())),
                     None)
        if wrong is not None:
            raise NascoreError(f"{record_path(data.directory, record.index)}: choices.{wrong} is "
                               f"{record.arch.choices[wrong]!r}, not an option of the spec's space "
                               f"({', '.join(options.get(wrong, ())) or 'no such decision'})")
    task = parts.tasks[0].name
    if task not in manifest.tasks:
        raise NascoreError(f"{where}: no labels of task '{task}' (the spec's first task); it has "
                           f"{', '.join(manifest.tasks)}")
    return manifest.tasks[task].label


class Scorer:
    """Scores paths on a trained supernet: in this process, or (an executor's worker, which gets the spec and the
    checkpoint's path alone) built there once."""

    def __init__(self, spec: RunSpec, parts: Parts, network: Network, checkpoint: Path, options: Options,
                 digest: str | None = None):
        self.spec, self.parts, self.network, self.checkpoint, self.options = spec, parts, network, checkpoint, options
        self.supernet = digest or supernet_digest(spec, options)

    def __reduce__(self) -> tuple[Any, ...]:
        return _worker, (json.dumps(self.spec.dump()), str(self.checkpoint), self.options.model_dump_json())

    def score(self, index: int, choices: dict[str, str], label: str) -> Score:
        """The arch ``choices`` on the shared weights: BatchNorm re-estimated on its path, metrics on the val split."""
        began = time.perf_counter()
        parts, network, cfg = self.parts, self.network, self.spec.train
        network.backbone.set_choices(choices)
        recalibrate_batchnorm(network, itertools.islice(batches(parts, cfg, 0, BN_STREAM), self.options.bn_batches),
                              parts.device)
        metrics = validate(network, parts.val_set, parts.collate, [parts.tasks[0]], cfg, parts.device)
        return Score(index=index, supernet=self.supernet, choices=choices, score=finite(metrics.get(label)),
                     metrics={k: finite(v) for k, v in metrics.items()}, seconds=round(time.perf_counter() - began, 3))


@lru_cache(maxsize=1)
def _worker(spec_json: str, checkpoint: str, options_json: str) -> Scorer:
    spec = validate_spec(json.loads(spec_json), source="the ranked spec")
    parts = Parts.build(spec)
    state = load_checkpoint(checkpoint, map_location=parts.device, what="supernet")
    return Scorer(spec, parts, scored_network(parts, state, Path(checkpoint)), Path(checkpoint),
                  Options.model_validate_json(options_json), state["fingerprint"] if ADOPTED in state else None)


def scored_network(parts: Parts, checkpoint: dict[str, Any], source: Path) -> Network:
    """The network a checkpoint of this folder holds: another file's supernet with every task's head (as that file
    was trained), this folder's own with the first task's; a NascoreError names ``source`` where the weights do not
    fit the spec's supernet."""
    tasks = parts.tasks if ADOPTED in checkpoint else parts.tasks[:1]
    network = build_network(parts.space.supernet(), tasks, parts.info).to(parts.device)
    try:
        network.load_state_dict(checkpoint["state"]["network"])
    except RuntimeError as exc:  # the identity matched but the tensors do not: a damaged or foreign file
        raise NascoreError(f"--supernet {source}: its weights do not fit the spec's supernet "
                           f"({str(exc).splitlines()[0]})") from None
    return network


def score_one(scorer: Scorer, index: int, choices: dict[str, str], label: str) -> Score:
    """One arch scored (an executor's job)."""
    return scorer.score(index, choices, label)


def supernet_digest(spec: RunSpec, options: Options) -> str:
    """A short digest of what the supernet is trained for (its checkpoint's fingerprint)."""
    fingerprint = supernet_fingerprint(spec, options.epochs or spec.train.epochs, options.rule)
    return hashlib.sha256(fingerprint.encode()).hexdigest()[:16]


def adopted_supernet(source: Path, spec: RunSpec, parts: Parts, options: Options
                     ) -> tuple[dict[str, Any], str | None]:
    """The checkpoint ``--supernet`` names, checked: the ``supernet.pt`` of another supernet-rank or pseudo-label
    folder (this spec, epochs and rule; returned with no digest: the spec's), or the supernet file of a ``oneshot``
    run or a run's ``checkpoints/search.pt`` (its space, data and tasks this spec's), returned in this folder's
    checkpoint layout with its file's digest."""
    checkpoint = load_checkpoint(source, map_location=parts.device, what="--supernet checkpoint")
    if ADOPTED in checkpoint:
        raise NascoreError(f"--supernet {source} is a copy of {checkpoint[ADOPTED]}'s supernet; pass that file")
    if "fingerprint" in checkpoint:
        epochs = options.epochs or spec.train.epochs
        return check_fingerprint(checkpoint, source, spec, epochs, options.rule, "--epochs"), None
    if checkpoint.get("format") != supernet_file.FORMAT:
        checkpoint = supernet_file.from_search_checkpoint(checkpoint, source)
    network, trained = supernet_file.checked_file(checkpoint, source, parts)
    digest = hashlib.sha256()
    with open(source, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    fingerprint = f"file-{digest.hexdigest()[:16]}"
    return {ADOPTED: str(source), "trained": trained, "fingerprint": fingerprint, "state": {"network": network}}, \
        fingerprint


def read_score(path: Path, index: int, supernet: str) -> Score:
    data = load_user_json(path, "supernet score", SCORE_MAX_BYTES, finite=True)
    try:
        score = Score.model_validate(data)
    except ValueError as exc:
        raise NascoreError(f"{path} is not a supernet score ({str(exc).splitlines()[0]}); remove it to score the "
                           "arch again") from None
    if score.index != index:
        raise NascoreError(f"{path} holds the score of arch {score.index}, not {index}; remove it")
    if score.supernet != supernet:
        raise NascoreError(f"{path} was scored on another supernet (other spec, epochs or rule); pass another --out, "
                           f"or remove {path.parent} to score again")
    return score


def labels_again(data: PerfDataset, again: Path, parts: Parts) -> dict[int, float | None]:
    """The labels of the first task of ``parts`` in ``again``, the archs of ``data`` trained with another seed: a
    NascoreError names a spec field other than the seed (or where the data is kept), or an arch, that differs."""
    other, task = PerfDataset.read(again), parts.tasks[0].name
    where = other.directory / "dataset.json"
    theirs, ours = ({k: parts.dataset.without_locations(v) if k == "dataset" and isinstance(v, dict) else v
                     for k, v in d.manifest.spec.items() if k != "seed"} for d in (other, data))
    changes = spec_changes(ours, theirs, limit=1)
    if changes:
        raise NascoreError(f"--labels-again {where}: its archs were trained with another spec than the dataset's "
                           f"({changes[0]}); only the seed may differ")
    if task not in other.manifest.tasks:
        raise NascoreError(f"--labels-again {where}: no labels of task '{task}'")
    archs = {r.index: r.arch.choices for r in data.records}
    for r in other.records:
        if r.index in archs and r.arch.choices != archs[r.index]:
            raise NascoreError(f"--labels-again {record_path(other.directory, r.index)}: arch {r.index} is not the "
                               "dataset's arch of that index (another plan)")
    return {r.index: r.tasks[task].label for r in other.records if r.index in archs and task in r.tasks}


def correlations(data: PerfDataset, task: str, supernet: dict[int, float | None],
                 again: dict[int, float | None] | None = None) -> dict[str, dict[str, Any]]:
    """Spearman, Kendall and n of each ranker against the labels of ``task``, over the archs with a label and a
    value: the supernet's scores, then the records' multiply-adds, parameters, latency and proxies, then the
    supernet's score plus each proxy (both standardised over the archs, as ``oneshot``'s ``proxy`` sums them), then
    ``again``'s labels (the same archs trained with another seed) when given."""
    rankers: dict[str, dict[int, float | None]] = {"supernet": supernet, "macs": {}, "params": {}, "latency_ms": {}}
    labels = {}
    for r in data.records:
        if task in r.tasks and r.tasks[task].label is not None:
            labels[r.index] = r.tasks[task].label
        rankers["macs"][r.index], rankers["params"][r.index] = float(r.macs), float(r.params)
        rankers["latency_ms"][r.index] = r.latency_ms
        for name, value in r.proxies.items():
            rankers.setdefault(name, {})[r.index] = value
    sign = 1.0 if data.manifest.tasks[task].higher_is_better else -1.0  # the proxies: higher is better
    for name in PROXIES:  # as the oneshot strategy's proxy: each standardised over the archs, summed
        proxy = rankers.get(name, {})
        both = {i: (v, proxy[i]) for i, v in supernet.items() if v is not None and proxy.get(i) is not None}
        if both:
            (m1, s1), (m2, s2) = (scale(column) for column in zip(*both.values(), strict=True))
            rankers[f"supernet+{name}"] = {i: sign * ((a - m1) / s1 + sign * (b - m2) / s2)
                                           for i, (a, b) in both.items()}
    if again is not None:
        rankers[LABELS_AGAIN] = again
    out = {}
    for name, values in rankers.items():
        common = [i for i in labels if values.get(i) is not None]
        if common:
            out[name] = scores([values[i] for i in common], [labels[i] for i in common])
    return out


@one_writer("out_dir")
def supernet_rank(spec: RunSpec, dataset: Path, out_dir: Path, options: Options | None = None,
                  supernet_from: Path | None = None, first: int | None = None, executor: Executor | None = None,
                  reporter: Reporter | None = None, again: Path | None = None) -> dict[str, Any]:
    """Train (or resume, or take from ``supernet_from``) the spec's supernet in ``out_dir`` and score the archs of
    the performance dataset ``dataset`` (the first ``first`` of its plan when given) on it, beside the agreement of
    the labels with ``again``'s (the same archs, another training seed) when given; returns ``ranking.json``'s
    contents."""
    reporter, options = reporter or Reporter(), options or Options()
    if spec.train is None:
        raise NascoreError(f"{spec.source}: the supernet trains with the spec's train: block; the spec has none")
    if first is not None and first < 1:
        raise NascoreError(f"--first must be at least 1, not {first}")
    epochs = options.epochs or spec.train.epochs
    data = PerfDataset.read(dataset)
    parts = Parts.build(spec)
    label = check_dataset(spec, parts, data)
    second = None if again is None else labels_again(data, again, parts)
    adopted, digest = (None, None) if supernet_from is None else \
        adopted_supernet(supernet_from, spec, parts, options)
    task = parts.tasks[0].name
    if out_dir.exists() and not out_dir.is_dir():
        raise NascoreError(f"--out {out_dir} is not a folder")
    checkpoint = out_dir / SUPERNET_FILE
    if digest is not None and checkpoint.exists() and \
            load_checkpoint(checkpoint, what="supernet").get("fingerprint") != digest:
        raise NascoreError(f"--out {out_dir} holds another supernet; pass another --out")
    (out_dir / SCORES).mkdir(parents=True, exist_ok=True)
    if adopted is not None and not checkpoint.exists():
        save_checkpoint(adopted, checkpoint)
    records = [r for r in data.records if first is None or r.index < first]
    digest = digest or supernet_digest(spec, options)
    done: dict[int, Score] = {}
    for r in records:  # before the supernet trains: a bad score file stops the command at once
        path = out_dir / SCORES / f"{r.index:05d}.json"
        if path.exists() or path.is_symlink():
            done[r.index] = read_score(path, r.index, digest)
    if adopted is not None and ADOPTED in adopted:  # a oneshot run's or a search's supernet: nothing to train
        network, seconds = scored_network(parts, adopted, supernet_from), None
    else:
        network, seconds = train_supernet(spec, parts, checkpoint, epochs, reporter, options.rule)
    todo = [(r.index, r.arch.choices, label) for r in records if r.index not in done]
    scorer = Scorer(spec, parts, network, checkpoint, options, digest)
    with reporter.progress(len(todo), f"score {len(todo)} archs on the supernet") as advance:
        for _, score in (executor or LocalExecutor()).run(score_one, todo, scorer):
            atomic_write_text(out_dir / SCORES / f"{score.index:05d}.json", score.model_dump_json(indent=1) + "\n")
            done[score.index] = score
            advance()
    ranked = PerfDataset(data.directory, data.manifest, records)
    result = {"format": "nascore-supernet-ranking", "version": 1, "dataset": str(dataset), "task": task,
              "label": label, "options": options.model_dump(mode="json"), "epochs": epochs,
              "supernet": str(supernet_from) if adopted is not None and ADOPTED in adopted else None,
              "supernet_seconds": None if seconds is None else round(seconds, 3),
              "scoring_seconds": round(sum(s.seconds for s in done.values()), 3),
              "standalone_seconds_per_arch": _mean([r.tasks[task].seconds for r in records if task in r.tasks]),
              "labels_again": None if again is None else str(again),
              "correlations": correlations(ranked, task, {i: s.score for i, s in done.items()}, second)}
    atomic_write_text(out_dir / RANKING, json.dumps(result, indent=1) + "\n")
    return result


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None

