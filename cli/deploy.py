"""``nascore measure`` and ``nascore export``: a network's latency, and its deployable file."""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .options import Commands

if TYPE_CHECKING:
    from nascore.deploy.quantize import Int8Result

# The library is imported inside the handlers: main imports every command module, and `nascore --help` loads no
# torch.


def add(commands: Commands) -> None:
    m = commands.add_parser("measure", help="end-to-end latency of an arch next to its lookup-table estimate")
    m.add_argument("arch", help="arch.json file, named arch, or a file nascore export wrote (.onnx: timed on "
                                "ONNX Runtime; exported program or TorchScript: on PyTorch)")
    m.add_argument("--backend", choices=("torch", "onnxruntime"), help="for an arch (default torch)")
    m.add_argument("--input-size", type=int)
    m.add_argument("--batch", type=int, help="default 1, or an exported file's fixed batch")
    m.add_argument("--threads", type=int, default=1)
    m.add_argument("--device", default="cpu", help="torch backend device (cpu, cuda)")
    m.add_argument("--lut", help="lookup table to estimate from (operations it lacks are measured and added)")
    m.add_argument("--min-run-time", type=float, default=1.0, help="seconds of end-to-end timing")
    m.set_defaults(handler=_measure)

    ex = commands.add_parser("export", help="write a trained run's network (or an arch, random weights) as ONNX, a "
                                            "torch.export program or TorchScript, checked against eager PyTorch")
    ex.add_argument("source", help="run directory, train_model.pt (spec.yaml beside it), arch.json or named arch, or "
                                   "a plugin's source (e.g. a run of nascore-detectron2's detectron2 task)")
    ex.add_argument("--format", required=True, choices=("onnx", "exported-program", "torchscript"))
    ex.add_argument("--out", required=True, help="file to write (nothing is written if the check fails)")
    ex.add_argument("--input-size", type=int, help="input pixels (default: the run's dataset image_size, or the "
                                                   "arch's space input_size)")
    ex.add_argument("--batch", type=int, default=1, help="batch size of the example input (default 1)")
    ex.add_argument("--dynamic-batch", action="store_true", help="dynamic batch axis (checked at two sizes)")
    ex.add_argument("--int8", action="store_true",
                    help="ONNX only, a trained source: post-training static int8 quantization with ONNX Runtime, "
                         "calibrated on the run's training split; prints the validation metrics and latency of "
                         "float32 and int8 (the int8 file has a dynamic batch axis)")
    ex.add_argument("--calibration-batches", type=int, default=8, metavar="K",
                    help="training batches to calibrate int8 on (default 8)")
    ex.add_argument("--int8-recipe", choices=("measure", "all"), default="measure",
                    help="measure (default): keep in float32 the kinds of nodes and the blocks that int8 makes "
                         "slower on this machine (timed here: minutes at 224 px); all: quantize every node")
    ex.set_defaults(handler=_export)


def _measure(args: argparse.Namespace) -> int:
    from nascore.deploy.export import exported_format
    from nascore.errors import NascoreError

    if args.input_size is not None and args.input_size < 1:
        raise NascoreError(f"--input-size must be a positive number of pixels, not {args.input_size}")
    if args.min_run_time <= 0:
        raise NascoreError(f"--min-run-time must be positive, not {args.min_run_time}")
    if Path(args.arch).is_file() and exported_format(Path(args.arch)) is not None:
        return _measure_file(args)
    return _measure_arch(args)


def _measure_arch(args: argparse.Namespace) -> int:
    from nascore.costs.latency import LatencyCost
    from nascore.deploy.measure import measure_arch
    from nascore.errors import NascoreError, SpecError
    from nascore.progress import Reporter
    from nascore.spec import validate_component

    flags = {"backend": "--backend", "batch_size": "--batch", "threads": "--threads", "device": "--device",
             "lut": "--lut"}
    try:
        config = validate_component(LatencyCost, {"backend": args.backend or "torch",
                                                  "batch_size": 1 if args.batch is None else args.batch,
                                                  "threads": args.threads, "device": args.device,
                                                  "lut": args.lut}, "")
    except SpecError as exc:
        lines = [flags.get(line.split(":", 1)[0], "") + ":" + line.split(":", 1)[1] for line in exc.errors]
        raise NascoreError("\n".join(lines)) from None
    reporter = Reporter()
    m = measure_arch(args.arch, config, args.input_size, args.min_run_time, reporter.progress)
    error = (m.estimate_ms - m.timing.median_ms) / m.timing.median_ms
    reporter.table(f"{m.name}: latency ({config.backend})", [
        ("setup", f"{m.device}, {config.threads} thread(s), batch {config.batch_size}, "
                  f"input {m.input_size}x{m.input_size}"),
        ("measured median", f"{m.timing.median_ms:.3f} ms"),
        ("measured p90", f"{m.timing.p90_ms:.3f} ms ({m.timing.runs} runs)"),
        ("lookup-table estimate", f"{m.estimate_ms:.3f} ms ({error:+.1%})")], ("", "value"))
    return 0


