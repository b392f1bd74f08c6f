"""AIO-P pseudo-labels: ``nascore bench pseudo-label``, a performance dataset whose labels come from one task head
shared by every body of a space instead of from training each arch from scratch (Mills et al., "AIO-P: Expanding
Neural Performance Predictors Beyond Image Classification", AAAI 2023: "Training K-Adapters based on Latent
Sampling", and the supplement's "Latent Sampling Strategy" and "Training With A Shared Head").

1. Bodies. AIO-P's bodies are subnets of a pretrained once-for-all supernet. nascore has none, so the spec's supernet
   is trained here on the spec's first task (the "pretraining" task) one-shot (``nascore.performance.oneshot``): by
   default with uniform single-path sampling, one random arch per step (``rule``: FairNAS' or BigNAS' rule instead),
   ``supernet_epochs`` epochs of the spec's ``train`` block.
2. The shared head: a fresh head of the target task trained for ``head_epochs`` on latent features
   ``z(x) = mu(x) + zeta * sigma(x)``, ``zeta ~ N(0, 1)`` per element and drawn anew for each feature level, where
   ``mu`` and ``sigma`` are the mean and standard deviation of the features of image ``x`` over a population S' of
   bodies (AIO-P eq. 2-3; no gradient, the supernet's weights, BatchNorm on the batch's statistics as in its
   training). S' holds ``per_bin`` archs of each of ``bins`` depth bins (:class:`DepthBins`); at every minibatch
   the next bin, round robin, replaces its oldest arch by a new random arch of that bin (:class:`Population`).
   ``sampling="body"`` is the paper's baseline, body swapping: the head sees one body per minibatch (the
   minibatch's new arch).
3. Pseudo-labels: each arch of the plan (the archs ``bench collect`` draws for the same spec, seed and count) is the
   supernet fixed to it plus a copy of the shared head, fine-tuned together for ``finetune_steps`` steps (the
   ``train`` block's optimiser and learning rate, its schedule over the steps), its BatchNorm statistics
   re-estimated on the path, evaluated on the val split. The label is ``bench collect``'s (``val/<task>/<primary
   metric>``); the record's ``note`` says it is a pseudo-label, its ``seconds`` are the arch's fine-tuning and
   evaluation.

The folder is a performance dataset as ``bench collect`` writes it (``dataset.json``, ``archs/``) plus
``pseudolabel.json`` (options, depth bins, seconds of the shared phases, ``supernet_check``), ``supernet.pt`` and
``head.pt``, each checkpointed after every epoch. Running the same command again resumes: a finished phase is loaded,
an unfinished one goes on from its last epoch with the same random streams, archs with a record are skipped.

``supernet_check`` is the pretraining task's metric of 5 random paths with the supernet's own head: at chance, the
bodies carry no signal and neither do the pseudo-labels. So it is on the FBNet benchmark of
``benchmarks/aiop_pseudolabels.py``: the single-path supernet's loss stays at chance there.
"""
from __future__ import annotations

import copy
import itertools
import json
import random
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import Tensor, nn

from nascore.data import epoch_seed, to_device
from nascore.errors import NascoreError, NonFiniteLossError
from nascore.fileio import atomic_write_text, load_user_json, save_checkpoint
from nascore.lock import one_writer
from nascore.loops import check_finite, recalibrate_batchnorm, set_lr, train_step, weight_optimizer
from nascore.parts import Parts
from nascore.progress import Reporter
from nascore.spec_model import RunSpec
from nascore.supernet import Decision, Supernet
from nascore.task import Network, Task
from nascore.train import validate

from .collect import PSEUDO_LABELS, Collector, open_collection
from .oneshot import (
    DATA,
    RULES,
    OneShot,
    Rule,
    SharedPhaseLoop,
    batches,
    checked_supernet,
    scheduled_lr,
    supernet_fingerprint,
    train_supernet,
    uniform_arch,
)
from .perfdata import MANIFEST, RECORDS, Manifest, PerfDataset, Record, finite, write_record

