"""What the benchmarks that chain several ``nascore`` runs share (``fbnetv5_quality``, ``bmtas_sweep``,
``bmtas_random``); imported as a sibling module, since the scripts run as ``python benchmarks/<name>.py``."""
from __future__ import annotations

import json
from pathlib import Path

from nascore.cli import main as nascore


def run_once(argv: list[str], out: Path) -> dict:
    """``nascore`` with ``argv + --out out`` unless ``out`` already holds a finished run; its summary. A run
    interrupted before its summary is resumed from its checkpoint."""
    summary = out / "summary.json"
    if not summary.is_file():
        args = argv + ["--out", str(out)] + (["--resume"] if (out / "spec.yaml").is_file() else [])
        if nascore(args) != 0:
            raise SystemExit(f"nascore {' '.join(args)} failed")
    return json.loads(summary.read_text())
