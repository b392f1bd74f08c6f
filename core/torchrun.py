"""``python -m nascore.torchrun``: torchrun, with its arguments (``python -m nascore.torchrun --nproc_per_node=4 -m
nascore run spec.yaml --out runs/big``), that ends as the ``nascore`` command does.

torchrun exits with status 1 and prints its failure report (with a traceback of its own) whenever a rank fails. A
rank of the ``nascore`` command that meets a user error (a bad spec, a file it cannot read) exits with status 2;
rank 0 prints the message, and every rank records it, with that status, in torchrun's error file for the rank
(``TORCHELASTIC_ERROR_FILE``). When the first rank to fail met a user error (it exited with status 2, or recorded
it and was stopped by torchrun before it could exit), this launcher exits with status 2 too, without torchrun's
report: rank 0's message stands, and a message of another rank that differs from it (e.g. a file that one node
cannot read) is printed once, naming the rank. Any other failure is torchrun's: its report, status 1.
"""
from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

from .errors import EXIT_USER_ERROR

if TYPE_CHECKING:
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure


class _UserErrorExit(logging.Filter):
    """Drops torchrun's log line about a rank that exited with ``EXIT_USER_ERROR`` (the rank said why)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (str(record.msg).startswith("failed (exitcode") and record.args
                    and record.args[0] == EXIT_USER_ERROR)


def _user_error(failure: ProcessFailure) -> bool:
    """Whether a rank failed on a user error: it exited with ``EXIT_USER_ERROR``, or recorded that status in its error
    file and was stopped by torchrun before it could exit (another rank, losing its connection to it, failed first)."""
    message = failure.message
    recorded = isinstance(message, dict) and message.get("extraInfo", {}).get("exitcode") == EXIT_USER_ERROR
    return failure.exitcode == EXIT_USER_ERROR or recorded


def _text(message: str | dict) -> str:
    """The text of a rank's failure message (torchrun reads an error file's ``message`` as it is written)."""
    return message["message"] if isinstance(message, dict) else message


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    logging.getLogger("torch.distributed.elastic.multiprocessing.api").addFilter(_UserErrorExit())
    try:
        run(parse_args(sys.argv[1:] if argv is None else argv))
    except ChildFailedError as exc:
        refused = {rank: _text(f.message) for rank, f in exc.failures.items() if _user_error(f)}
        # error files time a failure to the second; a rank without one is timed when torchrun saw it fail
        first = min((f.timestamp for rank, f in exc.failures.items() if rank in refused), default=None)
        if first is None or any(f.timestamp < first for rank, f in exc.failures.items() if rank not in refused):
            raise
        said = {refused.get(0)}  # rank 0 printed its own
        for rank, message in sorted(refused.items()):
            if message not in said:
                print(f"error (rank {rank}): {message}", file=sys.stderr)
                said.add(message)
        return EXIT_USER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