def _measure_file(args: argparse.Namespace) -> int:
    from nascore.deploy.export import read_exported
    from nascore.deploy.measure import measure_file
    from nascore.errors import NascoreError
    from nascore.progress import Reporter

    exported = read_exported(Path(args.arch))
    if args.batch is not None and args.batch < 1:
        raise NascoreError(f"--batch must be at least 1, not {args.batch}")
    for flag, value in (("--lut", args.lut), ("--input-size", args.input_size)):
        if value is not None:
            raise NascoreError(f"{flag} applies to an arch, not to an exported file (its input is fixed by the file)")
    m = measure_file(exported, args.backend, args.batch, args.threads, args.device, args.min_run_time)
    kind = "quantized (int8)" if exported.quantized else "float32"
    Reporter().table(f"{exported.path}: latency ({m.runtime})", [
        ("file", f"{exported.format}, {kind}"),
        ("setup", f"{m.device}, {args.threads} thread(s), batch {m.batch}, input {m.shape[-2]}x{m.shape[-1]}"),
        ("measured median", f"{m.timing.median_ms:.3f} ms"),
        ("measured p90", f"{m.timing.p90_ms:.3f} ms ({m.timing.runs} runs)")], ("", "value"))
    return 0


def _export(args: argparse.Namespace) -> int:
    from nascore.deploy.export import TOLERANCE, export_ref
    from nascore.errors import NascoreError

    if args.input_size is not None and args.input_size < 1:
        raise NascoreError(f"--input-size must be a positive number of pixels, not {args.input_size}")
    if args.batch < 1:
        raise NascoreError(f"--batch must be at least 1, not {args.batch}")
    start = time.perf_counter()
    result = export_ref(args.source, args.format, args.out, args.input_size, args.batch, args.dynamic_batch,
                        args.calibration_batches if args.int8 else None, args.int8_recipe)
    print(f"source: {result.described}")
    batch = f"dynamic (checked at {', '.join(map(str, result.batches))})" if len(result.batches) > 1 else args.batch
    print(f"input: {result.input}, batch {batch}")
    print(f"outputs: {', '.join(result.outputs)}")
    print(f"largest absolute difference of the {'float32 ' if result.int8 else ''}file from eager PyTorch: "
          f"{result.max_abs_diff:.3g} (relative {result.relative:.3g}, tolerance {TOLERANCE:g})")
    if result.int8:
        _print_int8(result.int8)
    print(f"written: {result.out} ({args.format}{', int8' if result.int8 else ''}, "
          f"{time.perf_counter() - start:.1f} s)")
    return 0


def _print_int8(q: Int8Result) -> None:
    from nascore.progress import Reporter

    print(f"int8: ONNX Runtime static quantization (QDQ, per-channel int8 weights, uint8 activations), calibrated "
          f"on {q.calibration_images} training images; largest difference from eager {q.max_abs_diff:.3g}")
    rows = [(key, f"{e:.4f}", f"{f:.4f}", f"{i:.4f}", f"{i - f:+.4f}") for key, (e, f, i) in q.metrics.items()]
    rows.append(("latency, ms (ONNX Runtime, 1 thread, batch 1)", "", f"{q.latency_ms[0]:.3f}",
                 f"{q.latency_ms[1]:.3f}", f"speed-up {q.latency_ms[0] / q.latency_ms[1]:.2f}x"))
    Reporter().table("validation split", rows, ("", "eager", "onnx float32", "onnx int8", "int8 - float32"))
    kept = ", ".join(f"{group} ({n} nodes)" for group, n in q.kept_float.items())
    if q.all_int8_ms is not None:
        print(f"measured here: every node in int8 {q.all_int8_ms:.3f} ms; "
              + (f"kept in float32 where that was faster: {kept}" if kept else
                 "keeping nodes in float32 was not faster"))
    speedup = q.latency_ms[0] / q.latency_ms[1]
    if speedup <= 1:
        print(f"int8 does not pay on this machine ({speedup:.2f}x of float32's speed): use the float32 export")
    else:
        print(f"int8 pays on this machine: {speedup:.2f}x float32's speed")
