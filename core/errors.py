"""Errors that nascore reports to users as a message and exit status 2 (no traceback)."""
from __future__ import annotations

#: the exit status of a command that met a user error (a NascoreError, an unreadable input)
EXIT_USER_ERROR = 2


def first_line(exc: BaseException) -> str:
    """The first non-empty line of ``exc``'s message, stripped ("" when it has none): what a user is shown of a
    library's (often many-line) error."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), "")


class NascoreError(Exception):
    """A problem with user input (spec, arch file, dataset, plugin, checkpoint)."""


class SpecError(NascoreError):
    """A spec that does not validate; ``errors`` holds one line per problem ("path: message")."""

    def __init__(self, source: str, errors: list[str]):
        self.source = source
        self.errors = errors
        super().__init__(f"{source} is not a valid spec:\n" + "\n".join(f"  {e}" for e in errors))


class NonFiniteLossError(NascoreError):
    """Training produced a NaN or infinite loss."""

    def __init__(self, epoch: int, step: int, what: str = "loss"):
        self.epoch, self.step, self.what = epoch, step, what
        super().__init__(f"non-finite {what} at epoch {epoch}, step {step}; "
                         "the run stopped and the last good checkpoint was kept")

    def __reduce__(self):  # pickled with its own arguments, so it crosses process boundaries (workers) intact
        return type(self), (self.epoch, self.step, self.what)
