"""Export benchmark (issue 20): FBNet-A/C, FBNetV2-F1/F4 and the found arch of each example, trained on
digit-scenes, exported to ONNX and quantized to int8 with ``nascore export --int8``.

Per network: export time and largest difference from eager PyTorch (float32 ONNX), ONNX Runtime latency (1 thread,
batch 1) of float32 and int8 at the training resolution, the validation metric of both, and, for classifiers, the
latency of both at 224 x 224 (the same weights exported at 224, int8 calibrated on the digit-scenes training images
resized to 224), where int8 has work enough to pay off, with how often int8's top-1 agrees with float32's there.
The int8 files are ``nascore export --int8``'s: the groups of nodes int8 makes slower on this machine kept in
float32, chosen by timing them here (``--int8-recipe all``: every node quantized, no search).

    python benchmarks/export.py --out /tmp/export-bench              # train (reused when done), then measure
    python benchmarks/export.py --out /tmp/export-bench --epochs 10  # the training budget of every network

Trainings run one at a time with one thread; ``--jobs 2`` runs two at once. ``--only`` picks networks before
anything trains; ``--set`` overrides every training's spec. The table is printed as Markdown and written to
OUT/export.json. Smoke run (tests/test_benchmarks.py; tiny sizes, numbers meaningless):

    python benchmarks/export.py --out /tmp/export-smoke --only fbnet_a --epochs 1 --set dataset.num_train=16 \
        --set dataset.num_val=8 --int8-recipe all
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
NAMED = ["fbnet_a", "fbnet_c", "fbnetv2_f1", "fbnetv2_f4"]
#: example -> the arch file to train with the example's spec (None: the example searches and trains it itself);
#: detection.yaml trains a found arch in detectron2's Faster R-CNN: FBNetV5's detection arch, as its header says
EXAMPLES = {"quickstart": None, "fbnetv2": None, "latency": None, "fbnetv5": "fbnetv5-search/arch_classification.json",
            "segmentation": None, "bmtas": None, "detection": "fbnetv5-search/arch_detection.json"}
SEARCHES = {"fbnetv5-search": "fbnetv5"}


def nascore(*args: str, log: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "w") as f:
        done = subprocess.run([str(Path(sys.executable).parent / "nascore"), *args], stdout=f,
                              stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"nascore {' '.join(args)} failed; see {log}")


#: the named archs' training (at width 1.0 the quickstart's SGD at lr 0.2 left FBNet-A/C at top-1 0.21/0.11 after 10 epochs)
NAMED_TRAIN = ("train.optimizer=adamw", "train.lr=0.003", "train.weight_decay=0.0001")


def train_all(out: Path, names: list[str], epochs: int, jobs: int, overrides: list[str]) -> dict[str, Path]:
    """Run directories holding a train_model.pt, one per name of ``names``: a named arch (quickstart's data, trained
    with AdamW: ``NAMED_TRAIN``) or an example (its own spec; searched first). ``overrides`` go to every ``nascore``
    command."""
    quick = str(ROOT / "examples" / "quickstart.yaml")
    sets = [a for o in overrides for a in ("--set", o)]
    budget = ["--set", f"train.epochs={epochs}", *sets]
    todo: dict[str, list[list[str]]] = {}
    for name in names:
        if name in NAMED:
            named = [a for o in NAMED_TRAIN for a in ("--set", o)]
            todo[name] = [["train", name, "--spec", quick, "--out", str(out / name), *named, *budget]]
            continue
        spec, arch = str(ROOT / "examples" / f"{name}.yaml"), EXAMPLES[name]
        if arch is None:
            todo[name] = [["run", spec, "--out", str(out / name), *budget]]
        else:
            search = arch.split("/")[0]
            todo[name] = [["run", str(ROOT / "examples" / f"{SEARCHES[search]}.yaml"), "--out", str(out / search),
                           *sets],
                          ["train", str(out / arch), "--spec", spec, "--out", str(out / name), *budget]]

    def one(name: str) -> None:
        if (out / name / "train_model.pt").is_file():
            return
        start = time.perf_counter()
        for i, args in enumerate(todo[name]):
            run_dir = Path(args[args.index("--out") + 1])
            if (run_dir / "summary.json").is_file():
                continue
            resume = ["--resume"] if run_dir.is_dir() else []
            nascore(*args, *resume, log=out / f"{name}.{i}.log")
        print(f"trained {name} in {time.perf_counter() - start:.0f} s", flush=True)

    out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(one, todo))
    return {name: out / name for name in todo}


def latency_224(run: Path, scratch: Path, measure: bool) -> dict:
    """ONNX Runtime latency at 224 x 224 of a classifier run's weights, float32 and int8 (the recipe measured here,
    calibrated on the training images resized to 224), and how often int8's top-1 agrees with float32's on the
    validation images resized to 224."""
    import onnxruntime

    from nascore.data import loader
    from nascore.deploy.export import export, load_source
    from nascore.deploy.quantize import best_int8, calibration_batches

    source = load_source(str(run), input_size=224)
    fp32, int8 = scratch / f"{run.name}-224.onnx", scratch / f"{run.name}-224-int8.onnx"
    export(source, "onnx", fp32, dynamic_batch=True)
    assert source.data is not None

    def at_224(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=224, mode="bilinear", align_corners=False)

    q = best_int8(fp32, int8, [at_224(x) for x in calibration_batches(source.data, 2)], (1, 3, 224, 224), measure)
    sessions = [onnxruntime.InferenceSession(str(f), providers=["CPUExecutionProvider"]) for f in (fp32, int8)]
    agree = total = 0
    for images, _ in loader(source.data.parts.val_set, 50, source.data.parts.collate, shuffle=False):
        a, b = (s.run(None, {"input": at_224(images).numpy()})[0].argmax(1) for s in sessions)
        agree, total = agree + int((a == b).sum()), total + len(a)
    return {"ms": list(q.latency_ms), "all_int8_ms": q.all_int8_ms, "kept_float": q.kept_float,
            "top1_agreement": agree / total}


def measure_plugin(name: str, run: Path, scratch: Path, exporter) -> dict:
    """A run a plugin exports (detectron2): float32 ONNX only, timed on its own input; the metric is the run's."""
    from nascore.costs.timing import OnnxRuntimeBackend
    from nascore.deploy.export import read_exported
    from nascore.deploy.quantize import MIN_RUN_TIME

    start = time.perf_counter()
    checked = exporter(fmt="onnx", out=scratch / f"{name}.onnx", input_size=None, batch=1, dynamic_batch=False,
                       calibration_batches=None)
    seconds = time.perf_counter() - start
    file = read_exported(scratch / f"{name}.onnx")
    backend = OnnxRuntimeBackend(threads=1)
    timing = backend.time_session(backend.load(str(file.path)), file.input_shape, MIN_RUN_TIME, file.input_name)
    summary = json.loads((run / "summary.json").read_text())
    train = next(iter(summary["archs"].values()))["train"]
    metrics = {k[len("val/"):]: [v, None] for k, v in train.items() if k.startswith("val/") and k.endswith("/AP")}
    return {"name": name, "arch": "found", "input": file.input_shape[-1], "macs": train["macs"], "export_s": seconds,
            "max_abs_diff": checked.max_abs_diff, "latency_ms": [timing.median_ms, None], "metrics": metrics,
            "primary": list(metrics)}


