"""One writer per directory: a command that writes a folder over time (a run directory, a performance collection,
pseudo-labels, a compare folder) or a latency table holds its exclusive lock from start to end, and a second
writer is refused at once (exit 2) with the process that holds it.

The lock is ``fcntl.flock`` on a lock file: ``DIR/.nascore.lock`` for a folder, ``TABLE.lock`` beside a file. It
holds the holder's pid, host and command (for the refusal's message). The OS drops the lock when its process
dies, however it dies, so a killed writer never blocks a resume: its lock file is left behind and taken over. A
writer that ends removes its lock file, and the folders it made for it that stayed empty."""
from __future__ import annotations

import errno
import fcntl
import functools
import inspect
import json
import os
import socket
import stat
import sys
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import ParamSpec, TypeVar

from .errors import NascoreError

LOCK_FILE = ".nascore.lock"
HOLDER_MAX_BYTES = 4096

P = ParamSpec("P")
R = TypeVar("R")


class WriteLock:
    """The lock of ``target`` (a folder or a file), held on ``file``; ``acquire`` takes it or raises NascoreError,
    ``release`` (also when the lock is garbage-collected or the interpreter exits) gives it back."""

    def __init__(self, target: Path, file: Path):
        self.target, self.file = Path(target), Path(file)
        #: the outermost folder ``acquire`` made for the lock file (None: it made none)
        self.created: Path | None = None
        self._release: weakref.finalize | None = None

    @classmethod
    def of_directory(cls, directory: str | Path) -> WriteLock:
        return cls(Path(directory), Path(directory) / LOCK_FILE)

    @classmethod
    def of_file(cls, path: str | Path) -> WriteLock:
        return cls(Path(path), Path(f"{path}.lock"))

    def acquire(self) -> WriteLock:
        """Take the lock (making its folder when missing), or raise NascoreError naming the process that holds it.
        A folder that exists as something else is not locked: nothing can be written in it, and the command's own
        check of its output says so."""
        folder = self.file.parent
        if os.path.lexists(folder) and not folder.is_dir():
            return self
        created = _outermost_missing(folder)
        folder.mkdir(parents=True, exist_ok=True)
        before = _Folder.of(folder)
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise NascoreError(f"{self.target} is being written by {holder}; wait for it to finish or stop "
                                   "it") from None
            if _same_file(fd, self.file):
                break
            os.close(fd)  # its holder ended and removed it between our open and flock: lock the new one
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "command": " ".join(sys.argv)}).encode() + b"\n", 0)
        self.created = created
        self._release = weakref.finalize(self, _release, fd, self.file, created, before, os.stat(folder).st_mtime_ns,
                                         os.getpid())
        return self

    def release(self) -> None:
        """Remove the lock file and the folders ``acquire`` made that stayed empty, and give the lock back."""
        if self._release is not None:
            self._release()

    def __enter__(self) -> WriteLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
                 ) -> None:
        self.release()

    def _open(self) -> int:
        try:
            fd = os.open(self.file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            problem = "is a symlink" if exc.errno == errno.ELOOP else f"cannot be opened: {exc.strerror}"
            raise NascoreError(f"cannot lock {self.target} for writing: its lock file {self.file} {problem}"
                               ) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise NascoreError(f"cannot lock {self.target} for writing: its lock file {self.file} is not a regular "
                               "file; remove it")
        return fd


def one_writer(parameter: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a function that writes the folder its argument ``parameter`` names: each call holds that folder's
    ``WriteLock`` from start to return."""
    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def locked(*args: P.args, **kwargs: P.kwargs) -> R:
            with WriteLock.of_directory(signature.bind(*args, **kwargs).arguments[parameter]):
                return fn(*args, **kwargs)
        return locked
    return decorate


def _outermost_missing(folder: Path) -> Path | None:
    missing = None
    for path in (folder, *folder.parents):
        if os.path.lexists(path):
            return missing
        missing = path
    return missing


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    opened = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (opened.st_dev, opened.st_ino)


def _holder(fd: int) -> str:
    """Who holds the lock, as its lock file says: "process PID (command: ...)", with the host when it is not this
    one; "another process" while the holder has not written it yet (or it is not what we write)."""
    try:
        data = json.loads(os.pread(fd, HOLDER_MAX_BYTES, 0).decode("utf-8", "replace"))
        pid, host, command = int(data["pid"]), str(data["host"]), str(data["command"])
    except (OSError, ValueError, RecursionError, KeyError, TypeError):
        return "another process"
    where = "" if host == socket.gethostname() else f" on {host}"
    return f"process {pid}{where} (command: {command})"


@dataclass(frozen=True)
class _Folder:
    """What a folder held before its lock file was made, and its times then."""

    names: frozenset[str]
    times_ns: tuple[int, int]  # access, modification

    @classmethod
    def of(cls, folder: Path) -> _Folder:
        st = os.stat(folder)
        return cls(frozenset(os.listdir(folder)), (st.st_atime_ns, st.st_mtime_ns))


def _release(fd: int, file: Path, created: Path | None, before: _Folder, locked_mtime_ns: int, owner: int) -> None:
    """Remove the lock file (the folder's times put back when nothing else changed in it: a refused or failed
    command leaves it as it was) and the folders made for it that stayed empty; close it."""
    if os.getpid() != owner:  # a forked child's copy: the lock is its parent's
        os.close(fd)
        return
    mine = _same_file(fd, file)
    if mine:
        folder = file.parent
        untouched = os.stat(folder).st_mtime_ns == locked_mtime_ns
        file.unlink()  # while still holding the lock: a process waiting on this file sees it was removed
        if untouched and _Folder.of(folder).names == before.names:
            os.utime(folder, ns=before.times_ns)
    os.close(fd)
    if mine and created is not None:
        folder = file.parent
        while True:
            try:
                folder.rmdir()  # only an empty one
            except OSError:
                return
            if folder == created:
                return
            folder = folder.parent
