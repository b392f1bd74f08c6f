"""Processes that die with the process that started them, however it dies (SIGTERM, SIGKILL, a crash): torchrun's
ranks with their launcher (``distributed``) and the worker processes of ``--workers`` with their command
(``executor``). Neither torchrun nor ``concurrent.futures`` ties them: torchrun starts each rank in a session of its
own, and a pool's worker outlives a parent that is killed (it finishes its job, then waits on its queue for ever).

On Linux the kernel sends the process SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``; the parent is the
thread that started the process: torchrun's main thread, the thread that submitted the pool's first jobs);
elsewhere a daemon thread polls the parent's pid. SIGKILL: a process blocked in a collective or in a job handles no
other signal; the locks it holds (``nascore.lock``) go with it.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_WATCH_S = 1.0
#: the parent this process dies with, once ``die_with_parent`` tied it
_parent: int | None = None


def die_with_parent(parent: int | None = None) -> None:
    """Make this process get SIGKILL when its parent dies: ``parent`` (the pid the parent gave it, or None: the
    parent now). A parent that has died already (this process was reparented) kills it now. Once per process."""
    global _parent
    if _parent is not None:
        return
    _parent = os.getppid() if parent is None else parent
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    else:
        threading.Thread(target=_watch, name="nascore-parent-watch", daemon=True).start()
    # the parent may have died before the signal was armed: then this process's parent is another one now
    if os.getppid() != _parent:
        os.kill(os.getpid(), signal.SIGKILL)


def _watch() -> None:
    while os.getppid() == _parent:
        time.sleep(_WATCH_S)
    os.kill(os.getpid(), signal.SIGKILL)
