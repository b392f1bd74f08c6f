"""AIO-P transfer benchmark: an ``aio-p`` pretrained on every arch of one space, fine-tuned on a few labelled archs
of another space (``nascore predictor transfer``), with and without one K-Adapter (``nascore predictor adapt``),
against an ``aio-p`` fitted from scratch and every baseline fitted on the same few archs.

Input: two performance datasets of one task (the shipped ``fbnet_12ep`` and ``fbnetv2_12ep`` collections) and a
dataset to train the adapter on (``--adapter-data``, ``--adapter-task``):

    python benchmarks/aiop_transfer.py perf/fbnet_12ep perf/fbnetv2_12ep --adapter-data perf/fbnet \\
        --adapter-task saliency --seeds 5 --labels 20 --json /tmp/aiop_transfer.json

For each direction (pretrain on one, transfer to the other) and each of ``--seeds`` draws of ``--labels`` target
archs: every ``--train`` mode with no adapter and with the adapter; ``aio-p`` from scratch on the drawn archs
(``--scratch`` configs); the baselines; and the pretrained base with no fine-tuning at all (``zero-shot``, which
ranks as the base does). All are scored on the target's remaining archs; mean +- standard deviation over the
draws. The adapter's labels are compared with both spaces' labels on the archs they share (a leak check).
Prints a Markdown table and writes every number as JSON.

Smoke run (tests/test_benchmarks.py; tiny sizes, numbers meaningless):

    python benchmarks/aiop_transfer.py perf/fbnet_12ep perf/fbnetv2_12ep --adapter-data perf/fbnet \
        --adapter-task saliency --seeds 1 --labels 5 --base-set epochs=1 --set fine_tune_epochs=1 \
        --set adapter_epochs=1 --scratch epochs=1 --json /tmp/aiop_transfer.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from nascore.performance.perfdata import PerfDataset
from nascore.performance.predictors.adapters import TRAIN_MODES, adapt_file, draw_labelled, transfer_file
from nascore.performance.predictors.aiop import AIOPPredictor
from nascore.performance.predictors.fitting import evaluate_file, fit_file, task_samples
from nascore.performance.predictors.scoring import scores
from nascore.spec import apply_overrides


def log(message: str, start: float) -> None:
    print(f"[{time.perf_counter() - start:6.0f} s] {message}", file=sys.stderr, flush=True)


def only_task(ds: PerfDataset) -> str:
    tasks = list(ds.manifest.tasks)
    if len(tasks) != 1:
        raise SystemExit(f"{ds.directory} labels {', '.join(tasks)}; the spaces' datasets must label one task")
    return tasks[0]


def leak_check(adapter: PerfDataset, others: list[PerfDataset]) -> dict:
    """Per task of the adapter's dataset: Spearman between its labels and each space dataset's on the archs both
    hold (same space and choices)."""
    out: dict = {}
    for adapter_task, (_, adapter_pairs) in task_samples([adapter]).items():
        theirs = {k: s.label for s, k in adapter_pairs}
        for ds in others:
            pairs = [(theirs[k], s.label) for s, k in task_samples([ds])[only_task(ds)][1] if k in theirs]
            out.setdefault(adapter_task, {})[str(ds.directory)] = {
                "shared_archs": len(pairs), "spearman": scores(*zip(*pairs))["spearman"] if len(pairs) > 1 else None}
    return out


def summary(runs: list[dict]) -> dict:
    def stat(key: str) -> list[float]:
        values = [r[key] for r in runs if r[key] is not None]
        return [statistics.mean(values), statistics.pstdev(values)] if values else [float("nan"), 0.0]

    return {"spearman": stat("spearman"), "kendall": stat("kendall"), "mae": stat("mae"), "n": runs[0]["n"],
            "runs": runs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("spaces", nargs=2, help="two performance dataset folders, one task each (one per space)")
    p.add_argument("--adapter-data", help="dataset to train the adapter on (none: no adapter rows)")
    p.add_argument("--adapter-task", help="its task (default: its only one)")
    p.add_argument("--seeds", type=int, default=5, help="draws of the labelled target archs")
    p.add_argument("--labels", type=int, default=20)
    p.add_argument("--train", nargs="+", default=list(TRAIN_MODES), choices=TRAIN_MODES)
    p.add_argument("--base-set", action="append", default=[], metavar="KEY=VALUE",
                   help="aio-p option of pretraining (default: aio-p's defaults)")
    p.add_argument("--set", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="aio-p-adapters option (adapter_* and fine_tune_*; default: AIO-P's)")
    p.add_argument("--scratch", action="append", default=[], metavar="'KEY=VALUE ...'",
                   help="aio-p config fitted from scratch on the drawn archs (repeatable; default: aio-p's "
                        "defaults, and 100 epochs at batch size 1, fine-tuning's budget)")
    p.add_argument("--json", required=True, help="where the numbers go")
    args = p.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    spaces = [PerfDataset.read(d) for d in args.spaces]
    base_options = apply_overrides({}, args.base_set)
    options = apply_overrides({}, args.options)
    scratch = {s or "defaults": apply_overrides({}, s.split()) for s in args.scratch or ["", "epochs=100 batch_size=1"]}
    adapter = PerfDataset.read(args.adapter_data) if args.adapter_data else None
    adapter_task = (args.adapter_task or only_task(adapter)) if adapter else None
    report: dict = {"args": vars(args), "leak_check": leak_check(adapter, spaces) if adapter else None,
                    "directions": {}, "seconds": {}}

    files = {}
    for ds in spaces:
        t0 = time.perf_counter()
        base = fit_file([ds], "aio-p", base_options, seed=0)
        report["seconds"][f"pretrain {ds.manifest.space.name}"] = time.perf_counter() - t0
        files[ds.directory] = {0: base}
        log(f"pretrained aio-p on {len(ds.records)} {ds.manifest.space.name} archs", start)
        if adapter:
            t0 = time.perf_counter()
            files[ds.directory][1] = adapt_file(base, f"base of {ds.directory}", [adapter], adapter_task,
                                                overrides=options, seed=0)
            report["seconds"][f"adapter on {ds.manifest.space.name}"] = time.perf_counter() - t0
            log(f"adapter trained on {adapter_task} of {adapter.directory}", start)

    for source, target in (spaces, spaces[::-1]):
        direction = f"{source.manifest.space.name} -> {target.manifest.space.name}"
        task = only_task(target)
        pairs = task_samples([target])[task][1]
        runs: dict[str, list[dict]] = {}
        t0 = time.perf_counter()
        for seed in range(args.seeds):
            chosen = {k for _, k in draw_labelled(pairs, args.labels, torch.Generator().manual_seed(seed))}
            held = [s for s, k in pairs if k not in chosen]
            true = [s.label for s in held]
            base = files[source.directory][0].tasks[only_task(source)].predictor
            runs.setdefault("zero-shot (pretrained, no fine-tuning)", []).append(scores(base.predict(held), true))
            for k, file in files[source.directory].items():
                for mode in args.train:
                    tuned = transfer_file(file, str(source.directory), [target], args.labels, task, train=mode,
                                          overrides=options, seed=seed)
                    assert tuned.tasks[task].fitted == chosen
                    entry = evaluate_file(tuned, [target])[task]
                    for name, s in entry["scores"].items():
                        label = f"aio-p transfer, {mode}, K={k}" if name == tuned.name else name
                        if name == tuned.name or (k == 0 and mode == args.train[0]):
                            runs.setdefault(label, []).append(s)
            samples = [s for s, key in pairs if key in chosen]
            for label, config in scratch.items():
                fresh = AIOPPredictor(config)
                fresh.fit(samples, torch.Generator().manual_seed(seed))
                runs.setdefault(f"aio-p from scratch ({label})", []).append(scores(fresh.predict(held), true))
            log(f"{direction}: seed {seed} done", start)
        report["seconds"][direction] = time.perf_counter() - t0
        report["directions"][direction] = {name: summary(r) for name, r in runs.items()}
    report["seconds"]["total"] = time.perf_counter() - start
    Path(args.json).write_text(json.dumps(report, indent=1))

    for adapter_task_, by_dataset in (report["leak_check"] or {}).items():
        for d, s in by_dataset.items():
            if s["shared_archs"]:
                print(f"labels of {adapter_task_} in {adapter.directory} vs {d}: Spearman {s['spearman']:.3f} over "
                      f"{s['shared_archs']} shared archs")
    print(f"\n{args.labels} labelled target archs, {args.seeds} draws; scores on the other target archs\n")
    print("| direction | predictor | Spearman | Kendall tau | MAE |")
    print("|---|---|---|---|---|")
    for direction, by_name in report["directions"].items():
        for name, s in sorted(by_name.items(), key=lambda kv: -kv[1]["spearman"][0]):
            print(f"| {direction} ({s['n']} held out) | {name} | {s['spearman'][0]:.3f} +- {s['spearman'][1]:.3f} | "
                  f"{s['kendall'][0]:.3f} +- {s['kendall'][1]:.3f} | {s['mae'][0]:.4f} |")
    print(f"\ntotal {report['seconds']['total']:.0f} s")


if __name__ == "__main__":
    main()
