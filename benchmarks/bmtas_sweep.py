"""BMTAS resource-weight sweep: multiply-adds vs mean relative task performance of the found branched networks.

For each lambda, ``nascore run`` on ``examples/bmtas.yaml`` (or ``--spec``) with ``cost.loss.lambda`` set: a BMTAS
search, then the found ``branch_config.json`` trained from scratch with the spec's ``train:`` block. The first
run also trains the two references with the same budget (fully task-specific, fully shared); the others skip
them (``train.references=false``: they do not depend on lambda). Relative performance = the mean over tasks of
the primary metric's relative change against the task-specific network.

Every run lands in ``--out`` (default ``runs/bmtas-sweep``); a run whose ``summary.json`` exists is not
repeated, so an interrupted sweep resumes. Writes ``sweep.json`` and ``sweep.png`` there (``--plot`` copies
the PNG elsewhere too) and prints a markdown table.

    python benchmarks/bmtas_sweep.py [--spec SPEC] [--lambdas 0 0.05 0.2 1] [--out DIR] [--plot PNG]

Smoke run (tests/test_benchmarks.py; tiny sizes, numbers meaningless):

    python benchmarks/bmtas_sweep.py --threads 1 --lambdas 0 1 --out /tmp/bmtas-smoke --set dataset.image_size=32 \
        --set space.input_size=32 --set dataset.num_train=10 --set dataset.num_val=4 --set strategy.epochs=2 \
        --set strategy.batch_size=4 --set train.epochs=1 --set train.batch_size=4
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from resumable import run_once  # sibling module (the scripts run from benchmarks/)

from nascore.spec import load_spec
from nascore.train import relative_performance

SPEC = Path(__file__).resolve().parents[1] / "examples" / "bmtas.yaml"


def plot(points: list[dict], references: dict[str, dict], path: Path) -> None:
    fig = Figure(figsize=(6, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    points = sorted(points, key=lambda p: p["lambda"])  # the line follows lambda, whatever order they ran in
    ax.plot([p["macs"] / 1e6 for p in points], [100 * p["relative"] for p in points], "o-", color="tab:blue",
            label="BMTAS (found, retrained)")
    for p in points:
        ax.annotate(f"λ={p['lambda']:g}", (p["macs"] / 1e6, 100 * p["relative"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)
    for (name, res), marker, color in zip(references.items(), ("s", "^"), ("tab:green", "tab:orange")):
        ax.plot([res["macs"] / 1e6], [100 * res["relative"]], marker, color=color, markersize=9,
                label=name.replace("_", " "))
    ax.set_xlabel("multiply-adds (M, encoder + heads)")
    ax.set_ylabel("mean relative task performance (%)")
    ax.set_title("BMTAS on digit-scenes: resource weight sweep")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=SPEC)
    parser.add_argument("--lambdas", type=float, nargs="+", default=[0.0, 0.05, 0.2, 1.0])
    parser.add_argument("--out", type=Path, default=Path("runs/bmtas-sweep"))
    parser.add_argument("--plot", type=Path, help="also copy the plot here")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="spec override KEY=VALUE")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    points, references = [], {}
    for i, lam in enumerate(args.lambdas):
        overrides = [*args.overrides, f"cost.loss.lambda={lam}", f"train.references={'true' if i == 0 else 'false'}"]
        summary = run_once(["run", str(args.spec), *sum((["--set", o] for o in overrides), [])],
                           args.out / f"lambda_{lam:g}")
        entry = summary["archs"]["shared"]
        if i == 0:
            references = entry["references"]
        points.append({"lambda": lam, **entry["train"], "described": entry["described"]})
    spec = load_spec(args.spec, args.overrides)
    tasks = [t.create() for t in spec.tasks]
    baseline = references["task_specific"]
    for p in points:  # runs after the first did not train the references: relative to the first run's
        p["relative"] = relative_performance(p, baseline, tasks)
    (args.out / "sweep.json").write_text(json.dumps({"points": points, "references": references}, indent=2) + "\n")
    plot(points, references, args.out / "sweep.png")
    if args.plot:
        shutil.copy(args.out / "sweep.png", args.plot)

    keys = [f"val/{t.name}/{t.primary_metric}" for t in tasks]
    print("| network | MACs (M) | " + " | ".join(k[4:] for k in keys) + " | relative |")
    print("|---|---:|" + "---:|" * len(keys) + "---:|")
    rows = [(f"BMTAS λ={p['lambda']:g}", p) for p in points] + [(n.replace("_", " "), r) for n, r in references.items()]
    for name, res in rows:
        print(f"| {name} | {res['macs'] / 1e6:.1f} | " + " | ".join(f"{res[k]:.3f}" for k in keys)
              + f" | {100 * res['relative']:+.1f}% |")
    for p in points:
        print(f"λ={p['lambda']:g}: " + "; ".join(f"{layer} {groups}" for layer, groups in p["described"]))


if __name__ == "__main__":
    main()