#: option labels that compute no block (FBNet's and FBNetV2's ``skip``): an arch's depth leaves them out
SKIP_OPTIONS = frozenset({"skip", "identity", "none", "zero"})
INFO_FORMAT = "nascore-pseudo-labels"
SUPERNET_FILE, HEAD_FILE = "supernet.pt", "head.pt"
DEPTH_POOL = 1000
# random streams (nascore.data.epoch_seed), one per use, so that a resumed epoch replays its own
# (10, 11, 12: the supernet's, nascore.performance.oneshot)
_FIRST_POPULATION, _REFRESH, _ZETA, _FINETUNE, _BN, _CHECK = range(13, 19)
FLAGS = {"task": "--task", "supernet_epochs": "--supernet-epochs", "head_epochs": "--head-epochs",
         "finetune_steps": "--finetune-steps", "bins": "--bins", "per_bin": "--per-bin", "sampling": "--sampling",
         "rule": "--rule",
         "bn_batches": "--bn-batches"}


# -- depth bins and the population S' ------------------------------------------------------------------------
def depth(decisions: Iterable[Decision], choices: Mapping[str, str]) -> int:
    """How many decisions of an arch compute a block (are not set to one of :data:`SKIP_OPTIONS`)."""
    return sum(1 for d in decisions if choices[d.name] not in SKIP_OPTIONS)


def depth_ranges(lo: int, hi: int, n: int) -> list[tuple[int, int]]:
    """``lo..hi`` cut into ``n`` ranges of consecutive depths, as equal as can be (fewer depths than bins: some
    ranges repeat)."""
    values, ranges = list(range(lo, hi + 1)), []
    for i in range(n):
        first, last = round(i * len(values) / n), round((i + 1) * len(values) / n)
        chunk = values[first:last] or [values[min(first, len(values) - 1)]]
        ranges.append((chunk[0], chunk[-1]))
    return ranges


class DepthBins:
    """Archs binned by depth (AIO-P bins OFA bodies by their number of blocks, 5 bins).

    The depths that archs drawn as the supernet trains them reach (``pool`` uniform archs) are cut into ``n`` ranges
    of consecutive depths, as equal as can be: over AIO-P's MobileNetV3 depths 10..20 this gives the paper's bins
    [10, 11], [12, 13], [14, 16], [17, 18], [19, 20]. A space without skip options has one depth, held by every bin.
    """

    def __init__(self, decisions: list[Decision], n: int, seed: int, pool: int = DEPTH_POOL):
        self.decisions = decisions
        rng = random.Random(seed)
        depths = {depth(decisions, uniform_arch(decisions, rng)) for _ in range(pool)}
        self.ranges = depth_ranges(min(depths), max(depths), n)

    def sample(self, b: int, rng: random.Random) -> dict[str, str]:
        """A random arch of bin ``b``: a depth of its range, which decisions compute a block, then each decision's
        option among its blocks (or its skips), all uniform."""
        lo, hi = self.ranges[b]
        blocks = {d.name: [o for o in d.options if o not in SKIP_OPTIONS] for d in self.decisions}
        skips = {d.name: [o for o in d.options if o in SKIP_OPTIONS] for d in self.decisions}
        always = [d.name for d in self.decisions if not skips[d.name]]
        optional = [d.name for d in self.decisions if skips[d.name] and blocks[d.name]]
        k = min(max(rng.randint(lo, hi) - len(always), 0), len(optional))
        computing = set(always) | set(rng.sample(optional, k))
        return {d.name: rng.choice(blocks[d.name] if d.name in computing else skips[d.name]) for d in self.decisions}


class Population:
    """S' of AIO-P: ``per_bin`` archs of each bin, oldest first. :meth:`refresh`, called once per minibatch, is the
    paper's round robin: the next bin replaces its oldest arch by a new random arch of that bin.

    ``bins``: anything with ``ranges`` (one entry per bin) and ``sample(bin, rng)`` (:class:`DepthBins`).
    """

    def __init__(self, bins: Any, per_bin: int, rng: random.Random,
                 members: list[list[dict[str, str]]] | None = None, next_bin: int = 0):
        self.bins = bins
        self.members = members if members is not None else \
            [[bins.sample(b, rng) for _ in range(per_bin)] for b in range(len(bins.ranges))]
        self.next_bin = next_bin

    def refresh(self, rng: random.Random) -> dict[str, str]:
        """Replace the oldest arch of the next bin by a new one of that bin; returns the new arch."""
        b = self.next_bin
        new = self.bins.sample(b, rng)
        self.members[b] = self.members[b][1:] + [new]
        self.next_bin = (b + 1) % len(self.members)
        return new

    def archs(self) -> list[dict[str, str]]:
        return [arch for members in self.members for arch in members]


