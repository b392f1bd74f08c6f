"""The ``nascore`` command. User errors print a message and exit with status 2 (``--debug``: traceback)."""
from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

EXIT_USER_ERROR = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nascore", description="Plugin-based neural architecture search.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--version", action="version", version=f"nascore {md.version('nascore')}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def overrides(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a spec field, e.g. --set strategy.epochs=3 (repeatable)")

    def executor(sp: argparse.ArgumentParser, what: str) -> None:
        sp.add_argument("--executor", choices=("local", "ray"), default="local",
                        help=f"where {what} train: local (this process, default) or ray (one Ray task each; "
                             "pip install 'nascore[ray]')")
        sp.add_argument("--ray-address", help="Ray cluster to use (default: RAY_ADDRESS, else a local Ray)")
        sp.add_argument("--cpus-per-task", type=int, default=1, metavar="N",
                        help="CPUs (and torch threads) each Ray task declares (default 1); on CUDA also 1 GPU")

    r = sub.add_parser("run", help="search (and train, with a train: block) as a spec says")
    r.add_argument("spec")
    r.add_argument("--out", help="run directory (default runs/<spec name>-<time>)")
    r.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    overrides(r)
    executor(r, "the random strategy's archs and train.references")

    v = sub.add_parser("validate", help="check a spec; prints ok or every error")
    v.add_argument("spec")
    overrides(v)

    sub.add_parser("schema", help="print the JSON Schema of the spec, plugin configs included")
    sub.add_parser("plugins", help="list installed components and broken plugins")

    i = sub.add_parser("info", help="params, multiply-adds and block table of an arch")
    i.add_argument("arch", help="arch.json file or named arch (e.g. fbnet_c)")
    i.add_argument("--input-size", type=int, help="default: the run's dataset image_size for an arch file in a run "
                                                   "directory (a spec.yaml beside it), else the arch's")
    i.add_argument("--num-classes", type=int, help="classes of a classification head; default: the run's tasks and "
                                                   "dataset for an arch file in a run directory, else 1000")

    g = sub.add_parser("graph", help="computational graph of an arch or timm model (a performance predictor's input)")
    g.add_argument("arch", help="arch.json file, named arch, or timm:<model> (pretrained=False)")
    g.add_argument("--input-size", type=int, help="input pixels (default: the arch's space input_size, or the timm "
                                                   "model's)")
    g.add_argument("--out", help="write the graph here (torch.save of tensors and lists)")

    t = sub.add_parser("train", help="train a found arch from scratch and report validation metrics")
    t.add_argument("arch", help="arch.json file or named arch")
    t.add_argument("--spec", required=True, help="spec giving dataset, tasks, device, seed and train: block")
    t.add_argument("--out", help="output directory (default runs/train-<arch>-<time>)")
    t.add_argument("--resume", action="store_true")
    overrides(t)
    executor(t, "the arch and its train.references")

    lut = sub.add_parser("lut", help="latency lookup tables")
    lsub = lut.add_subparsers(dest="lut_command", required=True, metavar="ACTION")
    b = lsub.add_parser("build", help="time every candidate operation of a spec's space on this machine "
                                      "(an existing table is resumed)")
    b.add_argument("spec", help="spec with a cost: {name: latency, ...} block")
    b.add_argument("--out", help="table file (default: the spec's cost.lut)")
    b.add_argument("--calibrate", type=int, default=8, metavar="N",
                   help="time N random archs end to end and fit the table's calibration to them (default 8; "
                        "0: none; a table that has one keeps it)")
    overrides(b)

    m = sub.add_parser("measure", help="end-to-end latency of an arch next to its lookup-table estimate")
    m.add_argument("arch", help="arch.json file, named arch, or a file nascore export wrote (.onnx: timed on "
                                "ONNX Runtime; exported program or TorchScript: on PyTorch)")
    m.add_argument("--backend", choices=("torch", "onnxruntime"), help="for an arch (default torch)")
    m.add_argument("--input-size", type=int)
    m.add_argument("--batch", type=int, help="default 1, or an exported file's fixed batch")
    m.add_argument("--threads", type=int, default=1)
    m.add_argument("--device", default="cpu", help="torch backend device (cpu, cuda)")
    m.add_argument("--lut", help="lookup table to estimate from (operations it lacks are measured and added)")
    m.add_argument("--min-run-time", type=float, default=1.0, help="seconds of end-to-end timing")

    ex = sub.add_parser("export", help="write a trained run's network (or an arch, random weights) as ONNX, a "
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

    bench = sub.add_parser("bench", help="performance datasets: archs trained on a spec's tasks, for predictors")
    bsub = bench.add_subparsers(dest="bench_command", required=True)
    c = bsub.add_parser("collect", help="draw archs of a spec's space (stratified over multiply-adds), train each "
                                        "on each task with the spec's train: block, record them in --out")
    c.add_argument("spec")
    c.add_argument("--archs", type=int, required=True, metavar="N", help="how many archs")
    c.add_argument("--out", required=True, help="dataset folder; an unfinished collection there is resumed")
    c.add_argument("--workers", type=int, default=1, help="processes training archs at once (default 1; "
                                                          "--executor local)")
    c.add_argument("--seed", type=int, help="seed of the draw (default: the spec's seed)")
    overrides(c)
    executor(c, "the archs")
    pl = bsub.add_parser("pseudo-label", help="AIO-P pseudo-labels of the archs bench collect draws: each arch is a "
                                             "path of a single-path supernet fine-tuned briefly with one task head "
                                             "shared by all (latent sampling), not trained from scratch")
    pl.add_argument("spec")
    pl.add_argument("--archs", type=int, required=True, metavar="N", help="how many archs (bench collect's plan)")
    pl.add_argument("--out", required=True, help="dataset folder; an unfinished one there is resumed")
    pl.add_argument("--task", help="task to label (default: the spec's first, which pretrains the supernet)")
    pl.add_argument("--seed", type=int, help="seed of the draw (default: the spec's seed)")
    pl.add_argument("--supernet-epochs", type=int, metavar="E",
                    help="epochs of single-path supernet training on the spec's first task (default: train.epochs)")
    pl.add_argument("--head-epochs", type=int, metavar="H", help="epochs of shared-head training (default: "
                                                                 "train.epochs)")
    pl.add_argument("--finetune-steps", type=int, default=50, metavar="F",
                    help="steps fine-tuning each arch's path with the shared head (default 50)")
    pl.add_argument("--bins", type=int, default=5, help="depth bins of the latent-sampling population (default 5)")
    pl.add_argument("--per-bin", type=int, default=3, metavar="N", help="archs per depth bin (default 3)")
    pl.add_argument("--sampling", choices=("latent", "body"), default="latent",
                    help="latent: the head learns from samples over the population (AIO-P); body: body swapping, "
                         "one body per minibatch")
    pl.add_argument("--supernet", metavar="FILE", help="a supernet.pt of another pseudo-label folder (same spec and "
                                                       "--supernet-epochs), used instead of training one")
    overrides(pl)

    pr = sub.add_parser("predictor", help="performance predictors: fit on performance datasets, evaluate, predict")
    psub = pr.add_subparsers(dest="predictor_command", required=True)
    f = psub.add_parser("fit", help="fit a predictor per task on performance datasets (and every baseline on the "
                                    "same archs)")
    f.add_argument("data", nargs="+", help="performance dataset folders (nascore bench collect)")
    f.add_argument("--out", required=True, help="predictor file to write")
    f.add_argument("--predictor", default="aio-p", help="predictor name (nascore plugins lists them)")
    f.add_argument("--holdout", type=float, default=0.0, metavar="FRACTION",
                   help="leave this fraction of each task's archs out of fitting (eval scores them)")
    f.add_argument("--seed", type=int, default=0, help="seed of the hold-out split and the fitting")
    f.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="predictor option, e.g. --set epochs=500")
    ev = psub.add_parser("eval", help="Spearman, Kendall tau and MAE per task on archs not used in fitting, "
                                      "against the baselines; a scatter plot")
    ev.add_argument("predictor_file")
    ev.add_argument("data", nargs="+", help="performance dataset folders")
    ev.add_argument("--plot", help="scatter plot file (default: beside the predictor file, <name>.eval.png)")
    pp = psub.add_parser("predict", help="predicted label of an arch on a task")
    pp.add_argument("predictor_file")
    pp.add_argument("arch", help="arch.json file or named arch")
    pp.add_argument("--task", help="task (default: the file's only task)")
    ad = psub.add_parser("adapt", help="add one K-Adapter (AIO-P) to an aio-p predictor, trained on the labelled "
                                       "archs of another task or space, the base frozen")
    ad.add_argument("predictor_file", help="aio-p or aio-p-adapters predictor file")
    ad.add_argument("data", nargs="+", help="performance dataset folders of the source")
    ad.add_argument("--out", required=True, help="aio-p-adapters predictor file to write")
    ad.add_argument("--task", help="the source task (default: the datasets' only task)")
    ad.add_argument("--base-task", help="the file's task to adapt (default: its only task)")
    ad.add_argument("--seed", type=int, default=0, help="seed of the adapter's training")
    ad.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="option of aio-p-adapters, e.g. --set adapter_epochs=100")
    tr = psub.add_parser("transfer", help="fine-tune an aio-p(-adapters) predictor on a few labelled archs of a "
                                          "target task or space (and fit every baseline on the same archs)")
    tr.add_argument("predictor_file", help="aio-p or aio-p-adapters predictor file")
    tr.add_argument("data", nargs="+", help="performance dataset folders of the target")
    tr.add_argument("--out", required=True, help="aio-p-adapters predictor file to write")
    tr.add_argument("--labels", type=int, default=20, metavar="N",
                    help="labelled target archs to fine-tune on, a seeded draw (default 20); eval scores the rest")
    tr.add_argument("--task", help="the target task (default: the datasets' only task)")
    tr.add_argument("--base-task", help="the file's task to start from (default: its only task)")
    tr.add_argument("--train", default="heads+base", metavar="MODE",
                    help="what learns: heads+base (default, AIO-P's: adapters frozen), heads, heads+adapters")
    tr.add_argument("--seed", type=int, default=0, help="seed of the draw and the fine-tuning")
    tr.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="option of aio-p-adapters, e.g. --set fine_tune_epochs=100")

    cmp = sub.add_parser("compare", help="run several search specs over several seeds, train each found arch with "
                                         "the same budget, and compare them in one table and plot")
    cmp.add_argument("specs", nargs="+", metavar="SPEC", help="specs with the same dataset, tasks and train: block")
    cmp.add_argument("--seeds", type=int, default=3, metavar="N", help="seeds 0 to N-1 (default 3)")
    cmp.add_argument("--out", required=True, help="folder of the runs (DIR/<spec name>/seed<s>) and the results; "
                                                  "finished runs are reused, unfinished ones resumed")
    overrides(cmp)

    rep = sub.add_parser("report", help="one self-contained HTML page of a run directory: curves, decisions, "
                                        "Pareto front, found archs, spec")
    rep.add_argument("run", help="run directory (nascore run --out)")
    rep.add_argument("--out", help="HTML file to write (default RUN/report.html)")

    d = sub.add_parser("data", help="built-in data utilities")
    dsub = d.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    e = dsub.add_parser("export", help="write a dataset as COCO JSON + PNG masks")
    e.add_argument("dataset", help="dataset name (digit-scenes)")
    e.add_argument("dir")
    e.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dataset option, e.g. --set image_size=96")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from nascore.errors import NascoreError

    try:
        return COMMANDS[args.command](args) or 0
    except NascoreError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:  # an unreadable input or unwritable output path, e.g. --out on a read-only disk
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        hint = {"lut": "run the same command again to resume the table",
                "bench": "run the same command again to resume the collection",
                "compare": "run the same command again: finished runs are kept, the interrupted one resumes",
                }.get(args.command, "resume with --resume")
        print(f"interrupted; {hint}", file=sys.stderr)
        return 130


