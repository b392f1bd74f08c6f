"""Progress and reporting: rich progress bars on a terminal, plain log lines otherwise."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from rich import progress as bars
from rich.console import Console
from rich.table import Table

#: ``progress(total, description)``: a context manager yielding ``advance()``, called once per unit of work done;
#: how runs show work (a reporter's bar), given to strategies (``SearchContext.progress``) and cost models
Progress = Callable[[int, str], AbstractContextManager[Callable[[], None]]]


def no_progress(total: int, description: str) -> AbstractContextManager[Callable[[], None]]:
    """The progress that shows nothing: the default where no reporter is given."""
    return nullcontext(lambda: None)


class Reporter:
    def __init__(self, live: bool | None = None, quiet: bool = False):
        self.err = Console(stderr=True, highlight=False)
        self.out = Console(highlight=False, soft_wrap=True)
        self.live = self.err.is_terminal if live is None else live
        self.quiet = quiet

    def log(self, message: str) -> None:
        """One line however long (a terminal wraps it for the eye; a pipe or log file keeps it whole)."""
        if not self.quiet:
            self.err.print(message, markup=False, soft_wrap=True)

    @contextmanager
    def progress(self, total: int, description: str) -> Iterator[Callable[[], None]]:
        if not self.live or self.quiet:
            yield lambda: None
            return
        columns = (bars.TextColumn("{task.description}"), bars.BarColumn(), bars.MofNCompleteColumn(),
                   bars.TimeElapsedColumn())
        with bars.Progress(*columns, console=self.err, transient=True) as bar:
            task = bar.add_task(description, total=total)
            yield lambda: bar.advance(task)

    def epoch(self, phase: str, row: dict[str, Any]) -> None:
        """``[phase] epoch N: key=value ...``; N counts from 0, as ``epoch`` in metrics.jsonl and hooks."""
        shown = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k not in ("epoch",)}
        text = " ".join(f"{k}={_fmt(v)}" for k, v in shown.items())
        self.log(f"[{phase}] epoch {row['epoch']}: {text}")

    def table(self, title: str, rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
        table = Table(title=title, show_header=True)
        for h in header:
            table.add_column(h)
        for r in rows:
            table.add_row(*r)
        self.out.print(table)


def _fmt(v: float) -> str:
    if isinstance(v, int):
        return str(v)
    return f"{v:.4g}"
