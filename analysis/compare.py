"""``nascore compare SPEC... --seeds N --out DIR``: several searches (strategies, or settings of one) on one dataset,
tasks and training budget, each over N seeds. Every run is ``nascore run`` of its spec with ``seed`` set, in
``DIR/<spec name>/seed<s>``; its found arch is trained from scratch by the spec's ``train`` block, which must be
the same in every spec, so the archs are compared at one budget. One table (the trained metric's mean and standard
deviation over seeds, multiply-adds, and the search's cost: archs trained during the search, the archs a predictor
was fitted on, search minutes) and a plot of metric against multiply-adds. A finished run is not run again; an
unfinished one is resumed; ``compare.json`` keeps each finished run's entry. A run's search time is its search
epochs' time as its search checkpoint records it: over every attempt of a resumed run (an epoch cut short by a kill
is counted once, when it is run again). A folder whose runs were made from other specs (or ``--set`` options) is
refused before anything runs, saying what changed.
"""
from __future__ import annotations

import io
import json
import os
import statistics
from pathlib import Path
from typing import Any

from nascore.errors import NascoreError
from nascore.fileio import (
    SPEC_MAX_BYTES,
    atomic_write_bytes,
    atomic_write_text,
    load_checkpoint,
    load_user_yaml,
    parse_user_json,
    read_user_text,
)
from nascore.lock import one_writer
from nascore.performance.predictors.file import PredictorFile
from nascore.progress import Reporter
from nascore.run import run_spec
from nascore.rundir import SPEC_FILE, SUMMARY_FILE, open_run, read_metrics
from nascore.spec import load_spec, spec_changes
from nascore.spec_model import RunSpec

RESULTS, PLOT = "compare.json", "compare.png"


def load_specs(paths: list[str], overrides: list[str]) -> dict[str, RunSpec]:
    """Spec name (its file's stem, numbered when two share one) -> spec; they must share dataset, tasks and train."""
    specs: dict[str, RunSpec] = {}
    for path in paths:
        name, n = Path(path).stem, 2
        while name in specs:
            name, n = f"{Path(path).stem}_{n}", n + 1
        specs[name] = load_spec(path, overrides)
    first = next(iter(specs.values()))
    for spec in specs.values():
        if spec.train is None:
            raise NascoreError(f"{spec.source}: compare trains every found arch with the spec's train: block; the "
                               "spec has none")
        for key in ("dataset", "tasks", "train"):
            if spec.dump().get(key) != first.dump().get(key):
                raise NascoreError(f"{spec.source}: its {key}: block differs from {first.source}'s; compared "
                                   "searches share the dataset, the tasks and the training of the found archs")
    return specs


def check_unchanged(spec: RunSpec, run_dir: Path, out_dir: Path) -> None:
    """Refuse a run folder of the compare folder ``out_dir`` that was made from another spec than ``spec`` (or other
    ``--set`` options): saying what changed and what the user can do."""
    path = run_dir / SPEC_FILE
    if not os.path.lexists(path):
        return
    changes = spec_changes(load_user_yaml(path, "the run's spec", SPEC_MAX_BYTES), spec.dump())
    if changes:
        raise NascoreError(
            f"{run_dir} holds a run of {spec.source} as it was before it changed (or with other --set options): "
            f"{'; '.join(changes)}. To reuse and resume the runs in {out_dir}, give the specs and --set options "
            f"they were made with; to compare the changed spec, pass another --out (or delete {run_dir} to run it "
            "again here)")


def search_seconds(out_dir: Path) -> float | None:
    """A run's search time: its search epochs' seconds over every attempt, as its search checkpoint records them
    (None without one)."""
    path = out_dir / "checkpoints" / "search.pt"
    if not os.path.lexists(path):
        return None
    return round(float(load_checkpoint(path).get("seconds", 0.0)), 1)


