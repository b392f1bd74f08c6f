"""Fidelity of the latency lookup table: LUT sum against measured end-to-end latency.

For each backend (torch eager, ONNX Runtime), FBNet-space width and input size: build the table of every
candidate operation with ``LatencyCost`` (as ``nascore lut build`` does; build time reported), draw
``--archs`` random archs (uniform choice per layer, fixed seed), build each as a standalone backbone and
time it end to end (``LatencyCost.time_model``), and compare with the table's estimate:

  plain      the sum of the isolated operations' medians;
  corrected  the same with the runtime's per-call overhead counted once per network instead of once
             per operation (``subtract_overhead``);
  calibrated the corrected estimate times the table's calibration ``scale`` (the median measured /
             estimate ratio of ``--calibrate`` other random archs timed end to end, as
             ``nascore lut build`` does by default).

Each arch is timed in ``--rounds`` interleaved rounds (the median is the measurement); Spearman's rho
between the first two rounds ("retest rho") is how well the measurement agrees with itself: no estimate
can rank archs better than the measurement repeats.

Reported per configuration: Spearman's rho between estimate and measurement (scipy), the share of archs
whose estimate is within +-10% of the measurement, and the median signed error. Targets: rho >= 0.95 and
>= 90% within +-10%. One thread, batch 1, float32. Run from the repository root (tables are kept in
``--dir`` and resumed, so an interrupted run continues):

    python benchmarks/latency_fidelity.py                    # 40 archs, widths 0.5 1.0, inputs 128 224
    python benchmarks/latency_fidelity.py --backends onnxruntime --archs 10

Smoke run (tests/test_benchmarks.py; tiny sizes, numbers meaningless):

    python benchmarks/latency_fidelity.py --widths 0.25 --sizes 32 --archs 3 --op-time 0.001 --model-time 0.001 \
        --rounds 2 --calibrate 2 --dir /tmp/luts --json /tmp/latency_fidelity.json
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

from scipy.stats import spearmanr

from nascore.arch import Arch
from nascore.costs.latency import LatencyCost, calibrate
from nascore.spaces.fbnet import FBNetSpace

MODES = ("plain", "corrected", "calibrated")


def evaluate(backend: str, width: float, size: int, archs: int, seed: int, table_dir: Path, op_time: float,
             model_time: float, calibration_archs: int, n_rounds: int, device: str = "cpu") -> dict:
    space = FBNetSpace({"width": width, "input_size": size})
    where = "" if device == "cpu" else f"-{device.replace(':', '')}"
    lut = table_dir / f"{backend}{where}-w{width}-{size}.json"
    base = {"backend": backend, "lut": str(lut), "min_run_time": op_time, "device": device}
    costs = {"plain": LatencyCost({**base, "subtract_overhead": False, "calibrated": False}),
             "corrected": LatencyCost({**base, "calibrated": False}),
             "calibrated": LatencyCost({**base, "min_run_time": model_time})}  # its timings: whole archs
    supernet = space.supernet()
    before = len(LatencyCost(base).table.entries) if lut.exists() else 0
    start = time.perf_counter()
    supernet.price(costs["corrected"], size)  # measures what the table lacks, as `nascore lut build` does
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    fit = calibrate(costs["calibrated"], space, calibration_archs, seed=seed + 1)  # other archs than below
    calibrate_s = time.perf_counter() - start
    tables = {mode: supernet.price(cost, size) for mode, cost in costs.items()}
    decisions = space.decisions()
    rng = random.Random(seed)
    chosen = [{d.name: rng.choice(d.options) for d in decisions} for _ in range(archs)]
    models = [space.build(Arch(space="fbnet", config=space.config.model_dump(), choices=c)) for c in chosen]
    rounds = [[costs["corrected"].time_model(m, (1, 3, size, size), model_time).median_ms for m in models]
              for _ in range(n_rounds)]
    measured = [statistics.median(times) for times in zip(*rounds)]
    row = {"backend": backend, "width": width, "size": size, "ops": len(costs["corrected"].table.entries),
           "measured_now": len(costs["corrected"].table.entries) - before, "build_s": build_s,
           "calibrate_s": calibrate_s, "overhead_ms": costs["corrected"].table.overhead_ms,
           "calibration": fit.model_dump(), "retest_rho": float(spearmanr(rounds[0], rounds[1]).statistic),
           "measured_ms": measured}
    for mode, table in tables.items():
        est = [table.of_choices(c) for c in chosen]
        errors = [(e - m) / m for e, m in zip(est, measured)]
        row[mode] = {"rho": float(spearmanr(est, measured).statistic),
                     "within10": sum(abs(x) <= 0.10 for x in errors) / len(errors),
                     "median_error": statistics.median(errors), "estimates_ms": est}
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backends", nargs="+", default=["torch", "onnxruntime"], choices=["torch", "onnxruntime"])
    p.add_argument("--widths", nargs="+", type=float, default=[0.5, 1.0])
    p.add_argument("--sizes", nargs="+", type=int, default=[128, 224])
    p.add_argument("--archs", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--op-time", type=float, default=0.2, help="seconds of timing per table operation")
    p.add_argument("--model-time", type=float, default=0.3, help="seconds of timing per arch and round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds per arch (at least 2)")
    p.add_argument("--calibrate", type=int, default=8, help="archs the calibration is fitted on")
    p.add_argument("--device", default="cpu", help="where the torch backend times (cpu, cuda)")
    p.add_argument("--dir", default="benchmarks/luts", help="where the tables are kept (and resumed)")
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args()
    rows = []
    header = ["backend", "width", "input", "ops", "table build s", "calibration s", "measured ms (min/median/max)",
              "retest rho"] + [f"{m} {k}" for m in MODES for k in ("rho", "within 10%", "median err")]
    print("| " + " | ".join(header) + " |\n" + "|---" * len(header) + "|")
    for backend in args.backends:
        for width in args.widths:
            for size in args.sizes:
                r = evaluate(backend, width, size, args.archs, args.seed, Path(args.dir), args.op_time,
                             args.model_time, args.calibrate, args.rounds, args.device)
                rows.append(r)
                m = r["measured_ms"]
                cells = [r["backend"], r["width"], r["size"], r["ops"],
                         f"{r['build_s']:.0f}" + ("" if r["measured_now"] == r["ops"] else " (resumed)"),
                         f"{r['calibrate_s']:.0f}", f"{min(m):.2f}/{statistics.median(m):.2f}/{max(m):.2f}",
                         f"{r['retest_rho']:.3f}"]
                for mode in MODES:
                    cells += [f"{r[mode]['rho']:.3f}", f"{r[mode]['within10']:.0%}",
                              f"{r[mode]['median_error']:+.1%}"]
                print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
