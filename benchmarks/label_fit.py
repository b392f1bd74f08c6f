"""What a collection's labels measure: how well each arch fits its training images, or how well it generalises.

``--archs`` archs of a collection, evenly spaced over its labelled archs sorted by parameter count, are trained again
exactly as the collection trained them (its spec, seed and ``train`` block, with ``--set`` overrides, e.g.
``train.lr=0.05``), then measured on the training split as on the validation split. It prints the Spearman
correlations of the labels (the new validation metric; with no override they are the collection's own, to the digit)
with the fit (the training split's metric and the last epoch's training loss), with the generalisation gap (training
minus validation metric), and of the parameter count with each: a label that follows the fit and not the gap
measures how fast an arch trains, not how much it overfits; and, per epoch, how its mean training loss ranks the
labels. Each arch's result is a JSON file in ``--out`` (a killed run resumes); ``--shard i/n`` trains every n-th
arch from the i-th, for processes side by side on one ``--out``.

    python benchmarks/label_fit.py perf/fbnet_12ep --archs 24 --out fit                # two processes:
    python benchmarks/label_fit.py perf/fbnet_12ep --archs 24 --out fit --shard 0/2    # and --shard 1/2

Smoke run (tests/test_benchmarks.py; tiny sizes, numbers meaningless):

    python benchmarks/label_fit.py perf/fbnet_12ep --archs 3 --out /tmp/fit --set train.epochs=1 \
        --set dataset.num_train=16 --set dataset.num_val=8
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from label_noise import budget_manifest  # benchmarks/ is the script's folder, so on sys.path

from nascore.fileio import atomic_write_text
from nascore.performance.collect import Collector
from nascore.performance.perfdata import PerfDataset
from nascore.performance.predictors.scoring import score_text, scores
from nascore.train import validate


def rho(a: list[float], b: list[float]) -> str:
    """Spearman's rho of ``a`` and ``b`` for the table (n/a where undefined)."""
    return score_text(scores(a, b)["spearman"])


def spaced(dataset: PerfDataset, task: str, n: int) -> list[int]:
    """``n`` plan indices evenly spaced over the labelled archs sorted by parameter count (both ends included)."""
    records = sorted((r for r in dataset.records if r.tasks[task].label is not None), key=lambda r: r.params)
    if n > len(records):
        raise SystemExit(f"--archs {n}: the collection has {len(records)} labelled archs")
    return [records[round(k * (len(records) - 1) / max(n - 1, 1))].index for k in range(n)]


def shard_of(text: str) -> tuple[int, int]:
    """``--shard i/n`` as (i, n), 0 <= i < n."""
    i, _, n = text.partition("/")
    if not (i.isdigit() and n.isdigit() and int(i) < int(n)):
        raise argparse.ArgumentTypeError(f"expected i/n with 0 <= i < n, e.g. 0/2; got {text!r}")
    return int(i), int(n)


def fit(collector: Collector, index: int) -> dict[str, object]:
    """Plan entry ``index`` trained as the collection trains it, measured on the validation and training splits."""
    parts, cfg = collector.parts, collector.spec.train
    task = parts.tasks[0]
    network, losses = collector.trained(index, task)
    return {"index": index, "losses": losses,
            "val": validate(network, parts.val_set, parts.collate, [task], cfg, parts.device),
            "train": {k.replace("val/", "train/", 1): v for k, v in
                      validate(network, parts.train_set, parts.collate, [task], cfg, parts.device).items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", help="a performance dataset folder (its spec, plan and labels)")
    p.add_argument("--archs", type=int, default=24)
    p.add_argument("--set", dest="overrides", action="append", default=[], help="a spec override (as nascore's)")
    p.add_argument("--out", required=True, help="folder for one JSON file per arch (resumed)")
    p.add_argument("--shard", type=shard_of, default=(0, 1), help="i/n: train every n-th arch from the i-th")
    args = p.parse_args()
    torch.set_num_threads(1)
    dataset = PerfDataset.read(args.data)
    source = dataset.manifest
    task = next(iter(source.tasks))
    collector = Collector(budget_manifest(source, args.overrides, source.spec.get("seed", 0), source.archs))
    picked = spaced(dataset, task, args.archs)
    shard, shards = args.shard
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for index in picked[shard::shards]:
        path = out / f"{index:05d}.json"
        if not path.exists():
            atomic_write_text(path, json.dumps(fit(collector, index)))
            print(f"arch {index} done", flush=True)
    results = {r["index"]: r for r in (json.loads(f.read_text()) for f in out.glob("*.json"))}
    if any(i not in results for i in picked):
        print(f"{sum(i in results for i in picked)} of {len(picked)} archs done; the table when all are")
        return
    label = source.tasks[task].label  # val/<task>/<metric>; fit() keys the training split's as train/<task>/<metric>
    on_train = label.replace("val/", "train/", 1)
    records = {r.index: r for r in dataset.records}
    labels = [results[i]["val"][label] for i in picked]
    fits = [results[i]["train"][on_train] for i in picked]
    columns = {
        f"train {label.split('/')[-1]}": fits,
        "last epoch's training loss": [results[i]["losses"][-1] for i in picked],
        "gap (train - val)": [f - v for f, v in zip(fits, labels)],
        "params": [records[i].params for i in picked]}
    same = max(abs(a - records[i].tasks[task].label) for a, i in zip(labels, picked))
    print(f"{len(picked)} archs; label {min(labels):.3f}-{max(labels):.3f}, the collection's labels within {same:.4f}")
    print("| against | label | params |\n|---|---|---|")
    for name, values in columns.items():
        if name != "params":
            print(f"| {name} | {rho(values, labels)} | {rho(values, columns['params'])} |")
    print(f"| params | {rho(columns['params'], labels)} | |")
    print("\n| epoch | its mean training loss against the label |\n|---|---|")  # when the order appears
    for epoch in range(len(results[picked[0]]["losses"])):
        print(f"| {epoch} | {rho([results[i]['losses'][epoch] for i in picked], labels)} |")


if __name__ == "__main__":
    main()
