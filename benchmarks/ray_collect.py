"""A performance-dataset collection of 8 archs on Ray with 2 workers against in-process (BENCHMARKS.md, "Ray").

    python benchmarks/ray_collect.py --out /tmp/ray-bench

Each mode is one ``nascore bench collect`` command in a fresh process, timed from start to exit (Ray's start-up and
its workers' imports included): ``local`` (one process, torch's default threads), ``local-1t`` (one process, one
thread), ``ray`` (``--executor ray``: a local Ray, one CPU and one torch thread per arch), and ``workers``
(``--workers 2``: the spawn process pool, an equal share of the threads each). The
spec is ``benchmarks/perfdata/fbnet.yaml`` cut down by ``--set`` (default: 1000 images, 2 epochs). Prints a
markdown table and how far the labels of the modes are apart (torch's thread count changes float sums).

Smoke run (tests/test_benchmarks.py; tiny sizes, numbers meaningless):

    python benchmarks/ray_collect.py --out /tmp/ray-smoke --archs 2 --modes ray --set dataset.num_train=16 \
        --set dataset.num_val=8 --set train.epochs=1
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from nascore.performance.perfdata import PerfDataset

SPEC = Path(__file__).parent / "perfdata" / "fbnet.yaml"
#: mode: (options, OMP_NUM_THREADS or None for torch's default)
MODES = {"local": ([], None), "local-1t": ([], "1"), "ray": (["--executor", "ray"], None),
         "workers": (["--workers", "2"], None)}
CUT = ["dataset.num_train=1000", "dataset.num_val=200", "train.epochs=2"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for the collections (one per mode; emptied first)")
    p.add_argument("--archs", type=int, default=8)
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    p.add_argument("--set", dest="overrides", action="append", help=f"spec overrides (default: {' '.join(CUT)})")
    args = p.parse_args()
    args.overrides = args.overrides or CUT
    out = Path(args.out)
    seconds, labels = {}, {}
    for mode in args.modes.split(","):
        folder = out / mode
        shutil.rmtree(folder, ignore_errors=True)
        options, threads = MODES[mode]
        cmd = [sys.executable, "-m", "nascore.cli", "bench", "collect", str(SPEC), "--archs", str(args.archs),
               "--out", str(folder), *options, *(a for o in args.overrides for a in ("--set", o))]
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        start = time.perf_counter()
        subprocess.run(cmd, check=True, env=env if threads is None else {**env, "OMP_NUM_THREADS": threads})
        seconds[mode] = time.perf_counter() - start
        labels[mode] = {(r.index, t): e.label for r in PerfDataset.read(folder).records for t, e in r.tasks.items()}
    base = next(iter(seconds))
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}; {args.archs} archs; {' '.join(args.overrides)}\n")
    print("| mode | wall s | vs " + base + " | max label difference vs " + base + " |\n|---|---|---|---|")
    for mode, s in seconds.items():
        diff = max((abs(labels[mode][k] - labels[base][k]) for k in labels[base]
                    if labels[mode][k] is not None and labels[base][k] is not None), default=0.0)
        print(f"| {mode} | {s:.1f} | {seconds[base] / s:.2f}x | {diff:.2g} |")


if __name__ == "__main__":
    main()
