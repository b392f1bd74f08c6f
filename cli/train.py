"""``nascore train``: train a found arch from scratch as a spec's ``train:`` block says."""
from __future__ import annotations

import argparse
from pathlib import Path

from .options import Commands, add_executor, add_overrides, executor
from .run import default_out, print_summary

# The library is imported inside the handler: main imports every command module, and `nascore --help` loads no
# torch.


def add(commands: Commands) -> None:
    t = commands.add_parser("train", help="train a found arch from scratch and report validation metrics")
    t.add_argument("arch", help="arch.json file or named arch")
    t.add_argument("--spec", required=True, help="spec giving dataset, tasks, device, seed and train: block")
    t.add_argument("--out", help="output directory (default runs/train-<arch>-<time>)")
    t.add_argument("--resume", action="store_true")
    add_overrides(t)
    add_executor(t, "the arch and its train.references")
    t.set_defaults(handler=_train)


def _train(args: argparse.Namespace) -> int:
    from nascore.arch import resolve_arch
    from nascore.run import train_found
    from nascore.spec import load_spec

    spec = load_spec(args.spec, args.overrides)
    out = Path(args.out) if args.out else default_out(f"train-{Path(args.arch).stem}")
    run, summary = train_found(spec, resolve_arch(args.arch), args.arch, out, args.resume, executor(args, spec))
    print_summary(run, summary)
    return 0
