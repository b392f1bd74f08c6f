"""``nascore compare``: several searches over several seeds, their found archs trained with one budget."""
from __future__ import annotations

import argparse
from pathlib import Path

from .options import Commands, add_overrides

# The library is imported inside the handler: main imports every command module, and `nascore --help` loads no
# torch.


def add(commands: Commands) -> None:
    cmp = commands.add_parser("compare", help="run several search specs over several seeds, train each found arch "
                                              "with the same budget, and compare them in one table and plot")
    cmp.add_argument("specs", nargs="+", metavar="SPEC", help="specs with the same dataset, tasks and train: block")
    cmp.add_argument("--seeds", type=int, default=3, metavar="N", help="seeds 0 to N-1 (default 3)")
    cmp.add_argument("--out", required=True, help="folder of the runs (DIR/<spec name>/seed<s>) and the results; "
                                                  "finished runs are reused, unfinished ones resumed")
    add_overrides(cmp)
    cmp.set_defaults(handler=_compare,
                     interrupted="run the same command again: finished runs are kept, the interrupted one resumes")


def _compare(args: argparse.Namespace) -> int:
    from nascore.analysis.compare import HEADER, PLOT, RESULTS, compare, table_rows
    from nascore.errors import NascoreError

    if args.seeds < 1:
        raise NascoreError(f"--seeds must be at least 1, not {args.seeds}")
    out = Path(args.out)
    results = compare(args.specs, list(range(args.seeds)), out, args.overrides)
    # a Markdown table, whole at any width (a rich table cuts cells to the console's) and ready for a report
    print(f"{len(args.specs)} searches x {args.seeds} seeds, each found arch trained with one budget (trained: archs "
          "trained in the search; labelled: archs the predictor was fitted on)\n")
    for row in [HEADER, tuple("---" for _ in HEADER), *table_rows(results)]:
        print("| " + " | ".join(row) + " |")
    print(f"written: {out / RESULTS}, {out / PLOT}")
    return 0
