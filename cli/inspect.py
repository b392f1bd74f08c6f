"""``nascore schema``, ``plugins``, ``info`` and ``graph``: what nascore knows of specs, installed components and
archs."""
from __future__ import annotations

import argparse
import json
import sys
import textwrap

from .options import Commands

# The library is imported inside the handlers: main imports every command module, and `nascore --help` loads no
# torch.


def add(commands: Commands) -> None:
    s = commands.add_parser("schema", help="print the JSON Schema of the spec, plugin configs included")
    s.set_defaults(handler=_schema)
    p = commands.add_parser("plugins", help="list installed components and broken plugins (exit status 1 if any)")
    p.set_defaults(handler=_plugins)

    i = commands.add_parser("info", help="params, multiply-adds and block table of an arch")
    i.add_argument("arch", help="arch.json file or named arch (e.g. fbnet_c)")
    i.add_argument("--input-size", type=int, help="default: the run's dataset image_size for an arch file in a run "
                                                   "directory (a spec.yaml beside it), else the arch's")
    i.add_argument("--num-classes", type=int, help="classes of a classification head; default: the run's tasks and "
                                                   "dataset for an arch file in a run directory, else 1000")
    i.set_defaults(handler=_info)

    g = commands.add_parser("graph", help="computational graph of an arch or timm model (a performance predictor's "
                                          "input)")
    g.add_argument("arch", help="arch.json file, named arch, or timm:<model> (pretrained=False)")
    g.add_argument("--input-size", type=int, help="input pixels (default: the arch's space input_size, or the timm "
                                                   "model's)")
    g.add_argument("--out", help="write the graph here (torch.save of tensors and lists)")
    g.set_defaults(handler=_graph)


def _schema(args: argparse.Namespace) -> int:
    from nascore.spec import spec_json_schema

    problems: list[str] = []
    schema = spec_json_schema(problems=problems)
    for problem in problems:  # on stderr: stdout stays valid JSON
        print(f"warning: {problem}", file=sys.stderr)
    print(json.dumps(schema, indent=2))
    return 0


def _plugins(args: argparse.Namespace) -> int:
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
    return 1 if registry.problems else 0  # a plugin's CI can run it as a check


def _info(args: argparse.Namespace) -> int:
    from nascore.arch import resolve_arch
    from nascore.counts import DEFAULT_CLASSES, count_arch, run_spec_file
    from nascore.errors import NascoreError
    from nascore.progress import Reporter
    from nascore.registry import get_registry
    from nascore.spec import load_spec

    if args.num_classes is not None and args.num_classes < 2:
        raise NascoreError(f"--num-classes must be at least 2, not {args.num_classes}")
    if args.input_size is not None and args.input_size < 1:
        raise NascoreError(f"--input-size must be a positive number of pixels, not {args.input_size}")
    registry = get_registry()
    arch = resolve_arch(args.arch, registry)
    spec = spec_path = None
    if not (args.num_classes and args.input_size):  # unless the flags give everything the run's spec would
        spec_path = run_spec_file(args.arch)
    if spec_path is not None:
        try:
            spec = load_spec(spec_path, registry=registry)
        except NascoreError as exc:
            raise NascoreError(f"{args.arch} sits in a run directory, but its {spec_path} cannot be used to count the "
                               f"arch as that run trains it: {exc}\n(pass --num-classes and --input-size to count "
                               "it without the spec)") from None
    counts = count_arch(arch, args.arch, spec, args.input_size, args.num_classes, registry)
    if args.input_size:
        size_from = "--input-size"
    elif spec is not None:
        size_from = f"the dataset's image_size in {spec_path}"
    else:
        size_from = "the arch's space input_size; --input-size N to change"
    if args.num_classes is None and spec is not None:
        heads = (", ".join(name if k is None else f"{name} {k}" for name, k in counts.heads.items())
                 + f" (the tasks and dataset {spec.dataset.name} in {spec_path})")
    elif counts.branches:
        heads = f"none (a branched backbone for tasks {', '.join(counts.branches)}, counted without heads)"
    elif args.num_classes:
        heads = f"classification {args.num_classes} (--num-classes)"
    else:
        heads = f"classification {DEFAULT_CLASSES} (the default, as on ImageNet; --num-classes K to change)"
    Reporter().table(f"{arch.name or args.arch} ({arch.space})", counts.rows, ("decision", "choice"))
    size = counts.input_size
    print(f"input: {size}x{size} ({size_from})")
    print(f"classes: {heads}")
    print(f"params: {counts.params / 1e6:.3f} M")
    print(f"multiply-adds: {counts.macs / 1e6:.1f} M")
    print(f"feature levels (channels@/reduction): {', '.join(f'{c}@/{r}' for c, r in counts.levels)}")
    return 0


def _graph(args: argparse.Namespace) -> int:
    from nascore.errors import NascoreError
    from nascore.performance.graph import build_graph, histogram, resolve_model, save_graph

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
        save_graph(graph, args.out)
        print(f"written: {args.out}")
    return 0
