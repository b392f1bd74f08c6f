"""``nascore report``: one HTML page of a run directory."""
from __future__ import annotations

import argparse

from .options import Commands

# The library is imported inside the handler: main imports every command module, and `nascore --help` loads no
# torch.


def add(commands: Commands) -> None:
    rep = commands.add_parser("report", help="one self-contained HTML page of a run directory: curves, decisions, "
                                             "Pareto front, found archs, spec")
    rep.add_argument("run", help="run directory (nascore run --out)")
    rep.add_argument("--out", help="HTML file to write (default RUN/report.html)")
    rep.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> int:
    from nascore.analysis.report import write_report

    print(f"wrote {write_report(args.run, args.out)}")
    return 0