def _cmd_validate(args: argparse.Namespace) -> int:
    from nascore.spec import load_spec

    load_spec(args.spec, args.overrides)
    print("ok")
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    from nascore.spec import spec_json_schema

    problems: list[str] = []
    schema = spec_json_schema(problems=problems)
    for problem in problems:  # on stderr: stdout stays valid JSON
        print(f"warning: {problem}", file=sys.stderr)
    print(json.dumps(schema, indent=2))
    return 0


def _cmd_plugins(args: argparse.Namespace) -> int:
    from rich import box
    from rich.table import Table

    from nascore.progress import Reporter
    from nascore.registry import get_registry

    registry = get_registry()
    conflicted = {(e.kind, e.name) for group in registry.conflicts.values() for e in group}
    # no side borders, one space between columns: rows fit 80 columns (a pipe's width) whole
    table = Table(title="components", show_header=True, box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    for header in ("kind", "name", "distribution", "status"):
        table.add_column(header, overflow="fold")  # never elide a name, however narrow the terminal
    for e in registry.all_entries():
        table.add_row(e.kind, e.name, e.source.dist, "name conflict" if (e.kind, e.name) in conflicted else "ok")
    Reporter().out.print(table)
    if registry.problems:
        # plain lines, not a table: distribution, entry point and error must show in full at any width
        print(f"\nbroken plugins ({len(registry.problems)}):")
        for p in registry.problems:
            print(f"- distribution '{p.source.dist}', entry point '{p.source.entry_point}':")
            print(textwrap.indent(p.message, "    "))
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from nascore.arch import arch_space, resolve_arch
    from nascore.errors import NascoreError
    from nascore.progress import Reporter
    from nascore.protocols import MultiTaskBackbone
    from nascore.registry import get_registry
    from nascore.strategy import SHARED
    from nascore.task import build_network
    from nascore.train import model_counts

    if args.num_classes is not None and args.num_classes < 2:
        raise NascoreError(f"--num-classes must be at least 2, not {args.num_classes}")
    if args.input_size is not None and args.input_size < 1:
        raise NascoreError(f"--input-size must be a positive number of pixels, not {args.input_size}")
    registry = get_registry()
    arch = resolve_arch(args.arch, registry)
    spec, spec_path = _run_spec_of(args, registry)
    info = spec.dataset.create().info() if spec is not None else None
    if args.input_size:
        size, size_from = args.input_size, "--input-size"
    elif info is not None:
        size, size_from = info.image_size, f"the dataset's image_size in {spec_path}"
    else:
        size, size_from = None, "the arch's space input_size; --input-size N to change"
    space = arch_space(arch, args.arch, registry, input_size=size)
    size = size or space.input_size
    backbone = space.build(arch)
    if args.num_classes is None and spec is not None:  # the heads the run trains (see train.arch_network)
        tasks = [t.create() for t in spec.tasks if arch.task is SHARED or t.name == arch.task]
        net = build_network(backbone, tasks, info)
        heads = (", ".join(f"{t.name} {t.num_classes(info)}" if t.target in info.num_classes else t.name
                           for t in tasks) + f" (the tasks and dataset {spec.dataset.name} in {spec_path})")
    elif isinstance(backbone, MultiTaskBackbone):  # its heads are its tasks', not a classifier
        net = backbone
        heads = f"none (a branched backbone for tasks {', '.join(backbone.tasks)}, counted without heads)"
    else:
        num_classes = args.num_classes or 1000
        classification = registry.get("task", "classification")({"num_classes": num_classes})
        net = build_network(backbone, [classification], None)
        heads = (f"classification {num_classes} (--num-classes)" if args.num_classes else
                 "classification 1000 (the default, as on ImageNet; --num-classes K to change)")
    counts = model_counts(net, info.in_channels if info else 3, size)
    reporter = Reporter()
    reporter.table(f"{arch.name or args.arch} ({arch.space})", space.describe(arch), ("decision", "choice"))
    levels = ", ".join(f"{f['num_chs']}@/{f['reduction']}" for f in backbone.feature_info)
    print(f"input: {size}x{size} ({size_from})")
    print(f"classes: {heads}")
    print(f"params: {counts['params'] / 1e6:.3f} M")
    print(f"multiply-adds: {counts['macs'] / 1e6:.1f} M")
    print(f"feature levels (channels@/reduction): {levels}")
    return 0


def _cmd_graph(args: argparse.Namespace) -> int:
    from nascore.errors import NascoreError
    from nascore.fileio import save_checkpoint
    from nascore.performance.graph import build_graph, graph_to_dict, histogram, resolve_model

    if args.input_size is not None and args.input_size < 1:
        raise NascoreError(f"--input-size must be a positive number of pixels, not {args.input_size}")
    model, size, what = resolve_model(args.arch, args.input_size)
    graph = build_graph(model, size)
    print(f"{what} at {size}x{size}")
    print(f"nodes: {graph.num_nodes}")
    print(f"edges: {graph.edge_index.shape[1]}")
    counts = histogram(graph)
    width = max(map(len, counts), default=0)
    for op, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {op:<{width}}  {n}")
    if args.out:
        save_checkpoint(graph_to_dict(graph), args.out)
        print(f"written: {args.out}")
    return 0


def _run_spec_of(args: argparse.Namespace, registry: Any) -> tuple[Any, Path | None]:
    """The spec of the run directory an arch file sits in (a spec.yaml beside it), unless the flags give everything
    it would: (spec, its path), or (None, None)."""
    from nascore.errors import NascoreError
    from nascore.rundir import SPEC_FILE
    from nascore.spec import load_spec

    path = Path(args.arch).parent / SPEC_FILE
    if not Path(args.arch).is_file() or not path.is_file() or (args.num_classes and args.input_size):
        return None, None
    try:
        return load_spec(path, registry=registry), path
    except NascoreError as exc:
        raise NascoreError(f"{args.arch} sits in a run directory, but its {path} cannot be used to count the arch "
                           f"as that run trains it: {exc}\n(pass --num-classes and --input-size to count it "
                           "without the spec)") from None


def _executor(args: argparse.Namespace, spec: Any, workers: int = 1) -> Any:
    """The ``--executor`` of a command (nascore.executor); a CUDA spec's Ray tasks declare one GPU each."""
    from nascore.distributed import launched
    from nascore.errors import NascoreError
    from nascore.executor import make_executor

    if args.executor == "ray" and launched():
        raise NascoreError("--executor ray under torchrun: every rank would send the archs to Ray; run the command "
                           "once, without torchrun")
    return make_executor(args.executor, args.ray_address, args.cpus_per_task,
                         1 if spec.device.startswith("cuda") else 0, workers, lambda m: print(m, file=sys.stderr))


def _default_out(stem: str) -> Path:
    return Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def _cmd_run(args: argparse.Namespace) -> int:
    from nascore.errors import NascoreError
    from nascore.run import open_run, run_spec
    from nascore.rundir import discard_unstarted
    from nascore.spec import load_spec

    spec = load_spec(args.spec, args.overrides)
    if args.resume and not args.out:
        raise NascoreError("--resume needs --out DIR, the run directory to continue")
    run = open_run(spec, Path(args.out) if args.out else _default_out(Path(args.spec).stem), args.resume,
                   executor=_executor(args, spec))
    run.reporter.log(f"run directory: {run.out_dir}")
    try:
        summary = run_spec(run)
    except NascoreError:
        discard_unstarted(run)
        raise
    _print_summary(run, summary)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from nascore.arch import arch_space, resolve_arch
    from nascore.run import build_run, train_run
    from nascore.spec import load_spec

    spec = load_spec(args.spec, args.overrides)
    arch = resolve_arch(args.arch)
    out = Path(args.out) if args.out else _default_out(f"train-{Path(args.arch).stem}")
    run = build_run(spec, out, args.resume, executor=_executor(args, spec))
    space = arch_space(arch, args.arch, run.registry, input_size=run.info.image_size)  # checked before writing
    names = [t.name for t in run.tasks]
    if arch.task is not None and arch.task not in names:  # e.g. FBNetV5's arch_detection.json in detectron2
        note = (f"note: {args.arch} was found for task '{arch.task}', which the spec does not have: it is trained "
                f"for the spec's tasks ({', '.join(names)})")
        arch = arch.model_copy(update={"task": None})
    else:
        note = None
    run.open()
    run.reporter.log(f"run directory: {run.out_dir}")
    if note:
        run.reporter.log(note)
    _print_summary(run, train_run(run, arch, space))
    return 0


def _print_summary(run: Any, summary: dict[str, Any]) -> None:
    from nascore import distributed

    if not distributed.is_main():  # under torchrun rank 0 alone prints
        return
    for key, entry in summary["archs"].items():
        run.reporter.table(f"found arch ({key}) -> {run.out_dir / entry['file']}", entry["described"],
                           ("decision", "choice"))
        search = entry.get("search")  # validation on the supernet path; counts of the standalone network
        results = {f"{key} after search, epoch {search['epoch']}": search} if search else {}
        if "train" in entry:
            results[key] = entry["train"]
        results.update({f"reference {name}": res for name, res in entry.get("references", {}).items()})
        for label, res in results.items():
            metrics = ", ".join(f"{k[4:]}={v:.4f}" for k, v in res.items() if k.startswith("val/"))
            relative = f", relative task performance: {res['relative']:+.2%}" if res.get("relative") is not None else ""
            print(f"[{label}] multiply-adds: {res['macs'] / 1e6:.2f} M, params: {res['params'] / 1e6:.3f} M, "
                  f"validation: {metrics}{relative}")


def _cmd_lut(args: argparse.Namespace) -> int:
    from nascore.costs.latency import LatencyCost, calibrate
    from nascore.errors import NascoreError
    from nascore.progress import Reporter
    from nascore.spec import load_spec

    if args.calibrate == 1 or args.calibrate < 0:
        raise NascoreError(f"--calibrate must be 0 or at least 2 archs, not {args.calibrate}")
    spec = load_spec(args.spec, args.overrides)
    cost = spec.cost.create() if spec.cost else None
    if not isinstance(cost, LatencyCost):
        raise NascoreError(f"{args.spec}: cost: `nascore lut build` needs a cost: {{name: latency, ...}} block, "
                           f"not {'none' if cost is None else repr(cost.name)}")
    out = args.out or cost.config.lut
    if out is None:
        raise NascoreError(f"{args.spec}: give the table file with --out FILE or cost.lut in the spec")
    config = cost.config.model_copy(update={"lut": out, "measure_missing": True})  # building is measuring
    space = spec.space.create()
    in_channels = spec.dataset.create().info().in_channels
    reporter = Reporter()
    cost = type(cost)(config, progress=reporter.progress)
    before, start = len(cost.table.entries), time.perf_counter()
    space.supernet().price(cost, space.input_size, in_channels)  # measures what the table lacks, saving as it goes
    measured = len(cost.table.entries) - before
    cost.save()
    if args.calibrate and cost.table.calibration is None:
        calibrate(cost, space, args.calibrate, spec.seed, in_channels)
    fingerprint = ", ".join(f"{k}={v}" for k, v in cost.table.fingerprint.items())
    print(f"{out}: {len(cost.table.entries)} operations ({measured} measured now, {before} already in the table) "
          f"in {time.perf_counter() - start:.1f} s\nfingerprint: {fingerprint}")
    if (c := cost.table.calibration) is not None:
        print(f"calibration on {c.archs} archs: measured = {c.scale:.3f} x estimate "
              f"(median error {c.error_before:.1%} -> {c.error_after:.1%})")
    return 0


def _cmd_measure(args: argparse.Namespace) -> int:
    from nascore.arch import arch_space, resolve_arch
    from nascore.costs.latency import LatencyCost
    from nascore.deploy.export import exported_format, read_exported
    from nascore.errors import NascoreError, SpecError
    from nascore.progress import Reporter
    from nascore.spec import validate_component

    if args.input_size is not None and args.input_size < 1:
        raise NascoreError(f"--input-size must be a positive number of pixels, not {args.input_size}")
    if args.min_run_time <= 0:
        raise NascoreError(f"--min-run-time must be positive, not {args.min_run_time}")
    if Path(args.arch).is_file() and exported_format(Path(args.arch)) is not None:
        return _measure_file(args, read_exported(Path(args.arch)))
    args.backend, args.batch = args.backend or "torch", 1 if args.batch is None else args.batch
    flags = {"backend": "--backend", "batch_size": "--batch", "threads": "--threads", "device": "--device",
             "lut": "--lut"}
    try:
        config = validate_component(LatencyCost, {"backend": args.backend, "batch_size": args.batch,
                                                  "threads": args.threads, "device": args.device,
                                                  "lut": args.lut}, "")
    except SpecError as exc:
        lines = [flags.get(line.split(":", 1)[0], "") + ":" + line.split(":", 1)[1] for line in exc.errors]
        raise NascoreError("\n".join(lines)) from None
    arch = resolve_arch(args.arch)
    space = arch_space(arch, args.arch, input_size=args.input_size)
    reporter = Reporter()
    size, cost = space.input_size, LatencyCost(config, progress=reporter.progress)
    # the estimate: the arch's own operations priced from the table (missing ones measured first)
    ops = space.arch_operations(arch, size)
    estimate = sum(cost.price_all([(op.module, op.input_shape) for op in ops])) + cost.overhead()
    timing = cost.time_model(space.build(arch), (args.batch, 3, size, size), args.min_run_time)
    error = (estimate - timing.median_ms) / timing.median_ms
    reporter.table(f"{arch.name or args.arch}: latency ({args.backend})", [
        ("setup", f"{cost.table.fingerprint['device']}, {args.threads} thread(s), batch {args.batch}, "
                  f"input {size}x{size}"),
        ("measured median", f"{timing.median_ms:.3f} ms"),
        ("measured p90", f"{timing.p90_ms:.3f} ms ({timing.runs} runs)"),
        ("lookup-table estimate", f"{estimate:.3f} ms ({error:+.1%})")], ("", "value"))
    return 0


def _measure_file(args: argparse.Namespace, exported: Any) -> int:
    """Latency of an exported file: ONNX on ONNX Runtime, an exported program or TorchScript on PyTorch."""
    import warnings

    import torch

    from nascore.costs.timing import OnnxRuntimeBackend, TorchBackend, device_name
    from nascore.deploy.export import load_module
    from nascore.errors import NascoreError
    from nascore.progress import Reporter

    runtime = "onnxruntime" if exported.format == "onnx" else "torch"
    if args.batch is not None and args.batch < 1:
        raise NascoreError(f"--batch must be at least 1, not {args.batch}")
    for flag, value in (("--lut", args.lut), ("--input-size", args.input_size)):
        if value is not None:
            raise NascoreError(f"{flag} applies to an arch, not to an exported file (its input is fixed by the file)")
    if args.backend not in (None, runtime):
        raise NascoreError(f"--backend {args.backend}: a {exported.format} file runs on {runtime}")
    if runtime == "onnxruntime" and args.device != "cpu":
        raise NascoreError(f"--device {args.device}: an ONNX file is timed on ONNX Runtime's CPU execution provider")
    if len(exported.input_shape) == 4:  # a batch of images: the file's own batch, or --batch for a dynamic one
        batch = args.batch or exported.batch or 1
        if exported.batch is not None and batch != exported.batch:
            raise NascoreError(f"--batch {batch}: {exported.path} was exported with a fixed batch of "
                               f"{exported.batch}")
        shape = (batch, *exported.input_shape[1:])
    else:
        if args.batch not in (None, 1):
            raise NascoreError(f"--batch {args.batch}: {exported.path} takes one input of shape "
                               f"{exported.input_shape}, no batch")
        batch, shape = 1, exported.input_shape
    if runtime == "onnxruntime":
        backend = OnnxRuntimeBackend(args.threads)
        timing = backend.time_session(backend.load(str(exported.path)), shape, args.min_run_time,
                                      exported.input_name)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # moving a TorchScript module reads .grad of non-leaf tensors
            timing = TorchBackend(args.device, args.threads).time(load_module(exported.format, exported.path),
                                                                  shape, args.min_run_time)
    where = device_name(torch.device(args.device if runtime == "torch" else "cpu"))
    kind = "quantized (int8)" if exported.quantized else "float32"
    Reporter().table(f"{exported.path}: latency ({runtime})", [
        ("file", f"{exported.format}, {kind}"),
        ("setup", f"{where}, {args.threads} thread(s), batch {batch}, input {shape[-2]}x{shape[-1]}"),
        ("measured median", f"{timing.median_ms:.3f} ms"),
        ("measured p90", f"{timing.p90_ms:.3f} ms ({timing.runs} runs)")], ("", "value"))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from nascore.analysis.report import write_report

    print(f"wrote {write_report(args.run, args.out)}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from nascore.deploy.export import TOLERANCE, export, load_source, plugin_exporter
    from nascore.errors import NascoreError

    if args.input_size is not None and args.input_size < 1:
        raise NascoreError(f"--input-size must be a positive number of pixels, not {args.input_size}")
    if args.batch < 1:
        raise NascoreError(f"--batch must be at least 1, not {args.batch}")
    exporter = plugin_exporter(args.source)
    start = time.perf_counter()
    if exporter is not None:
        result = exporter(fmt=args.format, out=args.out, input_size=args.input_size, batch=args.batch,
                          dynamic_batch=args.dynamic_batch,
                          calibration_batches=args.calibration_batches if args.int8 else None)
    else:
        source = load_source(args.source, args.input_size)
        result = export(source, args.format, args.out, args.batch, args.dynamic_batch,
                        args.calibration_batches if args.int8 else None)
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


def _print_int8(q: Any) -> None:
    from nascore.progress import Reporter

    print(f"int8: ONNX Runtime static quantization (QDQ, per-channel int8 weights, uint8 activations), calibrated "
          f"on {q.calibration_images} training images; largest difference from eager {q.max_abs_diff:.3g}")
    rows = [(key, f"{e:.4f}", f"{f:.4f}", f"{i:.4f}", f"{i - f:+.4f}") for key, (e, f, i) in q.metrics.items()]
    rows.append(("latency, ms (ONNX Runtime, 1 thread, batch 1)", "", f"{q.latency_ms[0]:.3f}",
                 f"{q.latency_ms[1]:.3f}", f"speed-up {q.latency_ms[0] / q.latency_ms[1]:.2f}x"))
    Reporter().table("validation split", rows, ("", "eager", "onnx float32", "onnx int8", "int8 - float32"))


def _cmd_data(args: argparse.Namespace) -> int:
    from nascore.errors import NascoreError, SpecError
    from nascore.protocols import Exporting
    from nascore.registry import get_registry
    from nascore.spec import ComponentSpec, apply_overrides, validate_component

    registry = get_registry()
    cls = registry.get("dataset", args.dataset)
    try:
        config = validate_component(cls, apply_overrides({}, args.overrides), "")
    except SpecError as exc:
        raise NascoreError(f"options of dataset '{args.dataset}' (--set) are not valid:\n"
                           + "\n".join(f"  {line}" for line in exc.errors)) from None
    if not issubclass(cls, Exporting):
        exportable = [n for n in registry.names("dataset") if issubclass(registry.get("dataset", n), Exporting)]
        raise NascoreError(f"dataset '{args.dataset}' cannot be exported (exportable: "
                           f"{', '.join(exportable) or 'none'})")
    paths = ComponentSpec("dataset", args.dataset, cls, config).create().export(args.dir)
    for split, path in paths.items():
        print(f"{split}: {path}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.bench_command == "pseudo-label":
        from nascore.performance.pseudolabel import command

        return command(args)
    from nascore.errors import NascoreError
    from nascore.performance.collect import collect
    from nascore.spec import load_spec

    if args.archs < 1 or args.workers < 1:
        raise NascoreError("--archs and --workers must be at least 1")
    spec = load_spec(args.spec, args.overrides)
    result = collect(spec, Path(args.out), args.archs, spec.seed if args.seed is None else args.seed,
                     _executor(args, spec, args.workers))
    rate = f", {result['archs_per_hour']:.0f} archs/hour" if result["archs_per_hour"] else ""
    print(f"collected {result['collected']} archs in {result['seconds']:.0f} s{rate}; "
          f"{args.archs} of {args.archs} in {args.out}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from nascore.analysis.compare import HEADER, PLOT, RESULTS, compare, plot, table_rows
    from nascore.errors import NascoreError

    if args.seeds < 1:
        raise NascoreError(f"--seeds must be at least 1, not {args.seeds}")
    out = Path(args.out)
    results = compare(args.specs, list(range(args.seeds)), out, args.overrides)
    # a Markdown table, whole at any width (a rich table cuts cells to the console's) and ready for a report
    print(f"{len(args.specs)} searches x {args.seeds} seeds, each found arch trained with one budget (trained: archs "
          "trained in the search; labelled: archs the predictor was fitted on)\n")
    for row in [HEADER, tuple("---" for _ in HEADER), *table_rows(results)]:
        print("| " + " | ".join(row) + " |")
    plot(out / PLOT, results)
    print(f"written: {out / RESULTS}, {out / PLOT}")
    return 0


def _cmd_predictor(args: argparse.Namespace) -> int:
    from nascore.performance.predictors import commands

    return {"fit": commands.fit, "eval": commands.evaluate, "predict": commands.predict, "adapt": commands.adapt,
            "transfer": commands.transfer}[args.predictor_command](args)


COMMANDS = {"run": _cmd_run, "validate": _cmd_validate, "schema": _cmd_schema, "plugins": _cmd_plugins,
            "info": _cmd_info, "graph": _cmd_graph, "train": _cmd_train, "lut": _cmd_lut, "measure": _cmd_measure,
            "bench": _cmd_bench, "predictor": _cmd_predictor, "compare": _cmd_compare, "data": _cmd_data,
            "report": _cmd_report, "export": _cmd_export}
