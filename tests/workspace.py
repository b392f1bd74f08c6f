"""What a command left in a working directory, to check that a refused input wrote nothing."""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` (lstat, nothing followed or opened but small regular files, which are hashed)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            small = stat.S_ISREG(st.st_mode) and st.st_size < 1 << 20 and os.access(path, os.R_OK)
            out[str(path.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns,
                                                hashlib.sha256(path.read_bytes()).hexdigest() if small else None)
    return out
