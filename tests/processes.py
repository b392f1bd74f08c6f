"""The processes a command started, from /proc (Linux): to check that a stopped command leaves none behind."""
from __future__ import annotations

import os
import signal
from pathlib import Path


def _stats() -> dict[int, list[str]]:
    """Every process's /proc/PID/stat fields after the command name (state, ppid, pgrp, session, ...)."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            out[int(stat.parent.name)] = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError, ValueError):
            continue  # ended meanwhile
    return out


def descendants(pid: int) -> set[int]:
    """The processes ``pid`` started, and the ones they started."""
    children: dict[int, list[int]] = {}
    for child, fields in _stats().items():
        children.setdefault(int(fields[1]), []).append(child)
    found, todo = set(), [pid]
    while todo:
        found.update(new := children.get(todo.pop(), []))
        todo.extend(new)
    return found


def in_session(sid: int) -> set[int]:
    """The processes of session ``sid`` that still run: what a command started with ``start_new_session`` left,
    reparented or not."""
    return {pid for pid, fields in _stats().items() if int(fields[3]) == sid and fields[0] != "Z"}


def running(pids: set[int]) -> set[int]:
    """Those of ``pids`` that still run (a zombie does not)."""
    stats = _stats()
    return {pid for pid in pids if pid in stats and stats[pid][0] != "Z"}


def maps(pid: int, library: str) -> bool:
    """Whether process ``pid`` has ``library`` (a file name part, e.g. libtorch_cpu) mapped."""
    try:
        return library in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def kill_all(pids: set[int]) -> None:
    """SIGKILL to those of ``pids`` that still run (a failed test's leftovers)."""
    for pid in running(pids):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
