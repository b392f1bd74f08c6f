"""What the benchmarks that chain several ``nascore`` runs share (``fbnetv5_quality``, ``bmtas_sweep``,
``bmtas_random``, ``supernet_budgets``); imported as a sibling module, since the scripts run as ``python benchmarks/<name>.py``."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import NoReturn

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
        nascore_or_exit(args)
    return json.loads(summary.read_text())


def nascore_or_exit(args: list[str]) -> None:
    """``nascore args``; a failure ends the script with nascore's exit status (2: bad input, its message printed)."""
    status = nascore(args)
    if status != 0:
        print(f"error: nascore {' '.join(args)} failed", file=sys.stderr)
        raise SystemExit(status)


def refuse(message: str) -> NoReturn:
    """Bad input (a spec, an option): its message and exit status 2, as nascore's own commands."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


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
        refuse(str(exc))
    if "train" not in base:
        refuse(f"{args.spec}: needs a train: block (the training of every arch)")
    base["pareto"] = {"samples": 0}
    return base
