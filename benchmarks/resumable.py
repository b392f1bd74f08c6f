"""What the benchmarks that chain several ``nascore`` runs share (``fbnetv5_quality``, ``bmtas_sweep``,
``bmtas_random``); imported as a sibling module, since the scripts run as ``python benchmarks/<name>.py``."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from nascore.cli import main as nascore
from nascore.errors import NascoreError
from nascore.spec import apply_overrides, read_spec_file


def run_once(argv: list[str], out: Path) -> dict:
    """``nascore`` with ``argv + --out out`` unless ``out`` already holds a finished run; its summary. A run
    interrupted before its summary is resumed from its checkpoint."""
    summary = out / "summary.json"
    if not summary.is_file():
        args = argv + ["--out", str(out)] + (["--resume"] if (out / "spec.yaml").is_file() else [])
        if nascore(args) != 0:
            raise SystemExit(f"nascore {' '.join(args)} failed")
    return json.loads(summary.read_text())


def against_random_parser(doc: str, spec: Path, out: str, what: str) -> argparse.ArgumentParser:
    """The options of a benchmark that sets one search per seed against random ``what`` of its cost
    (``fbnetv5_quality``, ``bmtas_random``); the script adds its own."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=spec, help="the search spec, with a train: block")
    parser.add_argument("--out", type=Path, default=Path(out))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="search seeds (spec's seed:)")
    parser.add_argument("--random", type=int, default=3, help=f"random {what} per search (and task)")
    parser.add_argument("--tolerance", type=float, default=0.05, help=f"relative MAC tolerance of random {what}")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override of the spec (as nascore's --set), in every run")
    return parser


def base_spec(args: argparse.Namespace) -> dict:
    """``--spec`` with ``--set`` applied and no Pareto front, refused without a ``train:`` block (the training of
    every arch); sets the threads. A spec nascore cannot read or override exits 2 with its message."""
    torch.set_num_threads(args.threads)
    try:
        base = apply_overrides(read_spec_file(args.spec), args.overrides)
    except NascoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if "train" not in base:
        raise SystemExit(f"{args.spec}: needs a train: block (the training of every arch)")
    base["pareto"] = {"samples": 0}
    return base
