"""``nascore lut build``: latency lookup tables."""
from __future__ import annotations

import argparse

from .options import Commands, add_overrides

# The library is imported inside the handler: main imports every command module, and `nascore --help` loads no
# torch.


def add(commands: Commands) -> None:
    lut = commands.add_parser("lut", help="latency lookup tables")
    lut.set_defaults(interrupted="run the same command again to resume the table")
    actions = lut.add_subparsers(dest="lut_command", required=True, metavar="ACTION")
    b = actions.add_parser("build", help="time every candidate operation of a spec's space on this machine "
                                         "(an existing table is resumed)")
    b.add_argument("spec", help="spec with a cost: {name: latency, ...} block")
    b.add_argument("--out", help="table file (default: the spec's cost.lut)")
    b.add_argument("--calibrate", type=int, default=8, metavar="N",
                   help="time N random archs end to end and fit the table's calibration to them (default 8; "
                        "0: none; a table that has one keeps it)")
    add_overrides(b)
    b.set_defaults(handler=_build)


def _build(args: argparse.Namespace) -> int:
    from nascore.costs.latency import build_table
    from nascore.errors import NascoreError
    from nascore.progress import Reporter
    from nascore.spec import load_spec

    if args.calibrate == 1 or args.calibrate < 0:
        raise NascoreError(f"--calibrate must be 0 or at least 2 archs, not {args.calibrate}")
    spec = load_spec(args.spec, args.overrides)
    built = build_table(spec, args.spec, args.out, args.calibrate, Reporter().progress)
    table = built.table
    fingerprint = ", ".join(f"{k}={v}" for k, v in table.fingerprint.items())
    print(f"{built.path}: {len(table.entries)} operations ({built.measured} measured now, {built.before} already in "
          f"the table) in {built.seconds:.1f} s\nfingerprint: {fingerprint}")
    if (c := table.calibration) is not None:
        print(f"calibration on {c.archs} archs: measured = {c.scale:.3f} x estimate "
              f"(median error {c.error_before:.1%} -> {c.error_after:.1%})")
    return 0
