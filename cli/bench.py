"""``nascore bench collect`` and ``bench pseudo-label``: performance datasets, archs labelled on a spec's tasks."""
from __future__ import annotations

import argparse
from pathlib import Path

from .options import Commands, add_executor, add_overrides, executor

# The library is imported inside the handlers: main imports every command module, and `nascore --help` loads no
# torch.


def add(commands: Commands) -> None:
    bench = commands.add_parser("bench", help="performance datasets: archs trained on a spec's tasks, for predictors")
    bench.set_defaults(interrupted="run the same command again to resume the collection")
    actions = bench.add_subparsers(dest="bench_command", required=True)
    c = actions.add_parser("collect", help="draw archs of a spec's space (stratified over multiply-adds), train each "
                                           "on each task with the spec's train: block, record them in --out")
    c.add_argument("spec")
    c.add_argument("--archs", type=int, required=True, metavar="N", help="how many archs")
    c.add_argument("--out", required=True, help="dataset folder; an unfinished collection there is resumed")
    c.add_argument("--workers", type=int, default=1, help="processes training archs at once (default 1; "
                                                          "--executor local)")
    c.add_argument("--seed", type=int, help="seed of the draw (default: the spec's seed)")
    add_overrides(c)
    add_executor(c, "the archs")
    c.set_defaults(handler=_collect)

    pl = actions.add_parser("pseudo-label", help="AIO-P pseudo-labels of the archs bench collect draws: each arch is "
                                                 "a path of a single-path supernet fine-tuned briefly with one task "
                                                 "head shared by all (latent sampling), not trained from scratch")
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
    add_overrides(pl)
    pl.set_defaults(handler=_pseudo_label)


def _collect(args: argparse.Namespace) -> int:
    from nascore.errors import NascoreError
    from nascore.performance.collect import collect
    from nascore.spec import load_spec

    if args.archs < 1 or args.workers < 1:
        raise NascoreError("--archs and --workers must be at least 1")
    spec = load_spec(args.spec, args.overrides)
    result = collect(spec, Path(args.out), args.archs, spec.seed if args.seed is None else args.seed,
                     executor(args, spec, args.workers))
    rate = f", {result['archs_per_hour']:.0f} archs/hour" if result["archs_per_hour"] else ""
    print(f"collected {result['collected']} archs in {result['seconds']:.0f} s{rate}; "
          f"{args.archs} of {args.archs} in {args.out}")
    return 0


def _pseudo_label(args: argparse.Namespace) -> int:
    from nascore.errors import NascoreError
    from nascore.performance.pseudolabel import FLAGS, Options, pseudo_label
    from nascore.spec import load_spec

    if args.archs < 1:
        raise NascoreError(f"--archs must be at least 1, not {args.archs}")
    spec = load_spec(args.spec, args.overrides)
    options = Options(task=args.task, supernet_epochs=args.supernet_epochs, head_epochs=args.head_epochs,
                      finetune_steps=args.finetune_steps, bins=args.bins, per_bin=args.per_bin,
                      sampling=args.sampling)
    for key in ("supernet_epochs", "head_epochs"):  # 0 would read as "the default"
        if getattr(options, key) is not None and getattr(options, key) < 1:
            raise NascoreError(f"{FLAGS[key]} must be a whole number of at least 1, not {getattr(options, key)}")
    result = pseudo_label(spec, Path(args.out), args.archs, spec.seed if args.seed is None else args.seed, options,
                          supernet_from=Path(args.supernet) if args.supernet else None)
    s = result["seconds"]
    check = f" (its random paths score {result['supernet_check']:.3f} on {result['pretrain_task']})" \
        if result["supernet_check"] is not None else ""
    shared = f"supernet {s['supernet']:.0f} s{check}, shared head {s['head']:.0f} s" if s["head"] is not None else \
        "nothing trained"
    per_arch = f", fine-tune + evaluation {s['finetune_per_arch']:.1f} s per arch" \
        if s.get("finetune_per_arch") is not None else ""
    print(f"pseudo-labelled {result['labelled']} archs on {result['task']} ({result['sampling']} sampling): "
          f"{shared}{per_arch}; {result['done']} of {result['archs']} in {args.out}")
    return 0