def run_one(spec: RunSpec, out_dir: Path) -> dict[str, Any]:
    """Run (or resume) one spec in ``out_dir``; its compare entries, one per found arch."""
    reporter = Reporter()
    resume = os.path.lexists(out_dir / SPEC_FILE)
    run = open_run(spec, out_dir, resume, reporter=reporter)
    reporter.log(f"{'resuming' if resume else 'running'} {spec.source} with seed {spec.seed} in {out_dir}")
    summary = run_spec(run)
    seconds = search_seconds(out_dir)
    search_rows = [r for r in read_metrics(out_dir / "metrics.jsonl") if r["phase"] == "search"]
    labelled = None
    if spec.strategy.name == "predictor":
        file = PredictorFile.load(spec.strategy.config.file)
        task = spec.strategy.config.task or spec.tasks[0].name
        labelled = len(file.tasks[task].fitted)
    entries = []
    for owner, entry in summary["archs"].items():
        task = next(t for t in run.parts.tasks if owner in ("shared", t.name))
        trained = entry["train"]
        entries.append({"owner": owner, "seed": spec.seed, "strategy": spec.strategy.name,
                        "metric": f"val/{task.name}/{task.primary_metric}", "higher_is_better": task.higher_is_better,
                        "value": trained[f"val/{task.name}/{task.primary_metric}"], "macs": trained["macs"],
                        "params": trained["params"], "choices": entry["choices"],
                        "archs_trained": int(search_rows[-1].get("archs_trained", 0)) if search_rows else 0,
                        "labelled_archs": labelled,
                        "search_seconds": seconds})
    return {"entries": entries}


@one_writer("out_dir")
def compare(paths: list[str], seeds: list[int], out_dir: Path, overrides: list[str],
            reporter: Reporter | None = None) -> dict[str, list[dict[str, Any]]]:
    """Run every spec with every seed (finished ones are read back) and plot them, ``out_dir``'s one writer
    (``nascore.lock``); returns spec name -> entries."""
    reporter = reporter or Reporter()
    specs = load_specs(paths, overrides)
    results_path = out_dir / RESULTS
    results: dict[str, dict[str, Any]] = {}
    if os.path.lexists(results_path):
        results = parse_user_json(read_user_text(results_path, "compare results", 16 << 20), str(results_path))
        if not (isinstance(results, dict) and all(isinstance(v, dict) and isinstance(v.get("entries"), list)
                                                  for v in results.values())):
            raise NascoreError(f"{results_path} is not a compare results file (expected an object of runs, each "
                               "with \"entries\"); pass another --out")
    seeded = {(name, seed): load_spec(spec.source, [*overrides, f"seed={seed}"]) for name, spec in specs.items()
              for seed in seeds}
    for (name, seed), spec in seeded.items():  # before anything runs
        check_unchanged(spec, out_dir / name / f"seed{seed}", out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for (name, seed), spec in seeded.items():
        key = f"{name}/seed{seed}"
        run_dir = out_dir / name / f"seed{seed}"
        if key in results and (run_dir / SUMMARY_FILE).exists():
            continue
        results[key] = run_one(spec, run_dir)
        atomic_write_text(results_path, json.dumps(results, indent=1) + "\n")
    entries = {name: [e for seed in seeds for e in results[f"{name}/seed{seed}"]["entries"]] for name in specs}
    plot(out_dir / PLOT, entries)
    return entries


def table_rows(results: dict[str, list[dict[str, Any]]]) -> list[tuple[str, ...]]:
    """One row per spec and owner: metric mean +- std over seeds, MACs, search cost."""
    rows = []
    for name, entries in results.items():
        for owner in dict.fromkeys(e["owner"] for e in entries):
            mine = [e for e in entries if e["owner"] == owner]
            values = [e["value"] for e in mine]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            seconds = [e["search_seconds"] for e in mine if e["search_seconds"] is not None]
            labelled = mine[0]["labelled_archs"]
            rows.append((name, mine[0]["strategy"], owner, str(len(mine)),
                         f"{mine[0]['metric'].removeprefix('val/')} {statistics.fmean(values):.4f} +- {std:.4f}",
                         f"{statistics.fmean(e['macs'] for e in mine) / 1e6:.2f}",
                         f"{statistics.fmean(e['archs_trained'] for e in mine):g}",
                         "-" if labelled is None else str(labelled),
                         f"{statistics.fmean(seconds) / 60:.1f}" if seconds else "-"))
    return rows


#: "trained": archs trained from scratch during the search; "labelled": archs the predictor file was fitted on
HEADER = ("spec", "strategy", "arch", "seeds", "metric mean +- std", "M MACs", "trained", "labelled", "search min")


def plot(path: Path, results: dict[str, list[dict[str, Any]]]) -> None:
    """Trained metric against multiply-adds, one marker per run, one colour per spec."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # matplotlib: only when a plot is drawn
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for name, entries in results.items():
        ax.scatter([e["macs"] / 1e6 for e in entries], [e["value"] for e in entries], label=name, alpha=0.8)
    metric = next(e["metric"] for entries in results.values() for e in entries)
    ax.set(xlabel="multiply-adds (M)", ylabel=metric, title="found archs, trained with one budget")
    ax.grid(alpha=0.3)
    ax.legend()
    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=100)
    atomic_write_bytes(path, image.getvalue())