# -- latent sampling -----------------------------------------------------------------------------------------
def moments(features: Iterable[list[Tensor]]) -> tuple[list[Tensor], list[Tensor]]:
    """Per feature level, the mean and the standard deviation over bodies of their features (AIO-P eq. 2-3: the
    population variance over S', so one body has sigma 0), accumulated one body at a time (Welford)."""
    n, mean, m2 = 0, [], []
    for levels in features:
        n += 1
        if n == 1:
            mean, m2 = [f.clone() for f in levels], [torch.zeros_like(f) for f in levels]
            continue
        for m, s, f in zip(mean, m2, levels):
            delta = f - m
            m.add_(delta / n)
            s.add_(delta * (f - m))
    if n == 0:
        raise ValueError("moments of no features")
    return mean, [(s / n).clamp_min(0).sqrt() for s in m2]


def sample_latent(mu: list[Tensor], sigma: list[Tensor], generator: torch.Generator) -> list[Tensor]:
    """``z = mu + zeta * sigma`` per level, ``zeta`` standard normal per element and drawn anew for each level (the
    supplement: "sample using unique zeta at each scale")."""
    return [m + torch.randn(m.shape, generator=generator, device=m.device, dtype=m.dtype) * s
            for m, s in zip(mu, sigma)]


@contextmanager
def batch_statistics(module: nn.Module) -> Iterator[None]:
    """Forwards in train mode (BatchNorm normalises by the batch, as the supernet trained) that leave every buffer
    (BatchNorm's running statistics) as it was."""
    saved = {name: b.clone() for name, b in module.named_buffers()}
    was_training = module.training
    module.train()
    try:
        yield
    finally:
        module.train(was_training)
        with torch.no_grad():
            for name, b in module.named_buffers():
                b.copy_(saved[name])


def body_features(supernet: nn.Module, archs: Iterable[Mapping[str, str]], images: Tensor) -> Iterator[list[Tensor]]:
    """The feature levels of ``images`` through each arch of ``archs`` (``supernet.set_choices``), one at a time."""
    for choices in archs:
        supernet.set_choices(choices)
        yield list(supernet(images))


def latent_batch(supernet: nn.Module, archs: list[Mapping[str, str]], images: Tensor, generator: torch.Generator
                 ) -> list[Tensor]:
    """A latent sample of ``images``' features over the population ``archs`` (no gradient; buffers untouched)."""
    with torch.no_grad(), batch_statistics(supernet):
        mu, sigma = moments(body_features(supernet, archs, images))
    return sample_latent(mu, sigma, generator)


