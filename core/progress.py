"""Progress and reporting: rich progress bars on a terminal, plain log lines otherwise."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


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
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=self.err, transient=True) as bar:
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
