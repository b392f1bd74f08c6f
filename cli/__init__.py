"""The ``nascore`` command. Each command group is a module here whose ``add`` declares its commands and the
handlers that run them; the work is the library's. User errors print a message and exit with status 2
(``--debug``: traceback)."""
from __future__ import annotations

import argparse
import contextlib
import importlib.metadata as md
import json
import os
import sys
import time
from typing import Protocol

from nascore.errors import EXIT_USER_ERROR, NascoreError

from . import bench, compare, data, deploy, inspect, lut, predictor, report, run, train
from .options import Commands

EXIT_INTERRUPTED = 130


class Group(Protocol):
    """A command group module."""

    def add(self, commands: Commands) -> None:
        """Declare the group's commands in ``commands``, each with ``set_defaults(handler=...)``: a function of the
        parsed arguments that returns the exit status (and, when a rerun resumes the command, ``interrupted=``: the
        hint shown on Ctrl-C)."""


#: in the order ``nascore --help`` lists their commands
GROUPS: tuple[Group, ...] = (run, inspect, train, lut, deploy, bench, predictor, compare, report, data)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nascore", description="Plugin-based neural architecture search.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--version", action="version", version=f"nascore {md.version('nascore')}")
    p.set_defaults(interrupted="resume with --resume")
    commands = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.add(commands)
    return p


def _report(message: str) -> None:
    """Print a user error; under torchrun, on rank 0 alone (every rank meets it, or has it from rank 0:
    ``distributed.on_main``), every rank recording it in torchrun's error file for the rank, where torchrun's
    failure report and ``python -m nascore.torchrun`` find it (a message of another rank is not lost), with the exit
    status the rank is about to end with (torchrun may stop a rank before it ends: its status is then a signal's)."""
    if os.environ.get("RANK", "0") == "0":
        print(f"error: {message}", file=sys.stderr)
    error_file = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if error_file:
        with contextlib.suppress(OSError), open(error_file, "w") as f:  # as torchrun's ErrorHandler writes it
            json.dump({"message": {"message": message, "extraInfo": {"timestamp": str(int(time.time())),
                                                                      "exitcode": EXIT_USER_ERROR}}}, f)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.handler(args)
    # OSError: an unreadable input or unwritable output path, e.g. --out on a read-only disk
    except (NascoreError, OSError) as exc:
        if args.debug:
            raise
        _report(str(exc))
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"interrupted; {args.interrupted}", file=sys.stderr)
        return EXIT_INTERRUPTED