# -- options and the folder's pseudolabel.json ---------------------------------------------------------------
@dataclass(frozen=True)
class Options:
    """How pseudo-labels are made; None: the spec's first task, the ``train`` block's epochs."""

    task: str | None = None
    supernet_epochs: int | None = None
    head_epochs: int | None = None
    finetune_steps: int = 50
    bins: int = 5
    per_bin: int = 3
    sampling: Literal["latent", "body"] = "latent"
    #: the supernet's sampling rule (nascore.performance.oneshot)
    rule: Rule = "uniform"
    bn_batches: int = 8

    def one_shot(self) -> OneShot:
        """The supernet's training rule."""
        return OneShot(rule=self.rule)

    def resolved(self, spec: RunSpec) -> Options:
        """Defaults filled from ``spec``; every value checked (a NascoreError naming the flag)."""
        if spec.train is None:
            raise NascoreError(f"{spec.source}: bench pseudo-label trains with the spec's train: block (optimiser, "
                               "learning rate, batch size); the spec has none")
        names = [t.name for t in spec.tasks]
        task = names[0] if self.task is None else self.task
        if task not in names:
            raise NascoreError(f"--task {task!r} is not a task of {spec.source} ({', '.join(names)})")
        out = replace(self, task=task, supernet_epochs=self.supernet_epochs or spec.train.epochs,
                      head_epochs=self.head_epochs or spec.train.epochs)
        least = {"supernet_epochs": 1, "head_epochs": 1, "finetune_steps": 0, "bins": 1, "per_bin": 1,
                 "bn_batches": 1}
        for key, low in least.items():
            value = getattr(out, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise NascoreError(f"{FLAGS[key]} must be a whole number of at least {low}, not {value!r}")
        if out.sampling not in ("latent", "body"):
            raise NascoreError(f"--sampling must be latent or body, not {out.sampling!r}")
        if out.rule not in RULES:
            raise NascoreError(f"--rule must be one of {', '.join(RULES)}, not {out.rule!r}")
        return out


#: each option's default: what a folder made before an option existed was made with
DEFAULTS = {f.name: f.default for f in fields(Options)}


class Info(BaseModel):
    """``pseudolabel.json``: what made the folder's labels, and what the shared phases cost."""

    model_config = ConfigDict(extra="forbid")
    format: Literal["nascore-pseudo-labels"]
    version: Literal[1]
    method: str
    pretrain_task: str
    options: dict[str, Any]
    depth_bins: list[tuple[int, int]]
    seconds: dict[str, float | None]
    #: the pretraining task's primary metric, mean over 5 random paths of the supernet with its own head
    supernet_check: float | None = None


def read_info(out_dir: Path) -> Info:
    path = out_dir / PSEUDO_LABELS
    data = load_user_json(path, "pseudo-label info", 1 << 20, finite=True)
    try:
        return Info.model_validate(data)
    except ValidationError as exc:
        raise NascoreError(f"{path} is not a valid pseudo-label info file ({exc.error_count()} problems: "
                           f"{exc.errors()[0]['loc']}: {exc.errors()[0]['msg']})") from None


def write_info(out_dir: Path, info: Info) -> None:
    atomic_write_text(out_dir / PSEUDO_LABELS, info.model_dump_json(indent=1) + "\n")


# -- the phases ----------------------------------------------------------------------------------------------
def supernet_check(spec: RunSpec, parts: Parts, network: Network, archs: int = 5) -> float:
    """How well the trained supernet does on its own task: the mean primary metric of ``archs`` uniform random paths
    (BatchNorm re-estimated on each), with its pretraining head; near chance, its bodies carry no signal."""
    network = copy.deepcopy(network)
    task = parts.tasks[0]
    task.build_head(network.backbone.feature_info, network.backbone.pre_logits, parts.info)  # its classes
    rng, values = random.Random(epoch_seed(parts.seed, 0, _CHECK)), []
    for _ in range(archs):
        network.backbone.set_choices(uniform_arch(network.backbone.decisions(), rng))
        recalibrate_batchnorm(network, itertools.islice(batches(parts, spec.train, 0, _BN), 8), parts.device)
        metrics = validate(network, parts.val_set, parts.collate, [task], spec.train, parts.device)
        values.append(metrics[f"val/{task.name}/{task.primary_metric}"])
    return sum(values) / len(values)


def train_shared_head(spec: RunSpec, parts: Parts, supernet: Supernet, task: Task, options: Options, path: Path,
                      reporter: Reporter) -> tuple[nn.Module, float, DepthBins]:
    """One head of ``task`` for every body of the space, trained on latent samples over the population S' (or on
    one body per minibatch: ``sampling="body"``), checkpointed to ``path``; returns it, its seconds and the bins."""
    cfg, device, epochs = spec.train, parts.device, options.head_epochs
    bins = DepthBins(supernet.decisions(), options.bins, epoch_seed(parts.seed, 0, _FIRST_POPULATION))
    population = Population(bins, options.per_bin, random.Random(epoch_seed(parts.seed, 1, _FIRST_POPULATION)))
    torch.manual_seed(parts.seed)
    head = task.build_head(supernet.feature_info, supernet.pre_logits, parts.info).to(device)
    optimizer = weight_optimizer(head.parameters(), cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)

    def run_epoch(epoch: int) -> dict[str, float]:
        rng = random.Random(epoch_seed(parts.seed, epoch, _REFRESH))
        zeta = torch.Generator(device=device).manual_seed(epoch_seed(parts.seed, epoch, _ZETA))
        set_lr(optimizer, scheduled_lr(cfg, epoch, epochs))
        head.train()
        total, steps = 0.0, 0
        for step, (images, targets) in enumerate(batches(parts, cfg, epoch, DATA)):
            new = population.refresh(rng)
            images, targets = to_device(images, device), to_device(targets, device)
            if options.sampling == "latent":
                z = latent_batch(supernet, population.archs(), images, zeta)
            else:
                with torch.no_grad(), batch_statistics(supernet):
                    z = next(body_features(supernet, [new], images))
            loss = task.loss(head(z), targets)
            check_finite(loss, epoch, step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, steps = total + loss.item(), steps + 1
        return {"lr": optimizer.param_groups[0]["lr"], "loss": total / max(steps, 1)}

    def state() -> dict[str, Any]:
        return {"head": head.state_dict(), "optimizer": optimizer.state_dict(), "population": population.members,
                "next_bin": population.next_bin}

    def load(s: dict[str, Any]) -> None:
        head.load_state_dict(s["head"])
        optimizer.load_state_dict(s["optimizer"])
        population.members, population.next_bin = [list(m) for m in s["population"]], int(s["next_bin"])

    # the rule is in the supernet's fingerprint (when not the default, so that older heads resume)
    head_options = {k: v for k, v in asdict(options).items() if k not in ("finetune_steps", "bn_batches", "rule")}
    fingerprint = json.dumps({"supernet": supernet_fingerprint(spec, options.supernet_epochs, options.one_shot()),
                              "options": head_options}, sort_keys=True)
    loop = SharedPhaseLoop(path, "shared head", fingerprint, epochs, parts, state, load, reporter)
    loop(run_epoch)
    seconds = loop.seconds
    return head, seconds, bins


def finetune_and_evaluate(spec: RunSpec, parts: Parts, network: Network, task: Task, steps: int, bn_batches: int
                          ) -> tuple[dict[str, float], str | None]:
    """Fine-tune ``network`` (the supernet fixed to one arch + the shared head) for ``steps`` steps, re-estimate its
    BatchNorm statistics on ``bn_batches`` training batches, evaluate on the val split: (metrics, note)."""
    cfg, device = spec.train, parts.device
    torch.manual_seed(parts.seed)
    optimizer = weight_optimizer(network.parameters(), cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)
    network.train()
    step, epoch = 0, 0
    try:
        while step < steps:
            before = step
            for images, targets in itertools.islice(batches(parts, cfg, epoch, _FINETUNE), steps - step):
                set_lr(optimizer, scheduled_lr(cfg, step, steps))
                train_step(network, images, targets, [task], optimizer, device, epoch, step)
                step += 1
            if step == before:  # no batch at all
                break
            epoch += 1
    except NonFiniteLossError as exc:
        return {}, f"fine-tuning diverged (non-finite loss at step {exc.step})"
    recalibrate_batchnorm(network, itertools.islice(batches(parts, cfg, 0, _BN), bn_batches), device)
    return validate(network, parts.val_set, parts.collate, [task], cfg, device), None


# -- the command ---------------------------------------------------------------------------------------------
def open_pseudo_labels(spec: RunSpec, parts: Parts, out_dir: Path, n: int, seed: int, options: Options,
                       reporter: Reporter) -> tuple[Manifest, list[int]]:
    """Check ``out_dir`` (new, or pseudo-labels of the same plan and options), write its manifest and info if new;
    returns the manifest and the plan indices still to label."""
    if (out_dir / MANIFEST).exists() or (out_dir / MANIFEST).is_symlink():
        if (out_dir / PSEUDO_LABELS).exists():
            made = read_info(out_dir).options
            differs = [f"{FLAGS.get(k, k)} {made.get(k)!r} (not {v!r})" for k, v in asdict(options).items()
                       if made.get(k, DEFAULTS.get(k)) != v]
            if differs:
                raise NascoreError(f"--out {out_dir} holds pseudo-labels made with {', '.join(differs)}; pass the "
                                   "same options to resume them, or another --out")
        elif (out_dir / RECORDS).is_dir() and any((out_dir / RECORDS).iterdir()):
            raise NascoreError(f"--out {out_dir} is a collection of trained labels (bench collect, no "
                               f"{PSEUDO_LABELS}); pseudo-labels go in another folder")
    manifest, todo = open_collection(spec, parts, out_dir, n, seed, reporter)
    if not (out_dir / PSEUDO_LABELS).exists():
        write_info(out_dir, Info(format=INFO_FORMAT, version=1, method=_method(options),
                                 pretrain_task=parts.tasks[0].name, options=asdict(options), depth_bins=[],
                                 seconds={"supernet": None, "head": None}))
    return manifest, todo


def _method(options: Options) -> str:
    how = "latent sampling" if options.sampling == "latent" else "body swapping"
    kind = "single-path" if options.rule == "uniform" else f"{options.rule}-rule one-shot"
    return (f"pseudo-label: AIO-P shared {options.task} head ({how}) on a {kind} supernet, "
            f"{options.finetune_steps} fine-tuning steps")


@one_writer("out_dir")
def pseudo_label(spec: RunSpec, out_dir: Path, n: int, seed: int, options: Options = Options(),
                 first: int | None = None, supernet_from: Path | None = None, reporter: Reporter | None = None
                 ) -> dict[str, Any]:
    """Pseudo-label (or resume) the plan of ``n`` archs drawn with ``seed`` into ``out_dir``; only plan indices below
    ``first`` when given; ``out_dir``'s one writer (``nascore.lock``). ``supernet_from``: a finished ``supernet.pt``
    of another folder (same spec and ``supernet_epochs``) used instead of training one. Returns counts and
    seconds."""
    reporter = reporter or Reporter()
    options = options.resolved(spec)
    if n < 1:
        raise NascoreError(f"--archs must be at least 1, not {n}")
    if first is not None and first < 0:
        raise NascoreError(f"first must be at least 0, not {first}")
    adopted = None if supernet_from is None else checked_supernet(supernet_from, spec, options.supernet_epochs,
                                                                   options.one_shot(), "--supernet-epochs")
    parts = Parts.build(spec)
    manifest, todo = open_pseudo_labels(spec, parts, out_dir, n, seed, options, reporter)
    if first is not None:
        todo = [i for i in todo if i < first]
    collector = Collector(manifest, parts)
    info = read_info(out_dir)
    if todo or (info.supernet_check is None and (out_dir / SUPERNET_FILE).exists()):
        if adopted is not None and not (out_dir / SUPERNET_FILE).exists():
            save_checkpoint(adopted, out_dir / SUPERNET_FILE)
        pretrained, info.seconds["supernet"] = train_supernet(spec, parts, out_dir / SUPERNET_FILE,
                                                              options.supernet_epochs, reporter, options.one_shot())
        supernet = pretrained.backbone
        if info.supernet_check is None:
            info.supernet_check = supernet_check(spec, parts, pretrained)
            reporter.log(f"supernet: {info.pretrain_task} {collector.manifest.tasks[info.pretrain_task].label} "
                         f"of 5 random paths with its own head: {info.supernet_check:.4f} on average")
        write_info(out_dir, info)
    if todo:
        task = next(t for t in parts.tasks if t.name == options.task)
        head, info.seconds["head"], bins = train_shared_head(spec, parts, supernet, task, options, out_dir / HEAD_FILE,
                                                             reporter)
        info.depth_bins = bins.ranges
        write_info(out_dir, info)
        supernet_state = {k: v.clone() for k, v in supernet.state_dict().items()}
        head_state = {k: v.clone() for k, v in head.state_dict().items()}
        label = collector.manifest.tasks[task.name].label
        with reporter.progress(len(todo), f"pseudo-label {len(todo)} archs ({task.name})") as advance:
            for index in todo:
                record = collector.measured(index)
                began = time.perf_counter()
                supernet.load_state_dict(supernet_state)
                head.load_state_dict(head_state)
                supernet.set_choices(collector.manifest.plan[index].choices)
                metrics, problem = finetune_and_evaluate(spec, parts, Network(supernet, {task.name: head}), task,
                                                         options.finetune_steps, options.bn_batches)
                note = f"{info.method} (see {PSEUDO_LABELS})"
                record["tasks"][task.name] = {"metrics": {k: finite(v) for k, v in metrics.items()},
                                              "label": finite(metrics.get(label)),
                                              "seconds": round(time.perf_counter() - began, 3),
                                              "note": note if problem is None else f"{note}; {problem}"}
                write_record(out_dir, Record.model_validate(record))
                advance()
    records = PerfDataset.read(out_dir).records
    per_arch = [r.tasks[options.task].seconds for r in records if options.task in r.tasks]
    info.seconds["finetune_per_arch"] = sum(per_arch) / len(per_arch) if per_arch else None
    write_info(out_dir, info)
    return {"labelled": len(todo), "done": len(records), "archs": n, "task": options.task,
            "sampling": options.sampling, "seconds": dict(info.seconds), "depth_bins": info.depth_bins,
            "supernet_check": info.supernet_check, "pretrain_task": info.pretrain_task}
