"""AIO-P pseudo-labels against trained labels: how well labels from a shared task head (``nascore bench
pseudo-label``, AIO-P's latent sampling) rank archs as training each from scratch does, and what they cost.

Input: a performance dataset of trained labels (``nascore bench collect``) and its spec; the pseudo-labels are made
for the same plan (same spec, seed and count: the same archs) into ``--out``, for the first ``--first`` plan indices:

    python benchmarks/aiop_pseudolabels.py benchmarks/perfdata/fbnet_12ep.yaml perf/fbnet_12ep --first 60 \\
        --out /tmp/aiop_pl --sampling latent body
    # FBNet's nine blocks on one supernet that learns (strict fairness, a tenth of the learning rate):
    python benchmarks/aiop_pseudolabels.py benchmarks/perfdata/fbnet_12ep.yaml perf/fbnet_12ep --first 60 \\
        --out /tmp/aiop_pl_fair --sampling latent --rule fair --set space.shared_weights=true --set train.lr=0.02

Per sampling (``latent``: AIO-P's latent sampling; ``body``: body swapping, the paper's Table 1 baseline; both use
the one supernet trained for the first), Spearman and Kendall tau of the pseudo-labels against the trained labels,
next to multiply-adds against the trained labels on the same archs; and the seconds: supernet, shared head, and per
arch against the trained labels' training seconds per arch. Prints a Markdown table, writes the numbers as JSON.

Smoke run (tests/test_benchmarks.py; tiny sizes, numbers meaningless):

    python benchmarks/aiop_pseudolabels.py benchmarks/perfdata/fbnet_12ep.yaml perf/fbnet_12ep --first 3 \
        --out /tmp/aiop_pl --supernet-epochs 1 --head-epochs 1 --finetune-steps 1 --set dataset.num_train=16 \
        --set dataset.num_val=8 --json /tmp/aiop_pseudolabels.json
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from nascore.parts import Parts
from nascore.performance.collect import plan_manifest
from nascore.performance.oneshot import RULES
from nascore.performance.perfdata import PerfDataset
from nascore.performance.predictors.scoring import score_text, scores
from nascore.performance.pseudolabel import SUPERNET_FILE, Options, pseudo_label
from nascore.spec import load_spec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("spec", help="the spec the trained labels were collected with")
    p.add_argument("true", help="performance dataset of trained labels (bench collect)")
    p.add_argument("--first", type=int, default=60, help="pseudo-label plan indices 0..FIRST-1 (default 60)")
    p.add_argument("--out", required=True, help="folder for the pseudo-label datasets (one per sampling)")
    p.add_argument("--task", help="task to label (default: the spec's first)")
    p.add_argument("--sampling", nargs="+", default=["latent", "body"], choices=("latent", "body"))
    p.add_argument("--supernet-epochs", type=int)
    p.add_argument("--head-epochs", type=int)
    p.add_argument("--finetune-steps", type=int, default=50)
    p.add_argument("--rule", default="uniform", choices=RULES,
                   help="the supernet's one-shot rule (as bench pseudo-label's --rule)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="spec override (as nascore's --set); the plan must stay the trained dataset's")
    p.add_argument("--json", default="aiop_pseudolabels.json")
    args = p.parse_args()
    torch.set_num_threads(1)

    spec = load_spec(args.spec, args.overrides)
    true = PerfDataset.read(args.true)
    m = true.manifest
    drawn = plan_manifest(spec, Parts.build(spec), m.archs, m.seed).plan
    # a dataset collected before a change of the draw (fbnetv2_12ep: one arch of 150) keeps its archs; the pseudo-
    # labels of the indices whose archs differ are left out of the comparison
    differ = {a.index for a, b in zip(drawn, m.plan) if a != b}
    if len(drawn) != len(m.plan) or len(differ) > len(m.plan) // 10:
        raise SystemExit(f"{args.true} holds another plan than {args.spec} draws with seed {m.seed}, {m.archs} archs")
    if differ:
        print(f"{args.true}: plan indices {sorted(differ)} hold other archs than the spec draws now; left out")
    task = args.task or spec.tasks[0].name
    trained = {r.index: r for r in true.records if task in r.tasks and r.tasks[task].label is not None}
    report: dict = {"spec": args.spec, "true": args.true, "task": task, "first": args.first, "runs": {}}
    out = Path(args.out)
    supernet = None
    for sampling in args.sampling:
        options = Options(task=task, supernet_epochs=args.supernet_epochs, head_epochs=args.head_epochs,
                          finetune_steps=args.finetune_steps, sampling=sampling, rule=args.rule)
        result = pseudo_label(spec, out / sampling, m.archs, m.seed, options, first=args.first,
                              supernet_from=supernet)
        supernet = supernet or out / sampling / SUPERNET_FILE
        pseudo = {r.index: r for r in PerfDataset.read(out / sampling).records
                  if r.index < args.first and r.tasks[task].label is not None}
        both = sorted((set(pseudo) & set(trained)) - differ)
        labels = [trained[i].tasks[task].label for i in both]
        pseudo_labels = [pseudo[i].tasks[task].label for i in both]
        report["runs"][sampling] = {
            "options": result, "n": len(both), "supernet_check": result["supernet_check"],
            "pseudo_vs_true": scores(pseudo_labels, labels),
            "macs_vs_true": scores([float(trained[i].macs) for i in both], labels),
            "pseudo_vs_macs": scores(pseudo_labels, [float(trained[i].macs) for i in both]),
            "pseudo_range": [min(pseudo_labels), statistics.mean(pseudo_labels), max(pseudo_labels)],
            "true_range": [min(labels), statistics.mean(labels), max(labels)],
            "seconds": {**result["seconds"],
                        "per_arch_mean": statistics.mean(pseudo[i].tasks[task].seconds for i in both),
                        "trained_per_arch_mean": statistics.mean(trained[i].tasks[task].seconds for i in both)}}
        Path(args.json).write_text(json.dumps(report, indent=1))

    print(f"{task}, plan indices 0..{args.first - 1} of {args.true}")
    print("| labels | archs | Spearman vs trained | Kendall tau | pseudo-label min / mean / max | supernet s | "
          "head s | s per arch (trained) |")
    print("|---|---|---|---|---|---|---|---|")
    for sampling, r in report["runs"].items():
        s, sec, lo_mean_hi = r["pseudo_vs_true"], r["seconds"], r["pseudo_range"]
        print(f"| {sampling} sampling | {r['n']} | {score_text(s['spearman'])} | {score_text(s['kendall'])} | "
              f"{lo_mean_hi[0]:.3f} / {lo_mean_hi[1]:.3f} / {lo_mean_hi[2]:.3f} | {sec['supernet']:.0f} | "
              f"{sec['head']:.0f} | {sec['per_arch_mean']:.1f} ({sec['trained_per_arch_mean']:.1f}) |")
    r = next(iter(report["runs"].values()))
    macs = r["macs_vs_true"]
    print(f"| multiply-adds | {r['n']} | {score_text(macs['spearman'])} | {score_text(macs['kendall'])} | "
          f"trained: {r['true_range'][0]:.3f} / {r['true_range'][1]:.3f} / {r['true_range'][2]:.3f} | | | |")
    print(f"supernet check: {r['supernet_check']:.3f}, the mean {spec.tasks[0].name} primary metric of 5 random "
          "paths with the supernet's own head")


if __name__ == "__main__":
    main()
