"""What command modules share: the type they declare commands in, and the flags of several commands (``--set``,
``--executor``) with what they translate to."""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nascore.executor import Executor
    from nascore.spec_model import RunSpec

#: where a group module declares its commands (``ArgumentParser.add_subparsers()``; argparse has no public name)
Commands = argparse._SubParsersAction


def add_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a spec field, e.g. --set strategy.epochs=3 (repeatable)")


def add_executor(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--executor", choices=("local", "ray"), default="local",
                        help=f"where {what} train: local (this process, default) or ray (one Ray task each; "
                             "pip install 'nascore[ray]')")
    parser.add_argument("--ray-address", help="Ray cluster to use (default: RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--cpus-per-task", type=int, default=1, metavar="N",
                        help="CPUs (and torch threads) each Ray task declares (default 1); on CUDA also 1 GPU")


def executor(args: argparse.Namespace, spec: RunSpec, workers: int = 1) -> Executor:
    """The ``--executor`` of a command (nascore.executor); a CUDA spec's Ray tasks declare one GPU each."""
    # imported here, as in every command module: main imports them all, and `nascore --help` loads no torch
    from nascore.distributed import launched
    from nascore.errors import NascoreError
    from nascore.executor import make_executor

    if args.executor == "ray" and launched():
        raise NascoreError("--executor ray under torchrun: every rank would send the archs to Ray; run the command "
                           "once, without torchrun")
    return make_executor(args.executor, args.ray_address, args.cpus_per_task,
                         1 if spec.device.startswith("cuda") else 0, workers, lambda m: print(m, file=sys.stderr))
