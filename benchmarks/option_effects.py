"""What each option is worth to a supernet and to the trained labels: where a supernet's order departs from the
labels' (BENCHMARKS.md, "Supernets that rank").

Over the archs of a performance dataset, each column (the dataset's labels; the scores of each ``--scores`` folder,
written by ``nascore bench supernet-rank``; the labels of each ``--labels`` dataset, the same archs trained with
another budget) is standardised, then:

- **per option** (pooled over the decisions that offer it): the least-squares coefficient of the column on how many
  decisions chose the option, relative to the mean option (the counts of an arch sum to its number of decisions);
- **per decision and option**: the mean of the archs that chose the option at that decision minus the mean of those
  that did not; the table gives, for each column, Spearman's rho of these effects against the dataset labels'
  (do the two agree on what each choice is worth?), and ``--option NAME`` prints NAME's effect per decision.

Every column is also ranked against the dataset's labels over the archs both have (Spearman, Kendall).

    python benchmarks/option_effects.py perf/fbnet_12ep --scores rank/fair --labels perf/fbnet_36ep --option skip
    # smoke (tests/test_benchmarks.py): a 4-arch collection of a few images, ranked on a 1-epoch supernet
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from nascore.fileio import load_user_json
from nascore.performance.perfdata import PerfDataset
from nascore.performance.predictors.scoring import score_text, scores
from nascore.performance.ranking import SCORE_MAX_BYTES, SCORES, Score

Column = dict[int, float]


def dataset_labels(data: PerfDataset, task: str) -> Column:
    return {r.index: r.tasks[task].label for r in data.records
            if task in r.tasks and r.tasks[task].label is not None}


def supernet_scores(folder: Path) -> tuple[Column, dict[int, dict[str, str]]]:
    """A supernet-rank folder's scores and the choices they were scored for."""
    values, choices = {}, {}
    for path in sorted((folder / SCORES).glob("*.json")):
        score = Score.model_validate(load_user_json(path, "supernet score", SCORE_MAX_BYTES, finite=True))
        if score.score is not None:
            values[score.index], choices[score.index] = score.score, score.choices
    return values, choices


def standardised(column: Column, archs: list[int]) -> np.ndarray:
    v = np.array([column[i] for i in archs], dtype=float)
    return (v - v.mean()) / (v.std() or 1.0)


def option_effects(choices: list[dict[str, str]], values: np.ndarray) -> dict[str, float]:
    """Per option name: the least-squares coefficient of ``values`` on the option's count per arch, relative to
    the mean option."""
    names = sorted({c for arch in choices for c in arch.values()})
    counts = np.array([[sum(c == n for c in arch.values()) for n in names] for arch in choices], dtype=float)
    design = np.hstack([counts, np.ones((len(choices), 1))])
    coef = np.linalg.lstsq(design, values, rcond=None)[0][:-1]  # minimum norm: the counts sum to a constant
    return dict(zip(names, (coef - coef.mean()).tolist(), strict=True))


def cell_effects(choices: list[dict[str, str]], values: np.ndarray, least: int) -> dict[tuple[str, str], float]:
    """Per (decision, option) chosen by at least ``least`` archs and not by all: the mean of ``values`` over the
    archs that chose it minus the mean over the others."""
    out = {}
    for decision in sorted({d for arch in choices for d in arch}):
        picked = np.array([arch.get(decision) for arch in choices], dtype=object)
        for option in sorted({p for p in picked if p is not None}):
            hit = picked == option
            if least <= hit.sum() < len(hit):
                out[decision, option] = float(values[hit].mean() - values[~hit].mean())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", help="a performance dataset folder: the archs and the reference labels")
    p.add_argument("--scores", action="append", default=[], help="a `nascore bench supernet-rank` --out folder")
    p.add_argument("--labels", action="append", default=[],
                   help="another performance dataset of the same archs (an index both hold: the same choices)")
    p.add_argument("--task", help="the task whose labels are read (default: the dataset's first)")
    p.add_argument("--option", help="print this option's effect per decision")
    p.add_argument("--least", type=int, default=5, help="archs a (decision, option) needs to get an effect")
    p.add_argument("--json", help="write the numbers here")
    args = p.parse_args()
    data = PerfDataset.read(args.data)
    task = args.task or next(iter(data.manifest.tasks))
    arch_choices = {r.index: r.arch.choices for r in data.records}
    columns: dict[str, Column] = {"labels": dataset_labels(data, task)}
    for folder in map(Path, args.scores):
        values, scored = supernet_scores(folder)
        if any(arch_choices.get(i, c) != c for i, c in scored.items()):
            raise SystemExit(f"{folder}: scores of other archs than {args.data}'s")
        columns[f"supernet {folder.name}"] = values
    for folder in args.labels:
        other = PerfDataset.read(folder)
        if any(arch_choices.get(r.index, r.arch.choices) != r.arch.choices for r in other.records):
            raise SystemExit(f"{folder}: other archs than {args.data}'s")
        columns[f"labels {Path(folder).name}"] = dataset_labels(other, task)
    archs = sorted(set.intersection(*(set(c) for c in columns.values())))
    if len(archs) < 3:
        raise SystemExit(f"{len(archs)} archs have a value in every column; at least 3 are needed")
    choices = [arch_choices[i] for i in archs]
    z = {name: standardised(column, archs) for name, column in columns.items()}
    per_option = {name: option_effects(choices, v) for name, v in z.items()}
    cells = {name: cell_effects(choices, v, args.least) for name, v in z.items()}
    ref_cells = cells["labels"]
    result: dict = {"archs": len(archs), "task": task, "columns": {}}
    print(f"{len(archs)} archs of {args.data} ({task}); values standardised per column\n")
    print("| column | Spearman (Kendall) against the labels | effects per (decision, option) against the labels' |")
    print("|---|---|---|")
    for name, column in columns.items():
        rank = scores([column[i] for i in archs], [columns["labels"][i] for i in archs])
        agree = scores([cells[name][k] for k in ref_cells], list(ref_cells.values()))
        result["columns"][name] = {"rank": rank, "cell_agreement": agree, "per_option": per_option[name]}
        print(f"| {name} | {score_text(rank['spearman'])} ({score_text(rank['kendall'])}) | "
              f"{score_text(agree['spearman'])} over {agree['n']} |")
    names = list(per_option["labels"])
    print("\nPer option (coefficient per decision choosing it, relative to the mean option; standardised units):\n")
    print("| column | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for name, effects in per_option.items():
        print(f"| {name} | " + " | ".join(f"{effects[n]:+.3f}" for n in names) + " |")
    if args.option:
        decisions = [d for d, o in ref_cells if o == args.option]
        if not decisions:
            raise SystemExit(f"--option {args.option}: no decision has it in at least --least {args.least} archs")
        print(f"\n'{args.option}' per decision (mean of the archs choosing it minus the others'):\n")
        print("| column | " + " | ".join(decisions) + " |")
        print("|---|" + "---|" * len(decisions))
        for name, effects in cells.items():
            print(f"| {name} | " + " | ".join(f"{effects[d, args.option]:+.2f}" for d in decisions) + " |")
            result["columns"][name]["option"] = {d: effects[d, args.option] for d in decisions}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
