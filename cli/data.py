"""``nascore data export``: built-in data utilities."""
from __future__ import annotations

import argparse

from .options import Commands

# The library is imported inside the handler: main imports every command module, and `nascore --help` loads no
# torch.


def add(commands: Commands) -> None:
    d = commands.add_parser("data", help="built-in data utilities")
    actions = d.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    e = actions.add_parser("export", help="write a dataset as COCO JSON + PNG masks")
    e.add_argument("dataset", help="dataset name (digit-scenes)")
    e.add_argument("dir")
    e.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dataset option, e.g. --set image_size=96")
    e.set_defaults(handler=_export)


def _export(args: argparse.Namespace) -> int:
    from nascore.dataset_export import export_dataset
    from nascore.spec import apply_overrides

    for split, path in export_dataset(args.dataset, apply_overrides({}, args.overrides), args.dir).items():
        print(f"{split}: {path}")
    return 0