def measure(name: str, run: Path, scratch: Path, measure_int8: bool = True) -> dict:
    from nascore.costs.flops import count_macs
    from nascore.deploy.export import export, load_source, plugin_exporter

    exporter = plugin_exporter(str(run))
    if exporter is not None:
        return measure_plugin(name, run, scratch, exporter)
    source = load_source(str(run))
    start = time.perf_counter()
    checked = export(source, "onnx", scratch / f"{name}.onnx")
    seconds = time.perf_counter() - start
    q = export(source, "onnx", scratch / f"{name}-int8.onnx", int8_batches=8,
               int8_recipe="measure" if measure_int8 else "all").int8
    assert q is not None, "export with int8_batches measures the int8 file"
    x = torch.zeros(1, source.in_channels, source.input_size, source.input_size)
    row = {"name": name, "arch": source.arch.name or "found", "input": source.input_size,
           "macs": count_macs(source.model, x), "export_s": seconds, "max_abs_diff": checked.max_abs_diff,
           "latency_ms": list(q.latency_ms), "metrics": {k: [f, i] for k, (_, f, i) in q.metrics.items()},
           "primary": [f"{t.name}/{t.primary_metric}" for t in source.data.tasks]}
    if [t.name for t in source.data.tasks] == ["classification"]:
        row["at_224"] = latency_224(run, scratch, measure_int8)
    return row


def table(rows: list[dict]) -> str:
    lines = ["| network | input | MACs | export s | max abs diff | ORT fp32 ms | ORT int8 ms | metric fp32 -> int8 "
             "| 224 px: fp32 ms | int8 ms (all-int8 ms) | top-1 agreement | kept in float32 |", "|---" * 12 + "|"]
    for r in rows:
        metrics = "; ".join(f"{k} {r['metrics'][k][0]:.3f} -> {_num(r['metrics'][k][1], 3)}" for k in r["primary"])
        at = r.get("at_224")
        lines.append(f"| {r['name']} | {r['input']} | {r['macs'] / 1e6:.1f} M | {r['export_s']:.2f} | "
                     f"{r['max_abs_diff']:.1e} | {r['latency_ms'][0]:.3f} | {_num(r['latency_ms'][1], 3)} | {metrics} | "
                     + (f"{at['ms'][0]:.2f} | {at['ms'][1]:.2f} ({_num(at['all_int8_ms'], 2)}) | {at['top1_agreement']:.3f} | "
                        f"{', '.join(f'{g} ({n})' for g, n in at['kept_float'].items()) or 'nothing'} |" if at
                        else "- | - | - | - |"))
    return "\n".join(lines)


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--only", nargs="+", choices=[*NAMED, *EXAMPLES], metavar="NAME",
                   help=f"networks to train and measure (default all: {', '.join([*NAMED, *EXAMPLES])})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="spec override of every training (as nascore's --set)")
    p.add_argument("--int8-recipe", choices=("measure", "all"), default="measure",
                   help="as nascore export's: measure which nodes int8 pays for here (default), or quantize all")
    args = p.parse_args()
    runs = train_all(args.out, args.only or [*NAMED, *EXAMPLES], args.epochs, args.jobs, args.overrides)
    torch.set_num_threads(1)
    scratch = args.out / "files"
    scratch.mkdir(exist_ok=True)
    rows = [measure(name, run, scratch, args.int8_recipe == "measure") for name, run in runs.items()]
    (args.out / "export.json").write_text(json.dumps(rows, indent=1))
    print(table(rows))


if __name__ == "__main__":
    main()
