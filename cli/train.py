"""``nascore train``: train a found arch from scratch as a spec's ``train:`` block says."""
from __future__ import annotations

import argparse
from pathlib import Path

from .options import Commands, add_executor, add_overrides, executor
from .run import default_out, print_summary

# The library is imported inside the handler: main imports every command module, and `nascore --help` loads no
# torch.


def add(commands: Commands) -> None:
    t = commands.add_parser("train", help="train a found arch from scratch and report validation metrics")
    t.add_argument("arch", help="arch.json file or named arch")
    t.add_argument("--spec", required=True, help="spec giving dataset, tasks, device, seed and train: block")
    t.add_argument("--out", help="output directory (default runs/train-<arch>-<time>)")
    t.add_argument("--resume", action="store_true")
    add_overrides(t)
    add_executor(t, "the arch and its train.references")
    t.set_defaults(handler=_train)


def _train(args: argparse.Namespace) -> int:
    from nascore.arch import arch_space, resolve_arch
    from nascore.run import train_run
    from nascore.rundir import build_run
    from nascore.spec import load_spec

    spec = load_spec(args.spec, args.overrides)
    arch = resolve_arch(args.arch)
    out = Path(args.out) if args.out else default_out(f"train-{Path(args.arch).stem}")
    run = build_run(spec, out, args.resume, executor=executor(args, spec))
    space = arch_space(arch, args.arch, run.registry, input_size=run.parts.info.image_size)  # checked before writing
    names = [t.name for t in run.parts.tasks]
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
    print_summary(run, train_run(run, arch, space))
    return 0
